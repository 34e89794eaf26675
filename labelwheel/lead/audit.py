"""Suspected label errors: which annotations are probably wrong, what they should be, and why.

The audit looks at a pool's labelled items only:

1. **Out-of-fold probabilities.** The product's head (:func:`labelwheel.head.fit_codes`, on the
   cached embeddings, standardised with the whole pool's statistics) is trained K times with
   stratified K-fold (K = 5, fewer when a class has fewer labels); every labelled item is
   predicted by the head that did not see it.
2. **Confident learning** (cleanlab): ``cleanlab.filter.find_label_issues`` flags the items whose
   given label disagrees with what the out-of-fold model is confident of, after estimating how
   often each class is confused with each other; ``cleanlab.rank.get_label_quality_scores``
   (self-confidence: the out-of-fold probability of the given label) scores every label.
3. **Context checks**: near-duplicate images (the selectors' filter) that carry different
   labels; labelled training items that are near-duplicates of held-out items (leakage: the
   held-out accuracy is inflated; see :func:`labelwheel.lead.audit_io.holdout_mask` for how a
   project marks them); tasks whose annotators chose different labels; outliers
   (the most unusual 2% of the pool by anomaly score, possibly junk); and items the model gets
   wrong inside a k-means cluster where its out-of-fold accuracy is far below its overall
   accuracy (a confusing region, or a systematic mislabelling).

**Suspicion** (0 = the label looks right, 1 = surely wrong) is ``1 − trust``, where trust starts
as cleanlab's label quality score and is multiplied by :data:`CONFLICT_FACTOR` for each conflict
(near-duplicate, annotators) and by :data:`CONTEXT_FACTOR` for each context flag (outlier, weak
cluster, near-duplicate of a held-out item). An item is a **suspect** when cleanlab flags it or
any check gives it a reason (an outlier only when the model gives its label less than even odds);
suspects are listed most suspicious first, each with the given label, the suggested one (the
out-of-fold model's choice, when it differs) and the reasons.

Where audits come from and go to (the labels CSV, Label Studio's view and task fields):
:mod:`labelwheel.lead.audit_io`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from labelwheel.head import Scaling, fit_codes
from labelwheel.lead import _filters
from labelwheel.lead.coverage import cluster_pool, default_n_clusters
from labelwheel.pool import Pool

__all__ = [
    "CONFLICT_FACTOR",
    "CONTEXT_FACTOR",
    "MIN_LABELS",
    "VIEW_TITLE",
    "Audit",
    "HoldoutLeak",
    "Suspect",
    "WeakCluster",
    "audit_pool",
    "out_of_fold_probabilities",
]

VIEW_TITLE = "labelwheel: review suspected label errors"

MIN_LABELS = 10
"""Labels an audit needs at the least (of at least two classes, two labels each)."""
CONFLICT_FACTOR = 0.75
"""Trust kept per conflict (a near-duplicate or another annotator with a different label)."""
CONTEXT_FACTOR = 0.9
"""Trust kept per context flag (outlier; the model disagrees inside a weak cluster)."""
WEAK_CLUSTER_GAP = 0.15
"""A cluster is weak when its out-of-fold accuracy is this far or more below the overall one."""
WEAK_CLUSTER_MIN_LABELS = 5
"""Labels a cluster needs before its accuracy is judged."""


@dataclass
class Suspect:
    """A labelled item whose label is probably wrong (``rank`` 1 = most suspicious)."""

    rank: int
    task_id: int
    ref: str
    given: str
    suggested: str | None
    suspicion: float
    label_quality: float | None
    given_probability: float | None
    suggested_probability: float | None
    reasons: list[str]
    cluster: int


@dataclass
class WeakCluster:
    """A k-means cluster where the out-of-fold model does much worse than overall."""

    cluster: int
    labels: int
    accuracy: float
    overall: float
    top_label: str | None


@dataclass
class HoldoutLeak:
    """A labelled training item that is a near-duplicate of held-out items (``held_out``: ids)."""

    task_id: int
    ref: str
    held_out: list[int]


@dataclass
class Audit:
    """The result of :func:`audit_pool`."""

    source: str
    pool_size: int
    labeled: int
    audited: int
    classes: list[str]
    folds: int
    oof_accuracy: float
    label_issues: int
    suspects: list[Suspect]
    weak_clusters: list[WeakCluster]
    duplicate_conflicts: list[list[int]]
    notes: list[str] = field(default_factory=list)
    holdout: int = 0
    """Held-out items in the pool (0: the pool marks none)."""
    holdout_leaks: list[HoldoutLeak] = field(default_factory=list)
    ranking: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Pool positions of every labelled item, most suspicious first (suspects and the rest)."""
    suspicion: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Suspicion per pool position (NaN for unlabelled items)."""

    view_title: str = VIEW_TITLE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the per-item arrays)."""
        out = asdict(self)
        out.pop("ranking")
        out.pop("suspicion")
        return out


# ----------------------------------------------------------------------------------- model


def out_of_fold_probabilities(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    folds: int = 5,
    seed: int = 0,
    scaling: Scaling | None = None,
) -> tuple[np.ndarray, int]:
    """``(len(y), n_classes)`` probabilities, each row from the head trained without it.

    Stratified K-fold with ``K = min(folds, smallest class count)``; every class needs at least
    two rows (else ValueError). Returns ``(probabilities, K)``.
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y, dtype=np.int64)
    _, counts = np.unique(y, return_counts=True)
    if counts.size < 2 or counts.min() < 2:
        raise ValueError("out-of-fold probabilities need two classes with two labels each")
    k = int(min(folds, counts.min()))
    scaling = scaling or Scaling.of(x)
    proba = np.zeros((len(y), n_classes), dtype=np.float64)
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, test in cv.split(x, y):
        head = fit_codes(x[train], y[train], n_classes, scaling=scaling)
        proba[test] = head.predict_proba(x[test])
    return proba, k


def _cleanlab(labels: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(issue mask, label quality scores) from cleanlab (confident learning)."""
    import cleanlab.filter
    import cleanlab.rank

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        issues = cleanlab.filter.find_label_issues(
            labels, proba, filter_by="prune_by_noise_rate", n_jobs=1
        )
        quality = cleanlab.rank.get_label_quality_scores(labels, proba, method="self_confidence")
    return np.asarray(issues, dtype=bool), np.asarray(quality, dtype=np.float64)


# ----------------------------------------------------------------------------------- audit


def audit_pool(
    pool: Pool,
    *,
    folds: int = 5,
    seed: int = 0,
    n_clusters: int | None = None,
    anomaly_fraction: float = 0.02,
    annotator_labels: Mapping[int, Sequence[str]] | None = None,
    holdout: Sequence[bool] | np.ndarray | None = None,
) -> Audit:
    """Rank the pool's labels by how likely they are wrong; see the module docstring.

    ``annotator_labels``: per pool position, the labels different annotators chose (a Label
    Studio project: :func:`labelwheel.lead.audit_io.annotator_labels`); more than one distinct
    label is a conflict. ``holdout``: per pool position, whether the item is held out (test or
    validation data: :func:`labelwheel.lead.audit_io.holdout_mask`); a labelled item that is not
    held out and is a near-duplicate of one that is gets the reason "near-duplicate of held-out
    ...". Raises ValueError for a multi-label pool, too few labels or a mask of the wrong length.
    """
    if pool.multi_label:
        raise ValueError("audit works on single-label classification; this project is multi-label")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    held = np.zeros(len(pool), dtype=bool)
    if holdout is not None:
        held = np.asarray(holdout, dtype=bool).reshape(-1)
        if held.size != len(pool):
            raise ValueError(f"holdout mask has {held.size} entries for {len(pool)} items")
    codes = pool.codes()
    labeled = np.flatnonzero(codes >= 0)
    names, counts = np.unique(codes[labeled], return_counts=True)
    usable = names[counts >= 2]
    if labeled.size < MIN_LABELS or usable.size < 2:
        raise ValueError(
            f"too few labels to audit: need at least {MIN_LABELS} labelled images of at least "
            f"2 classes with 2 or more labels each; have {labeled.size} label(s) of "
            f"{names.size} class(es)"
        )
    notes: list[str] = []
    rare = [pool.classes[int(c)] for c in names[counts < 2]]
    if rare:
        notes.append(
            f"class(es) {', '.join(rare)} have a single label: the model cannot judge those "
            "labels (only the context checks apply)"
        )
    audited = labeled[np.isin(codes[labeled], usable)]
    # compact class indices over the audited classes (cleanlab wants every column used)
    compact = {int(c): j for j, c in enumerate(usable)}
    y = np.array([compact[int(c)] for c in codes[audited]], dtype=np.int64)
    emb = pool.embeddings
    proba, k = out_of_fold_probabilities(
        emb[audited], y, len(usable), folds=folds, seed=seed, scaling=Scaling.of(emb)
    )
    issues, quality = _cleanlab(y, proba)
    predicted = np.argmax(proba, axis=1)
    oof_accuracy = float(np.mean(predicted == y))

    n = len(pool)
    trust = np.full(n, np.nan)
    trust[labeled] = 1.0
    trust[audited] = quality
    reasons: dict[int, list[str]] = {int(p): [] for p in labeled}
    class_name = [pool.classes[int(c)] for c in usable]
    suggested: dict[int, tuple[str | None, float | None, float | None]] = {}
    for row, pos in enumerate(audited):
        pos = int(pos)
        best = int(predicted[row])
        p_given, p_best = float(proba[row, y[row]]), float(proba[row, best])
        suggested[pos] = (class_name[best] if best != y[row] else None, p_given, p_best)
        if issues[row]:
            reasons[pos].append(
                f"label issue (confident learning): the model gives '{class_name[y[row]]}' "
                f"{p_given:.0%}, '{class_name[best]}' {p_best:.0%}"
            )

    ident = _identifier(pool)
    groups = _filters.near_duplicate_groups(emb)
    conflicts = _duplicate_conflicts(pool, labeled, groups)
    for group in conflicts:
        for pos in group:
            others = [q for q in group if pool.labels[q] != pool.labels[pos]]
            if not others:
                continue
            shown = ", ".join(f"{ident(q)} labelled '{pool.labels[q]}'" for q in others[:3])
            reasons[pos].append(f"near-duplicate of {shown}")
            trust[pos] *= CONFLICT_FACTOR
    leaks = _holdout_leaks(pool, labeled, held, groups)
    for leak_pos, held_pos in leaks:
        shown = ", ".join(ident(q) for q in held_pos[:3]) + (", …" if len(held_pos) > 3 else "")
        reasons[leak_pos].append(f"near-duplicate of held-out {shown}")
        trust[leak_pos] *= CONTEXT_FACTOR
    for pos, chosen in (annotator_labels or {}).items():
        distinct = sorted(set(chosen))
        if pos in reasons and len(distinct) > 1:
            reasons[pos].append(f"annotators disagree: {', '.join(distinct)}")
            trust[pos] *= CONFLICT_FACTOR

    scores = _filters.anomaly_scores(emb)
    n_anom = math.ceil(anomaly_fraction * n) if n >= 20 else 0
    outliers = set(np.argsort(-scores, kind="stable")[:n_anom].tolist())
    for pos in labeled:
        if int(pos) in outliers:
            reasons[int(pos)].append(
                f"outlier: among the {anomaly_fraction:.0%} most unusual images of the pool"
            )
            trust[pos] *= CONTEXT_FACTOR

    clusters = cluster_pool(emb, n_clusters or default_n_clusters(n), seed=seed)
    weak = _weak_clusters(pool, clusters, audited, predicted == y, oof_accuracy)
    weak_ids = {w.cluster: w for w in weak}
    for row, pos in enumerate(audited):
        w = weak_ids.get(int(clusters[pos]))
        if w is not None and predicted[row] != y[row]:
            reasons[int(pos)].append(
                f"in weak cluster {w.cluster} (model right on {w.accuracy:.0%} of its "
                f"{w.labels} labels vs {w.overall:.0%} overall) and the model disagrees"
            )
            trust[pos] *= CONTEXT_FACTOR

    suspicion = 1.0 - trust
    quality_of = {int(p): float(q) for p, q in zip(audited, quality, strict=True)}
    ranking = labeled[np.lexsort((labeled, -suspicion[labeled]))]
    suspects: list[Suspect] = []
    for pos in ranking:
        pos = int(pos)
        if not reasons[pos] or (
            pos in outliers and len(reasons[pos]) == 1 and quality_of.get(pos, 0.0) >= 0.5
        ):
            continue  # an outlier whose label the model backs is no suspect by itself
        sugg, given_p, sugg_p = suggested.get(pos, (None, None, None))
        suspects.append(
            Suspect(
                rank=len(suspects) + 1,
                task_id=int(pool.ids[pos]),
                ref=pool.refs[pos],
                given=str(pool.labels[pos]),
                suggested=sugg,
                suspicion=round(float(suspicion[pos]), 6),
                label_quality=quality_of.get(pos),
                given_probability=given_p,
                suggested_probability=sugg_p if sugg is not None else None,
                reasons=reasons[pos],
                cluster=int(clusters[pos]),
            )
        )
    return Audit(
        source=pool.source,
        pool_size=n,
        labeled=int(labeled.size),
        audited=int(audited.size),
        classes=list(pool.classes),
        folds=k,
        oof_accuracy=oof_accuracy,
        label_issues=int(issues.sum()),
        suspects=suspects,
        weak_clusters=weak,
        duplicate_conflicts=[[int(pool.ids[p]) for p in g] for g in conflicts],
        notes=notes,
        holdout=int(held.sum()),
        holdout_leaks=[
            HoldoutLeak(int(pool.ids[p]), pool.refs[p], [int(pool.ids[q]) for q in h])
            for p, h in leaks
        ],
        ranking=ranking,
        suspicion=suspicion,
    )


def _identifier(pool: Pool) -> Any:
    if pool.project_id is not None:
        return lambda p: f"task {int(pool.ids[p])}"
    return lambda p: pool.refs[p]


def _duplicate_conflicts(
    pool: Pool, labeled: np.ndarray, groups: list[list[int]]
) -> list[list[int]]:
    """Near-duplicate groups (pool positions) whose labelled members disagree."""
    out = []
    is_labeled = np.zeros(len(pool), dtype=bool)
    is_labeled[labeled] = True
    for group in groups:
        members = [p for p in group if is_labeled[p]]
        if len({pool.labels[p] for p in members}) > 1:
            out.append(members)
    return out


def _holdout_leaks(
    pool: Pool, labeled: np.ndarray, held: np.ndarray, groups: list[list[int]]
) -> list[tuple[int, list[int]]]:
    """(labelled training position, held-out positions) for each training label in a
    near-duplicate group that holds held-out items."""
    if not held.any():
        return []
    is_labeled = np.zeros(len(pool), dtype=bool)
    is_labeled[labeled] = True
    out = []
    for group in groups:
        held_out = [p for p in group if held[p]]
        if held_out:
            out += [(p, held_out) for p in group if is_labeled[p] and not held[p]]
    return sorted(out)


def _weak_clusters(
    pool: Pool,
    clusters: np.ndarray,
    audited: np.ndarray,
    correct: np.ndarray,
    overall: float,
) -> list[WeakCluster]:
    out = []
    for c in np.unique(clusters[audited]):
        inside = clusters[audited] == c
        n_labels = int(inside.sum())
        if n_labels < WEAK_CLUSTER_MIN_LABELS:
            continue
        acc = float(correct[inside].mean())
        if acc <= overall - WEAK_CLUSTER_GAP:
            labels = [pool.labels[int(p)] for p in audited[inside]]
            top = max(set(labels), key=labels.count) if labels else None
            out.append(WeakCluster(int(c), n_labels, acc, overall, top))
    return sorted(out, key=lambda w: w.accuracy)
