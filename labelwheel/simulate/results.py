"""Results of a simulation: learning curves, labels to a target, summary, files, plot."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

TARGET_FRACTION = 0.95
"""Summary target: this fraction of the full-data accuracy."""


def labels_to_reach(curve: tuple[ArrayLike, ArrayLike], target: float) -> float | None:
    """Labels at which a learning curve first reaches ``target`` accuracy, or ``None``.

    ``curve`` is ``(labels, accuracy)``: two equally long sequences, labels increasing. The
    answer is the first ``labels[i]`` with ``accuracy[i] >= target`` (no interpolation: it is a
    number of labels that was actually tried).
    """
    labels, accuracy = (np.asarray(c, dtype=np.float64) for c in curve)
    if labels.ndim != 1 or labels.shape != accuracy.shape:
        raise ValueError(
            "curve must be (labels, accuracy), two 1-D sequences of the same length; "
            f"got shapes {labels.shape} and {accuracy.shape}"
        )
    if len(labels) > 1 and np.any(np.diff(labels) <= 0):
        raise ValueError("curve labels must be strictly increasing")
    hits = np.flatnonzero(accuracy >= target)
    if len(hits) == 0:
        return None
    value = labels[hits[0]]
    return int(value) if float(value).is_integer() else float(value)


@dataclass
class SimulationResults:
    """Learning curves of several strategies over several seeds.

    ``accuracy[strategy]`` is ``(n_seeds, n_points)``: test accuracy after ``labels[j]`` labels.
    ``select_seconds[strategy]`` is the time spent choosing samples, per seed.
    """

    labels: np.ndarray
    seeds: list[int]
    accuracy: dict[str, np.ndarray]
    select_seconds: dict[str, list[float]]
    full_accuracy: float
    batch_size: int
    budget: int
    n_pool: int
    n_test: int
    n_classes: int
    meta: dict[str, Any] = field(default_factory=dict)
    picks: dict[str, list[list[int]]] = field(default_factory=dict, repr=False)
    """Per strategy and seed, the pool indices labelled, in order (not saved to JSON)."""

    @property
    def strategies(self) -> list[str]:
        """Strategy names in the order they were run."""
        return list(self.accuracy)

    def target(self, fraction: float = TARGET_FRACTION) -> float:
        """``fraction`` × the full-data accuracy."""
        return fraction * self.full_accuracy

    def labels_needed(self, strategy: str, fraction: float = TARGET_FRACTION) -> list[float | None]:
        """Per seed, labels needed to reach ``fraction`` of full accuracy (``None``: never)."""
        goal = self.target(fraction)
        return [labels_to_reach((self.labels, row), goal) for row in self.accuracy[strategy]]

    def summary(self, fraction: float = TARGET_FRACTION, baseline: str = "random") -> list[dict]:
        """One row per strategy: labels to reach the target (mean, std over seeds), ratio, AUC."""
        rows = []
        base_mean: float | None = None
        if baseline in self.accuracy:
            base = [v for v in self.labels_needed(baseline, fraction) if v is not None]
            base_mean = float(np.mean(base)) if len(base) == len(self.seeds) else None
        for name, acc in self.accuracy.items():
            needed = self.labels_needed(name, fraction)
            reached = [v for v in needed if v is not None]
            mean = float(np.mean(reached)) if reached else None
            all_reached = len(reached) == len(needed)
            rows.append(
                {
                    "strategy": name,
                    "labels_mean": mean,
                    "labels_std": float(np.std(reached)) if reached else None,
                    "seeds_reached": len(reached),
                    "seeds": len(needed),
                    "ratio_to_random": (
                        mean / base_mean
                        if mean is not None and base_mean is not None and all_reached
                        else None
                    ),
                    "mean_accuracy": float(acc.mean()),
                    "final_accuracy": float(acc[:, -1].mean()),
                    "select_seconds_per_seed": float(np.mean(self.select_seconds[name])),
                }
            )
        return rows

    def format_summary(self, fraction: float = TARGET_FRACTION) -> str:
        """The summary as a plain-text table."""
        width = max(18, 2 + max(len(name) for name in self.accuracy))
        lines = [
            f"full-data accuracy {self.full_accuracy:.4f}; target {fraction:.0%} of it = "
            f"{self.target(fraction):.4f}; pool {self.n_pool}, test {self.n_test}, "
            f"{len(self.seeds)} seeds, batch {self.batch_size}, budget {self.budget}",
            f"{'strategy':<{width}}{'labels to target':>22}{'reached':>9}{'vs random':>11}"
            f"{'mean acc':>10}{'select s':>10}",
        ]
        for row in self.summary(fraction):
            if row["labels_mean"] is None:
                needed = f"> {self.budget}"
            else:
                needed = f"{row['labels_mean']:.1f} ± {row['labels_std']:.1f}"
                if row["seeds_reached"] < row["seeds"]:
                    needed += "*"
            ratio = "-" if row["ratio_to_random"] is None else f"{row['ratio_to_random']:.2f}×"
            lines.append(
                f"{row['strategy']:<{width}}{needed:>22}{row['seeds_reached']:>5}/{row['seeds']:<3}"
                f"{ratio:>11}{row['mean_accuracy']:>10.4f}{row['select_seconds_per_seed']:>10.2f}"
            )
        if any(
            r["labels_mean"] is not None and r["seeds_reached"] < r["seeds"]
            for r in self.summary(fraction)
        ):
            lines.append("* mean over the seeds that reached the target within the budget")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (curves, timings, summary, metadata)."""
        return {
            "labels": [int(v) for v in self.labels],
            "seeds": list(self.seeds),
            "accuracy": {k: v.round(6).tolist() for k, v in self.accuracy.items()},
            "select_seconds": self.select_seconds,
            "full_accuracy": self.full_accuracy,
            "target_fraction": TARGET_FRACTION,
            "batch_size": self.batch_size,
            "budget": self.budget,
            "n_pool": self.n_pool,
            "n_test": self.n_test,
            "n_classes": self.n_classes,
            "meta": self.meta,
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimulationResults:
        """Inverse of :meth:`to_dict`."""
        return cls(
            labels=np.asarray(data["labels"], dtype=np.int64),
            seeds=list(data["seeds"]),
            accuracy={k: np.asarray(v, dtype=np.float64) for k, v in data["accuracy"].items()},
            select_seconds={k: list(v) for k, v in data["select_seconds"].items()},
            full_accuracy=float(data["full_accuracy"]),
            batch_size=int(data["batch_size"]),
            budget=int(data["budget"]),
            n_pool=int(data["n_pool"]),
            n_test=int(data["n_test"]),
            n_classes=int(data["n_classes"]),
            meta=dict(data.get("meta", {})),
        )

    def save(
        self, out_dir: Path | str, stem: str = "curves", title: str | None = None
    ) -> list[Path]:
        """Write ``<stem>.json``, ``<stem>.csv`` (long format) and ``<stem>.png``; return paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / f"{stem}.json"
        json_path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        csv_path = out / f"{stem}.csv"
        with csv_path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["strategy", "seed", "labels", "accuracy"])
            for name, acc in self.accuracy.items():
                for seed, row in zip(self.seeds, acc, strict=True):
                    for n_labels, value in zip(self.labels, row, strict=True):
                        writer.writerow([name, seed, int(n_labels), f"{value:.6f}"])
        png_path = out / f"{stem}.png"
        plot_curves(self, png_path, title=title)
        return [json_path, csv_path, png_path]


def plot_curves(results: SimulationResults, path: Path | str, title: str | None = None) -> None:
    """Plot mean test accuracy per strategy with a ±1 std band over seeds, and the target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name, acc in results.accuracy.items():
        mean, std = acc.mean(axis=0), acc.std(axis=0)
        style = "--" if name == "random" else "-"
        (line,) = ax.plot(results.labels, mean, style, label=name, linewidth=1.6)
        ax.fill_between(results.labels, mean - std, mean + std, alpha=0.15, color=line.get_color())
    ax.axhline(results.full_accuracy, color="black", linewidth=0.8, label="full data")
    ax.axhline(
        results.target(), color="grey", linewidth=0.8, linestyle=":", label=f"{TARGET_FRACTION:.0%}"
    )
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or f"{len(results.seeds)} seeds, batch {results.batch_size} (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
