"""Run every benchmark (what ``make bench`` calls); results land in ``benchmarks/results/``.

The selector benchmarks run first, in this order: label efficiency on digits and MNIST-5k,
peers on digits, scale. Then every other ``benchmarks/*.py`` script (other areas' benchmarks)
is run without arguments. A failing script is reported and the rest still run; the exit status
is non-zero if any failed. ``--only NAME[,NAME]`` runs a subset (script names without ``.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OURS: list[tuple[str, list[str]]] = [
    ("label_efficiency", ["--dataset", "digits"]),
    ("label_efficiency", ["--dataset", "mnist5k"]),
    ("peers", ["--dataset", "digits"]),
    ("scale", []),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    only = {s for s in args.only.split(",") if s}
    ours = {name for name, _ in OURS}
    others = sorted(
        p.stem
        for p in HERE.glob("*.py")
        if not p.stem.startswith("_") and p.stem not in ours and p.stem != "run_all"
    )
    jobs = OURS + [(name, []) for name in others]
    failed = []
    for name, extra in jobs:
        if only and name not in only:
            continue
        cmd = [sys.executable, str(HERE / f"{name}.py"), *extra]
        print(f"== {' '.join([name, *extra])}", flush=True)
        t0 = time.time()
        code = subprocess.call(cmd, cwd=HERE.parent)
        print(f"== {name}: exit {code} after {time.time() - t0:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
