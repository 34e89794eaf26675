"""The data lead's one-page report.

* class balance of the labels;
* duplicates: near-duplicate groups the selectors skip, and the labelling money they would have
  cost (``cost_per_label``);
* measured accuracy — cross-validated on the labelled set — next to the **estimated real
  accuracy**: per-cluster CV accuracy weighted by how the *whole pool* spreads over the clusters.
  Clusters without measured labels are unknown; their pool share bounds the estimate (worst case
  all wrong, best case all right);
* pre-label acceptance rate per model version (approvals / annotations made on a pre-label),
  from the backend's store or from Label Studio's annotations;
* the honest measure (:mod:`labelwheel.lead.honest`): each version's real accuracy from its
  random control slice, next to its accuracy on the selected tasks, and the lift between them;
  beside the plain proportion, the prediction-powered (PPI) estimate from the same control
  labels and the version's confidence over its whole pool, and the data-wide estimate;
* active learning's lift over random picks (:mod:`labelwheel.lead.lift`): the selector's first
  labels against as many control labels, both scored on held-out control labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from labelwheel.lead.coverage import Coverage, analyse_coverage
from labelwheel.lead.honest import ControlConfidence, HonestEstimate, pooled_estimate
from labelwheel.lead.lift import LiftEstimate
from labelwheel.pool import Pool


@dataclass
class AcceptanceRow:
    """Pre-label acceptance of one model version."""

    version: str
    approvals: int
    corrections: int
    source: str

    @property
    def total(self) -> int:
        """Annotations made on a pre-label of this version."""
        return self.approvals + self.corrections

    @property
    def rate(self) -> float | None:
        """Share of pre-labels accepted unchanged (None without any)."""
        return self.approvals / self.total if self.total else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "total": self.total, "rate": self.rate}


@dataclass
class Report:
    """Everything ``labelwheel report`` prints."""

    source: str
    pool_size: int
    labeled: int
    class_balance: dict[str, int]
    imbalance_ratio: float | None
    duplicate_groups: int
    duplicates_removed: int
    duplicates_already_labeled: int
    cost_per_label: float | None
    duplicate_cost_saved: float | None
    duplicate_cost_spent: float | None
    measured_accuracy: float | None
    measured_on: int
    estimated_accuracy: float | None
    estimated_bounds: tuple[float, float] | None
    unknown_share: float
    acceptance: list[AcceptanceRow] = field(default_factory=list)
    honest: list[HonestEstimate] = field(default_factory=list)
    clusters: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    honest_pooled: HonestEstimate | None = None
    """The all-versions row as computed with the PPI inputs (:func:`build_report`)."""
    al_lift: LiftEstimate | None = None
    """Active learning's lift over random picks (:func:`labelwheel.lead.lift.pool_lift`)."""

    @property
    def honest_all_versions(self) -> HonestEstimate | None:
        """The control-slice estimate over all versions together (None without versions)."""
        if self.honest_pooled is not None:
            return self.honest_pooled
        return pooled_estimate(self.honest) if self.honest else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out.pop("honest_pooled", None)
        out["acceptance"] = [a.to_dict() for a in self.acceptance]
        out["honest"] = [h.to_dict() for h in self.honest]
        out["al_lift"] = self.al_lift.to_dict() if self.al_lift is not None else None
        pooled = self.honest_all_versions
        out["honest_all_versions"] = pooled.to_dict() if pooled is not None else None
        out["estimated_bounds"] = list(self.estimated_bounds) if self.estimated_bounds else None
        return out


def class_balance(pool: Pool) -> dict[str, int]:
    """Label -> count, every class of the config listed (0 for classes without labels)."""
    counts = dict.fromkeys(pool.classes, 0)
    for labels in pool.label_sets:
        for lab in labels:
            counts[lab] = counts.get(lab, 0) + 1
    return counts


def estimate_real_accuracy(cov: Coverage) -> tuple[float | None, tuple[float, float] | None, float]:
    """Pool-weighted accuracy from per-cluster CV accuracy.

    Returns ``(estimate over the measured clusters, (lower, upper) bound over the whole pool,
    share of the pool in clusters without a measurement)``.
    """
    measured = [r for r in cov.rows if r.accuracy is not None]
    unknown = float(sum(r.share for r in cov.rows if r.accuracy is None))
    if not measured:
        return None, None, unknown
    weighted = float(sum(r.share * float(r.accuracy or 0.0) for r in measured))
    covered = 1.0 - unknown
    estimate = weighted / covered if covered > 0 else None
    return estimate, (weighted, weighted + unknown), unknown


def acceptance_from_store(store: Any, project_id: int) -> list[AcceptanceRow]:
    """Acceptance per version as the backend recorded it (approval = annotation equal to the
    pre-label it was made on)."""
    rows = []
    for (pid, version), counts in sorted(store.feedback_counts(project_id).items()):
        if pid != project_id or not version:
            continue
        rows.append(
            AcceptanceRow(
                version=version,
                approvals=int(counts.get("approval", 0)),
                corrections=int(counts.get("correction", 0)),
                source="backend",
            )
        )
    return rows


def acceptance_from_tasks(tasks: Iterable[dict[str, Any]], config: Any) -> list[AcceptanceRow]:
    """Acceptance per version from Label Studio's own records.

    An annotation counts when it was made on a pre-label: the prediction it names as
    ``parent_prediction``, else the task's newest prediction created before it. It is an approval
    when its chosen labels equal the prediction's, a correction otherwise. Predictions with an
    empty result (no pre-label shown) do not count.
    """
    counts: dict[str, list[int]] = {}
    for task in tasks:
        preds = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
        if not preds:
            continue
        by_id = {p.get("id"): p for p in preds}
        for ann in task.get("annotations") or []:
            if not isinstance(ann, dict) or ann.get("was_cancelled"):
                continue
            pred = by_id.get(ann.get("parent_prediction"))
            if pred is None:
                created = str(ann.get("created_at") or "")
                earlier = [p for p in preds if str(p.get("created_at") or "") <= created]
                if not earlier:
                    continue
                pred = max(
                    earlier, key=lambda p: (str(p.get("created_at") or ""), p.get("id") or 0)
                )
            pre = set(config.labels_from_result(pred.get("result") or []))
            if not pre:
                continue
            got = set(config.labels_from_result(ann.get("result") or []))
            version = str(pred.get("model_version") or "unknown")
            row = counts.setdefault(version, [0, 0])
            row[0 if got == pre else 1] += 1
    return [
        AcceptanceRow(version=v, approvals=a, corrections=c, source="label-studio")
        for v, (a, c) in sorted(counts.items(), key=lambda kv: _version_key(kv[0]))
    ]


def _version_key(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits and name.lstrip("v").isdigit() else 10**9, name)


def build_report(
    pool: Pool,
    *,
    coverage: Coverage | None = None,
    acceptance: list[AcceptanceRow] | None = None,
    honest: list[HonestEstimate] | None = None,
    cost_per_label: float | None = None,
    seed: int = 0,
    honest_confidence: ControlConfidence | None = None,
    al_lift: LiftEstimate | None = None,
) -> Report:
    """Compute the report for a pool (``coverage`` is computed, without a map, if not given).
    ``honest_confidence`` (:func:`labelwheel.records.read_control_confidence`) adds the PPI
    estimate to the all-versions row (the per-version rows carry theirs from
    :func:`labelwheel.lead.honest.estimate_versions`)."""
    if cost_per_label is not None and cost_per_label < 0:
        raise ValueError("cost per label must be a non-negative number")
    cov = coverage or analyse_coverage(pool, seed=seed, with_map=False)
    balance = class_balance(pool)
    nonzero = [c for c in balance.values() if c > 0]
    imbalance = (max(nonzero) / min(nonzero)) if len(nonzero) >= 2 else None

    labeled = pool.labeled_mask
    removed = [p for g in cov.duplicate_groups for p in g[1:]]
    removed_labeled = int(sum(1 for p in removed if labeled[p]))
    removed_unlabeled = len(removed) - removed_labeled

    correct = cov.cv_correct if cov.cv_correct is not None else np.full(len(pool), -1)
    measured = correct[correct >= 0]
    measured_acc = float(measured.mean()) if measured.size else None
    estimate, bounds, unknown = estimate_real_accuracy(cov)
    notes = list(cov.notes)
    if unknown > 0 and estimate is not None:
        notes.append(
            f"{unknown:.0%} of the pool lies in clusters without measured labels: the real "
            "accuracy there is unknown (the bounds assume all wrong / all right)"
        )
    if pool.multi_label:
        notes.append("multi-label project: accuracy uses each task's first chosen label")
    return Report(
        source=pool.source,
        pool_size=len(pool),
        labeled=int(labeled.sum()),
        class_balance=balance,
        imbalance_ratio=imbalance,
        duplicate_groups=len(cov.duplicate_groups),
        duplicates_removed=len(removed),
        duplicates_already_labeled=removed_labeled,
        cost_per_label=cost_per_label,
        duplicate_cost_saved=None if cost_per_label is None else removed_unlabeled * cost_per_label,
        duplicate_cost_spent=None if cost_per_label is None else removed_labeled * cost_per_label,
        measured_accuracy=measured_acc,
        measured_on=int(measured.size),
        estimated_accuracy=estimate,
        estimated_bounds=bounds,
        unknown_share=unknown,
        acceptance=list(acceptance or []),
        honest=list(honest or []),
        clusters=[r.__dict__ for r in cov.rows],
        notes=notes,
        honest_pooled=(
            pooled_estimate(list(honest), confidence=honest_confidence)
            if honest and honest_confidence is not None
            else None
        ),
        al_lift=al_lift,
    )
