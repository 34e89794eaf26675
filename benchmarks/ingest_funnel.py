"""Benchmark of ``labelwheel ingest``'s funnel on a real set with injected faults.

Source: MNIST-5k (``labelwheel.datasets``) written as 56 px PNGs, plus injected
* exact duplicates (byte copies under another name),
* near duplicates: JPEG re-encodes (quality 50-90), resizes (×0.5-0.8 or ×1.5-2, PNG),
  and resize + JPEG re-encode,
* corrupt files: truncated PNGs, random bytes named .jpg, empty files.
File names are shuffled, so an injected copy may come before its original.

Measured: share of each injected kind caught (a copy counts as caught when exactly one member of
its group — the original and its copies — is kept), share of unique images wrongly dropped (an
image dropped as a duplicate of an image outside its own group, or a group with nothing kept;
target ≤ 1%), throughput (images/s through read + hash + decode + descriptor + embed + checks).

The funnel is run directly (no Label Studio: an empty project), with the ingest defaults
except the backbone input size (112 px, the benchmarks' MNIST setting, to finish in minutes on a
shared 2-core machine). Usage: ``python benchmarks/ingest_funnel.py [--n 5000] [--image-size 112]``.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, environment, log, write_json
from PIL import Image

from labelwheel.datasets import load_dataset
from labelwheel.features import Embedder
from labelwheel.ingest.funnel import run_funnel
from labelwheel.ingest.project import ProjectContext
from labelwheel.ingest.sources import FolderSource
from labelwheel.ingest.state import Ledger


def _png(img: np.ndarray, size: int = 56) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR).save(buf, "PNG")
    return buf.getvalue()


def _reencode(data: bytes, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _resize(data: bytes, factor: float, fmt: str = "PNG", quality: int = 85) -> bytes:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    im = im.resize(
        (max(8, round(im.width * factor)), max(8, round(im.height * factor))),
        Image.Resampling.BICUBIC,
    )
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def build_source(root: Path, n: int, seed: int) -> dict[str, dict[str, Any]]:
    """Write the source folder; returns file name → {kind, group}."""
    rng = np.random.default_rng(seed)
    ds = load_dataset("mnist5k")
    idx = np.arange(len(ds.images))[:n]
    originals = {int(i): _png(ds.images[i]) for i in idx}
    files: list[tuple[bytes, str, int, str]] = []  # data, kind, group, ext
    for i, data in originals.items():
        files.append((data, "unique", i, "png"))
    k = max(1, n // 20)  # 5% of n per injected kind
    for i in rng.choice(idx, k, replace=False):
        files.append((originals[int(i)], "exact", int(i), "png"))
    for i in rng.choice(idx, k, replace=False):
        files.append(
            (_reencode(originals[int(i)], int(rng.integers(50, 91))), "jpeg", int(i), "jpg")
        )
    for i in rng.choice(idx, k, replace=False):
        f = float(rng.uniform(0.5, 0.8) if rng.random() < 0.5 else rng.uniform(1.5, 2.0))
        files.append((_resize(originals[int(i)], f), "resized", int(i), "png"))
    for i in rng.choice(idx, k // 2, replace=False):
        f = float(rng.uniform(0.6, 0.9))
        q = int(rng.integers(60, 91))
        files.append((_resize(originals[int(i)], f, "JPEG", q), "resized_jpeg", int(i), "jpg"))
    for j, i in enumerate(rng.choice(idx, k, replace=False)):
        data = originals[int(i)]
        kind = j % 3
        if kind == 0:
            bad, ext = data[: max(16, int(len(data) * rng.uniform(0.3, 0.8)))], "png"
        elif kind == 1:
            bad, ext = rng.bytes(int(rng.integers(200, 3000))), "jpg"
        else:
            bad, ext = b"", "png"
        files.append((bad, "corrupt", -1 - j, ext))
    order = rng.permutation(len(files))
    truth: dict[str, dict[str, Any]] = {}
    for pos, f in enumerate(order):
        data, kind, group, ext = files[int(f)]
        name = f"img{pos:06d}.{ext}"
        (root / name).write_bytes(data)
        truth[name] = {"kind": kind, "group": group}
    return truth


def _rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def evaluate(truth: dict[str, dict[str, Any]], result: Any) -> dict[str, Any]:
    """Catch rates per injected kind and the wrongly dropped share of unique images."""
    dropped = {o.key: o for o in result.dropped}
    kept_groups: dict[int, int] = {}
    for c in result.candidates:
        g = truth[c.item.key]["group"]
        kept_groups[g] = kept_groups.get(g, 0) + 1
    kinds = sorted({t["kind"] for t in truth.values()})
    out: dict[str, Any] = {"files": len(truth), "per_kind": {}}
    wrong_unique = 0
    for kind in kinds:
        names = [k for k, t in truth.items() if t["kind"] == kind]
        caught = 0
        for name in names:
            g = truth[name]["group"]
            o = dropped.get(name)
            if kind == "corrupt":
                caught += o is not None and o.reason in ("corrupt", "unreadable")
                continue
            owner_group = None
            if (
                o is not None
                and o.duplicate_of is not None
                and not o.duplicate_of.startswith("task ")
            ):
                owner_group = truth[o.duplicate_of]["group"]
            right_drop = o is not None and owner_group == g
            kept_once = kept_groups.get(g, 0) == 1
            if kind == "unique":
                if (o is not None and owner_group != g) or kept_groups.get(g, 0) == 0:
                    wrong_unique += 1
            else:
                # caught: this copy is not kept twice: dropped as a duplicate of its own group,
                # or kept while its original was dropped as a duplicate of it
                caught += right_drop or (o is None and kept_once)
        if kind != "unique":
            out["per_kind"][kind] = {
                "injected": len(names),
                "caught": int(caught),
                "share_caught": round(caught / len(names), 4) if names else None,
            }
    n_unique = sum(1 for t in truth.values() if t["kind"] == "unique")
    out["unique"] = n_unique
    out["unique_wrongly_dropped"] = wrong_unique
    out["share_unique_wrongly_dropped"] = round(wrong_unique / n_unique, 5)
    out["reasons"] = {
        r: sum(1 for o in result.dropped if o.reason == r)
        for r in ("unreadable", "corrupt", "exact_duplicate", "near_duplicate")
    }
    out["kept"] = len(result.candidates)
    out["skipped"] = len(result.skipped)  # decided by an earlier run: none in a fresh ledger
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--near-threshold", type=float, default=0.995)
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest_funnel.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lw-ingest-bench-") as tmp:
        root = Path(tmp) / "source"
        root.mkdir()
        log(f"writing MNIST-{args.n} + injected faults to {root}")
        truth = build_source(root, args.n, args.seed)
        embedder = Embedder("efficientnet-lite0", args.image_size, 32, cache_root=None)
        embedder.backbone()  # load outside the timed pass
        ledger = Ledger(Path(tmp) / "ledger.sqlite3", 1)
        ctx = ProjectContext(project_id=1, title="benchmark", data_key="image", labels=())
        log(f"funnel over {len(truth)} files (image size {args.image_size})")
        load_before = os.getloadavg()
        rss_before = _rss_mib()
        t0 = time.perf_counter()
        result = run_funnel(
            FolderSource(root),
            ctx,
            embedder,
            ledger,
            near_threshold=args.near_threshold,
            threads=args.threads,
        )
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
        ledger.close()
        embedder.close()
    metrics = evaluate(truth, result)
    data = {
        "benchmark": "ingest_funnel",
        "dataset": f"mnist5k (first {args.n}) as 56 px PNGs",
        "backbone": "efficientnet-lite0",
        "image_size": args.image_size,
        "near_threshold": args.near_threshold,
        "threads": args.threads,
        "seed": args.seed,
        **metrics,
        "seconds": round(wall, 2),
        "images_per_second": round(result.read / wall, 2),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "rss_mib_before_after": [rss_before, _rss_mib()],  # peak RSS: torch + the whole run
        "note": "timed on a shared 2-core machine while other helpers ran tests and benchmarks "
        "(see load averages): throughput is a lower bound",
        "environment": environment(),
    }
    write_json(args.out, data)
    caught = ", ".join(f"{k}: {v['share_caught']:.1%}" for k, v in metrics["per_kind"].items())
    log(
        f"caught: {caught}; unique wrongly dropped "
        f"{metrics['share_unique_wrongly_dropped']:.2%}; "
        f"{data['images_per_second']} images/s; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
