"""The honest measure: each version's real accuracy from its random control slice.

The backend serves a small random control slice of the queue (:mod:`labelwheel.pool.control`,
``LABELWHEEL_CONTROL_FRACTION``). An annotation made on a version's pre-label of a control task
is a draw from the whole pool: the share of them that approved the pre-label unchanged is an
unbiased estimate of the version's **real accuracy**. The same share on the selected (non-control)
tasks is the **accuracy on selected tasks**, biased low by design (the selector serves the tasks
the model finds hard). Their difference, the **lift**, says how much harder the selected tasks are
than random ones: how far the accuracy measured on what annotators labelled understates the real
one.

Intervals: Wilson score 95% for each accuracy; Newcombe's hybrid score interval (method 10) for
the difference. Pure functions on counts; :func:`labelwheel.records.read_control_feedback` reads
the counts from the backend's record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "ALL_VERSIONS",
    "Z95",
    "HonestEstimate",
    "estimate_versions",
    "honest_estimate",
    "lift_interval",
    "pooled_estimate",
    "wilson",
]

Z95 = 1.959963984540054

ALL_VERSIONS = "all versions"
"""The name of :func:`pooled_estimate`'s row."""


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``k / n`` (None when ``n`` is 0)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def lift_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float] | None:
    """Newcombe's hybrid score interval of ``k1/n1 - k2/n2`` (None when either n is 0)."""
    a, b = wilson(k1, n1, z), wilson(k2, n2, z)
    if a is None or b is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    lo = d - math.sqrt((p1 - a[0]) ** 2 + (b[1] - p2) ** 2)
    hi = d + math.sqrt((a[1] - p1) ** 2 + (p2 - b[0]) ** 2)
    return max(-1.0, lo), min(1.0, hi)


@dataclass(frozen=True)
class HonestEstimate:
    """One version's real accuracy (control slice) next to its accuracy on selected tasks."""

    version: str
    control_n: int
    control_correct: int
    real_accuracy: float | None
    real_interval: tuple[float, float] | None
    selected_n: int
    selected_correct: int
    selected_accuracy: float | None
    selected_interval: tuple[float, float] | None
    lift: float | None
    """``real_accuracy - selected_accuracy``: how much harder the selected tasks are."""
    lift_interval: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (intervals as two-item lists)."""
        out = asdict(self)
        for key in ("real_interval", "selected_interval", "lift_interval"):
            out[key] = list(out[key]) if out[key] is not None else None
        return out


def honest_estimate(
    version: str, control: tuple[int, int], selected: tuple[int, int], z: float = Z95
) -> HonestEstimate:
    """The estimate from ``(approvals, corrections)`` on control and on selected tasks."""
    ck, cw = (int(x) for x in control)
    sk, sw = (int(x) for x in selected)
    if min(ck, cw, sk, sw) < 0:
        raise ValueError("counts must be non-negative")
    cn, sn = ck + cw, sk + sw
    real = ck / cn if cn else None
    sel = sk / sn if sn else None
    return HonestEstimate(
        version=version,
        control_n=cn,
        control_correct=ck,
        real_accuracy=real,
        real_interval=wilson(ck, cn, z),
        selected_n=sn,
        selected_correct=sk,
        selected_accuracy=sel,
        selected_interval=wilson(sk, sn, z),
        lift=None if real is None or sel is None else real - sel,
        lift_interval=lift_interval(ck, cn, sk, sn, z),
    )


def estimate_versions(
    counts: Mapping[str, Mapping[str, Mapping[str, int]]],
) -> list[HonestEstimate]:
    """Estimates for every version in ``counts``: version -> ``{"control": {"approval": n,
    "correction": n}, "selected": {...}}`` (as :func:`labelwheel.records.read_control_feedback`
    returns for one project), in version order (v1, v2, ... v10)."""

    def pair(c: Mapping[str, int] | None) -> tuple[int, int]:
        c = c or {}
        return int(c.get("approval", 0)), int(c.get("correction", 0))

    def order(name: str) -> tuple[int, int, str]:
        tail = name[1:] if name.startswith("v") else ""
        return (0, int(tail), name) if tail.isdigit() else (1, 0, name)

    return [
        honest_estimate(v, pair(counts[v].get("control")), pair(counts[v].get("selected")))
        for v in sorted(counts, key=order)
    ]


def pooled_estimate(rows: list[HonestEstimate], name: str = ALL_VERSIONS) -> HonestEstimate:
    """All versions' counts together: the real accuracy of the pre-labels served over the whole
    period (a version serves for one batch, so one version's control slice is a handful of
    labels; the pooled row is the one with a usable interval, at the price of mixing versions:
    it estimates their average, below the newest version's accuracy while the model improves)."""
    ck = sum(r.control_correct for r in rows)
    cn = sum(r.control_n for r in rows)
    sk = sum(r.selected_correct for r in rows)
    sn = sum(r.selected_n for r in rows)
    return honest_estimate(name, (ck, cn - ck), (sk, sn - sk))
