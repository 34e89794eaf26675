"""The markdown of ``control_slice.py``'s results (its summary tables, from the JSON)."""

from __future__ import annotations

import math
from typing import Any

from labelwheel.semisup import DEFAULT_SEMI


def _pts(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.1f} pts" if sign else f"{100 * x:.1f} pts"


def _row(label: str, e: dict[str, Any]) -> str:
    cov = "–" if e["coverage"] is None else f"{100 * e['coverage']:.0f} %"
    lam = "–" if e.get("mean_lambda") is None else f"{e['mean_lambda']:.2f}"
    return (
        f"| {label} | {e['mean_n']:.0f} | {e['within_3_points']} of {e['seeds']} | "
        f"{_pts(e['mean_error'], True)} | {_pts(e['mean_abs_error'])} | {cov} | "
        f"{_pts(e['mean_width'])} | {lam} |"
    )


HEADER = [
    "| fraction | estimator | labels (mean) | within ±3 pts | mean error | mean abs error | "
    "95 % interval covers truth | mean interval width | mean λ |",
    "|---|---|---|---|---|---|---|---|---|",
]


def markdown(data: dict[str, Any]) -> str:
    """The summary tables."""
    s = data["summary"]
    p = data["params"]
    lines = [
        "# Control slice: the real accuracy estimated from a random slice of the queue",
        "",
        f"{p['dataset']} (raw pixels), {max(r['seeds'] for r in s.values())} seeds (a new "
        "75/25 pool/test split each), "
        f"batch {p['batch']}, budget {p['budget']} labels, the product's head (semi-supervised "
        f"over the pool, `{DEFAULT_SEMI}`), selector `{p['strategy']}` through `queue_order`, "
        "the control slice through `interleave_control` (as the backend does); the annotators "
        "give the true labels. Truth: held-out test accuracy. Target: within ±3 points in 9 of "
        "10 seeds.",
        "",
        "## Plain proportion vs prediction-powered (PPI++)",
        "",
        "*plain*: approvals / control labels, Wilson 95 % interval. *PPI*: "
        "`labelwheel.lead.honest.ppi_accuracy`: λ·(the serving version's mean calibrated "
        "confidence over its unlabelled pool) + mean over control labels of (y − λ·c), λ "
        "power-tuned on the control labels (clipped to [0, 1]), normal 95 % interval; fewer "
        "than 10 control labels: the plain proportion. *data-wide*: "
        "`labelwheel.lead.honest.data_wide_accuracy`: the control estimate (plain or PPI) "
        "weighted by the serving version's unlabelled share U/(U+L), its cross-validated "
        "accuracy (the semi-supervised head in every fold, as the backend records it) by the "
        "labelled share L/(U+L): the accuracy on the data, not on the pool the selector left.",
        "",
        *HEADER,
    ]
    for f, row in s.items():
        for name, label in (
            ("pooled", "plain, all versions"),
            ("pooled_ppi", "**PPI**, all versions"),
            ("pooled_wide", "data-wide plain, all versions"),
            ("pooled_wide_ppi", "**data-wide PPI**, all versions"),
            ("recent", "plain, 2nd half"),
            ("recent_ppi", "**PPI**, 2nd half"),
        ):
            if name in row:
                lines.append(_row(f"{f} | {label}", row[name]))
    lines += [
        "",
        "## The final version alone, on n random unlabelled tasks (one version, as `/versions` "
        "shows it)",
        "",
        "The final version (all budget labels) scored on n tasks drawn at random from the "
        "unlabelled pool left at the budget (what a control slice of n labels of one version "
        "would see), against its held-out accuracy; PPI with the version's confidence over that "
        "pool; data-wide with its cross-validated accuracy on its labels.",
        "",
        *HEADER,
    ]
    for f, row in s.items():
        for n in row.get("large_slice", {}):
            for key, label in (
                ("large_slice", "plain"),
                ("large_slice_ppi", "**PPI**"),
                ("large_slice_wide", "data-wide plain"),
                ("large_slice_wide_ppi", "**data-wide PPI**"),
            ):
                e = row.get(key, {}).get(n)
                if e is not None:
                    lines.append(_row(f"{f} | {label}, n = {n}", e))
    lines += [
        "",
        "## Other estimators (plain)",
        "",
        *HEADER,
    ]
    for f, row in s.items():
        for name in ("holdout", "selected"):
            lines.append(_row(f"{f} | {name}", row[name]))
    lines += [
        "",
        "Estimators: *all versions* = control labels over all versions vs the mean held-out "
        "accuracy of the versions that served them (what the backend records); *2nd half* = "
        "the same over the second half of the budget; *holdout* = a model trained on all labels "
        "but the control ones, scored on the control labels, vs its held-out accuracy; "
        "*selected* = approvals on the selector's tasks (the biased number).",
        "",
        "## How many control labels ±3 points needs (plain proportion)",
        "",
        "From the binomial variance at the final accuracy (normal approximation, two-sided 90%: "
        "n ≥ (1.645 / 0.03)² · p(1 − p)); *sd at this budget* is √(p(1 − p)/n) at the mean "
        "number of control labels the run collected.",
        "",
        "| fraction | final accuracy (mean) | control labels at budget | sd at this budget | "
        "control labels for ±3 pts in 9/10 | labels in all at this fraction |",
        "|---|---|---|---|---|---|",
    ]
    for f, row in s.items():
        acc, n = row["final_accuracy"], row["pooled"]["mean_n"]
        sd = math.sqrt(acc * (1 - acc) / n) if n else float("nan")
        lines.append(
            f"| {f} | {acc:.3f} | {n:.0f} | {100 * sd:.1f} pts | {row['needed_control_labels']} | "
            f"{row['needed_labels_at_fraction']} |"
        )
    lines += ["", f"Run time: {data['seconds']:.0f} s. Raw numbers: `control_slice.json`.", ""]
    return "\n".join(lines)
