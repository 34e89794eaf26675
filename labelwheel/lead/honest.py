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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from labelwheel.records import ControlConfidence, ControlLabel, LabelledPart, PoolConfidence

__all__ = [
    "ALL_VERSIONS",
    "PPI_MIN_LABELS",
    "Z95",
    "ControlConfidence",
    "ControlLabel",
    "DataWideEstimate",
    "HonestEstimate",
    "LabelledPart",
    "PPIEstimate",
    "PoolConfidence",
    "data_wide_accuracy",
    "estimate_versions",
    "honest_estimate",
    "lift_interval",
    "pooled_estimate",
    "ppi_accuracy",
    "wilson",
    "with_ppi",
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
    ppi: PPIEstimate | None = None
    """The real accuracy by prediction-powered inference (:func:`ppi_accuracy`) from the same
    control labels and the version's confidence over its pool; None when not computed."""
    data_wide: DataWideEstimate | None = None
    """The real accuracy on the whole data (:func:`data_wide_accuracy`): the control estimate
    on the unlabelled share, cross-validation on the labelled share; None when not computed."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (intervals as two-item lists)."""
        out = asdict(self)
        for key in ("real_interval", "selected_interval", "lift_interval"):
            out[key] = list(out[key]) if out[key] is not None else None
        out["ppi"] = self.ppi.to_dict() if self.ppi is not None else None
        out["data_wide"] = self.data_wide.to_dict() if self.data_wide is not None else None
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
    confidence: ControlConfidence | None = None,
) -> list[HonestEstimate]:
    """Estimates for every version in ``counts``: version -> ``{"control": {"approval": n,
    "correction": n}, "selected": {...}}`` (as :func:`labelwheel.records.read_control_feedback`
    returns for one project), in version order (v1, v2, ... v10). With ``confidence``
    (:func:`labelwheel.records.read_control_confidence`), each also carries its PPI estimate."""

    def pair(c: Mapping[str, int] | None) -> tuple[int, int]:
        c = c or {}
        return int(c.get("approval", 0)), int(c.get("correction", 0))

    def order(name: str) -> tuple[int, int, str]:
        tail = name[1:] if name.startswith("v") else ""
        return (0, int(tail), name) if tail.isdigit() else (1, 0, name)

    rows = [
        honest_estimate(v, pair(counts[v].get("control")), pair(counts[v].get("selected")))
        for v in sorted(counts, key=order)
    ]
    if confidence is None:
        return rows
    return [with_ppi(r, confidence) for r in rows]


def with_ppi(row: HonestEstimate, confidence: ControlConfidence) -> HonestEstimate:
    """``row`` with its version's model-assisted estimates from ``confidence``
    (:func:`labelwheel.records.read_control_confidence`): PPI (:func:`ppi_accuracy`) and the
    data-wide one (:func:`data_wide_accuracy`)."""
    return _with_estimates(row, _labels_of(confidence, {row.version}), confidence)


def _with_estimates(
    row: HonestEstimate, labels: list[ControlLabel], confidence: ControlConfidence
) -> HonestEstimate:
    return replace(
        row,
        ppi=ppi_accuracy(labels, confidence.pools),
        data_wide=data_wide_accuracy(labels, confidence.pools, confidence.labelled),
    )


def _labels_of(confidence: ControlConfidence, versions: set[str]) -> list[ControlLabel]:
    return [lab for lab in confidence.labels if lab.version in versions]


def pooled_estimate(
    rows: list[HonestEstimate],
    name: str = ALL_VERSIONS,
    confidence: ControlConfidence | None = None,
) -> HonestEstimate:
    """All versions' counts together: the real accuracy of the pre-labels served over the whole
    period (a version serves for one batch, so one version's control slice is a handful of
    labels; the pooled row is the one with a usable interval, at the price of mixing versions:
    it estimates their average, below the newest version's accuracy while the model improves).
    With ``confidence``, the PPI and data-wide estimates of the same average (each label's
    confidence against its own version's pool, its weight from its own version's shares)."""
    ck = sum(r.control_correct for r in rows)
    cn = sum(r.control_n for r in rows)
    sk = sum(r.selected_correct for r in rows)
    sn = sum(r.selected_n for r in rows)
    out = honest_estimate(name, (ck, cn - ck), (sk, sn - sk))
    if confidence is None:
        return out
    return _with_estimates(out, _labels_of(confidence, {r.version for r in rows}), confidence)


# --------------------------------------------------------------------------------------------
# prediction-powered inference: the model's own confidence over the whole pool, corrected by
# the control labels


PPI_MIN_LABELS = 10
"""Below this many control labels with a recorded confidence, :func:`ppi_accuracy` falls back
to the plain proportion (λ = 0, Wilson interval): λ estimated from a handful of labels is noise."""


@dataclass(frozen=True)
class PPIEstimate:
    """The real accuracy by prediction-powered inference (PPI++), or the plain proportion when it
    cannot be used (``method == "plain"``)."""

    method: str
    """``"ppi"``, or ``"plain"`` (too few labels with a confidence, or λ = 0)."""
    estimate: float | None
    interval: tuple[float, float] | None
    lam: float
    """The weight of the model's confidence (0: the plain proportion)."""
    n: int
    """Control labels."""
    n_confidence: int
    """Control labels with a recorded confidence and pool statistics."""
    pool_n: int
    """Unlabelled pool tasks whose confidence the estimate averages (all versions involved)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the interval as a two-item list)."""
        out = asdict(self)
        out["interval"] = list(self.interval) if self.interval is not None else None
        return out


@dataclass(frozen=True)
class _Powered:
    """The control labels prepared for a prediction-powered estimate."""

    y: np.ndarray
    """1 for an approval, 0 for a correction."""
    centred: np.ndarray
    """``c − m_v`` for a label with a usable confidence, else 0."""
    lam: float
    """Power-tuned λ (0: the plain proportion)."""
    counts: dict[str, int]
    """Labels with a usable confidence per version."""

    @property
    def n_conf(self) -> int:
        """Labels with a usable confidence."""
        return sum(self.counts.values())

    def pool_variance(
        self, pools: Mapping[str, PoolConfidence], weights: Mapping[str, float]
    ) -> float:
        """``Σ_v (n_v/n)² w_v² var_v / N_v``: the variance the pool means add (weights ``w_v``)."""
        n = len(self.y)
        return sum(
            (m / n) ** 2 * weights.get(v, 1.0) ** 2 * max(pools[v].var, 0.0) / max(pools[v].n, 1)
            for v, m in self.counts.items()
        )


def _powered(
    labels: Sequence[ControlLabel], pools: Mapping[str, PoolConfidence], min_labels: int
) -> _Powered:
    n = len(labels)
    y = np.fromiter((1.0 if lab.correct else 0.0 for lab in labels), dtype=np.float64, count=n)
    usable = np.array(
        [lab.confidence is not None and lab.version in pools for lab in labels], dtype=bool
    )
    centred = np.zeros(n)
    counts: dict[str, int] = {}
    for i, lab in enumerate(labels):
        if usable[i]:
            c = float(lab.confidence)  # type: ignore[arg-type]
            if not 0.0 <= c <= 1.0:
                raise ValueError(f"a confidence must be in [0, 1], got {c!r}")
            centred[i] = c - pools[lab.version].mean
            counts[lab.version] = counts.get(lab.version, 0) + 1
    out = _Powered(y, centred, 0.0, counts)
    n_conf = out.n_conf
    if n_conf < min_labels or n_conf < 2:
        return out
    v_pool = out.pool_variance(pools, {})
    cu, yu = centred[usable], y[usable]
    var_c = float(np.var(cu, ddof=1))
    cov = float(np.cov(yu, cu, ddof=1)[0, 1])
    denom = var_c + n_conf * v_pool
    lam = min(1.0, max(0.0, cov / denom)) if denom > 0 else 0.0
    return replace(out, lam=lam)


def ppi_accuracy(
    labels: Sequence[ControlLabel],
    pools: Mapping[str, PoolConfidence],
    z: float = Z95,
    min_labels: int = PPI_MIN_LABELS,
) -> PPIEstimate:
    """Real accuracy from control labels ``y`` and the model's calibrated confidence ``c``.

    PPI++ (Angelopoulos et al., 2023) for a mean: with ``m_v`` the mean confidence of version
    ``v`` over its unlabelled pool (``pools[v]``), ``θ̂ = mean_i (y_i − λ·(c_i − m_{v_i}))``, i.e.
    ``λ·mean(m) + mean(y − λ·c)``: the model's own estimate over the whole pool, its bias
    corrected on the control labels. Unbiased for any ``λ`` (the control tasks are a uniform draw
    of the pool), whatever the calibration; a good calibration only narrows the interval. ``λ``
    is power-tuned on the labels, ``λ = cov(y, c̃) / (var(c̃) + n·V)`` with ``c̃ = c − m_v`` and
    ``V = Σ_v (n_v/n)² var_v / N_v`` the variance of the pool means (one version:
    ``cov / ((1 + n/N)·var)``), clipped to ``[0, 1]``. Variance ``var(y − λc̃)/n + λ²·V``;
    normal interval, clipped to ``[0, 1]``. Labels without a confidence (or whose version has no
    pool statistics) count with ``λ = 0``. With fewer than ``min_labels`` usable labels, or
    ``λ = 0``, it is the plain proportion with its Wilson interval.
    """
    n = len(labels)
    k = sum(1 for lab in labels if lab.correct)
    pw = _powered(labels, pools, min_labels)
    pool_n = sum(int(pools[v].n) for v in pw.counts)
    if pw.lam == 0.0:
        return PPIEstimate(
            "plain", k / n if n else None, wilson(k, n, z), 0.0, n, pw.n_conf, pool_n
        )
    zs = pw.y - pw.lam * pw.centred
    theta = float(zs.mean())
    se = math.sqrt(float(np.var(zs, ddof=1)) / n + pw.lam**2 * pw.pool_variance(pools, {}))
    lo, hi = max(0.0, theta - z * se), min(1.0, theta + z * se)
    return PPIEstimate("ppi", min(1.0, max(0.0, theta)), (lo, hi), pw.lam, n, pw.n_conf, pool_n)


# --------------------------------------------------------------------------------------------
# data-wide: the control slice measures the unlabelled pool left, which the selector has made
# easier than the data (it took the hard tasks out); the labelled share enters with its
# cross-validated accuracy


@dataclass(frozen=True)
class DataWideEstimate:
    """The real accuracy on the whole data: the control estimate on the unlabelled share,
    cross-validation on the labelled share, weighted by their sizes."""

    method: str
    """How the unlabelled share was estimated: ``"ppi"`` or ``"plain"`` (:class:`PPIEstimate`)."""
    estimate: float | None
    interval: tuple[float, float] | None
    lam: float
    """The weight of the model's confidence on the pool's share (0: the plain proportion)."""
    unlabelled_share: float | None
    """Mean over the labels of ``U_v / (U_v + L_v)``, the weight of the control estimate."""
    labelled_accuracy: float | None
    """The labelled share's cross-validated accuracy (weighted as it enters the estimate)."""
    pool_estimate: float | None
    """The control estimate of the unlabelled pool alone (what the plain or PPI row says)."""
    n: int
    """Control labels."""
    n_pool_only: int
    """Control labels whose version has no CV accuracy (e.g. a class with one label) or no
    pool statistics: they count for the pool alone (``w = 1``), as the plain estimate does."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the interval as a two-item list)."""
        out = asdict(self)
        out["interval"] = list(self.interval) if self.interval is not None else None
        return out


def data_wide_accuracy(
    labels: Sequence[ControlLabel],
    pools: Mapping[str, PoolConfidence],
    labelled: Mapping[str, LabelledPart],
    z: float = Z95,
    min_labels: int = PPI_MIN_LABELS,
) -> DataWideEstimate:
    """The real accuracy on the data, not only on the unlabelled pool the control slice samples.

    The control tasks are a uniform draw of version ``v``'s unlabelled pool (``U_v`` tasks,
    ``pools[v].n``), which the selector has emptied of its hardest tasks: its accuracy there is
    above its accuracy on new data (3-4 points at 400 labels on MNIST-5k,
    ``benchmarks/results/control_slice.md``). A new task is like one of the pool's
    ``U_v + L_v`` tasks; on the ``L_v`` labelled ones (``labelled[v].n``) a version's accuracy,
    without training on the task itself, is what cross-validation measures
    (``labelled[v].accuracy``). So each label counts as
    ``z_i = w_v·(y_i − λ·(c_i − m_v)) + (1 − w_v)·a_v`` with ``w_v = U_v / (U_v + L_v)``: the
    PPI estimate of :func:`ppi_accuracy` (``λ`` tuned the same way; 0 gives the plain
    proportion) on the pool's share, CV on the labelled share; ``θ̂ = mean(z)``. The interval
    is normal, ``var(z)/n + λ²·Σ_v (n_v/n)² w_v² var_v/N_v``; with ``λ = 0`` it is the Wilson
    interval of the approvals mapped through the same weights. Cross-validation is taken as
    exact (it covers every labelled row; the interval is that of the control labels). A label
    whose version has no CV accuracy or no pool statistics counts for the pool alone
    (``w_v = 1``, ``n_pool_only``): early versions, whose labelled share is small. No labels:
    no estimate.
    """
    n = len(labels)
    if not labels:
        return DataWideEstimate("plain", None, None, 0.0, None, None, None, 0, 0)
    weight: dict[str, float] = {}
    accuracy: dict[str, float] = {}
    missing: set[str] = set()
    for version in {lab.version for lab in labels}:
        part = labelled.get(version)
        if part is None or part.accuracy is None or version not in pools:
            weight[version], accuracy[version] = 1.0, 0.0
            missing.add(version)
            continue
        u = pools[version].n
        weight[version] = u / (u + part.n) if u + part.n > 0 else 1.0
        accuracy[version] = part.accuracy
    w = np.array([weight[lab.version] for lab in labels])
    a = np.array([accuracy[lab.version] for lab in labels])
    pw = _powered(labels, pools, min_labels)
    pool_part = pw.y - pw.lam * pw.centred
    zs = w * pool_part + (1.0 - w) * a
    theta = float(zs.mean())
    share = float(w.mean())
    lab_acc = float(np.sum((1.0 - w) * a) / np.sum(1.0 - w)) if np.any(w < 1.0) else None
    if pw.lam == 0.0:
        method = "plain"
        k = int(pw.y.sum())
        iv = wilson(k, n, z)
        assert iv is not None
        offset = float(np.mean((1.0 - w) * a))
        lo, hi = share * iv[0] + offset, share * iv[1] + offset
    else:
        method = "ppi"
        se = math.sqrt(
            (float(np.var(zs, ddof=1)) if n > 1 else 0.0) / n
            + pw.lam**2 * pw.pool_variance(pools, weight)
        )
        lo, hi = theta - z * se, theta + z * se
    return DataWideEstimate(
        method=method,
        estimate=min(1.0, max(0.0, theta)),
        interval=(max(0.0, lo), min(1.0, hi)),
        lam=pw.lam,
        unlabelled_share=share,
        labelled_accuracy=lab_acc,
        pool_estimate=float(pool_part.mean()),
        n=n,
        n_pool_only=sum(1 for lab in labels if lab.version in missing),
    )
