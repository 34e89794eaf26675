"""One ingest run: the project, the funnel pass, the scores, the budget, the import, the report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelwheel.features import Embedder
from labelwheel.ingest.funnel import DROP_REASONS, FunnelPass, run_funnel
from labelwheel.ingest.importer import ImportPick, complete_landed, import_picks
from labelwheel.ingest.project import SHA_FIELD, load_project_context
from labelwheel.ingest.scoring import score_candidates
from labelwheel.ingest.sources import Source
from labelwheel.ingest.state import Ledger

__all__ = ["IngestOptions", "IngestReport", "ingest"]


@dataclass
class IngestOptions:
    """How to run (the CLI's options)."""

    budget: int | None = None
    dry_run: bool = False
    near_threshold: float = 0.995
    cost_per_label: float | None = None
    backbone: str = "efficientnet-lite0"
    image_size: int = 224
    batch_size: int = 32
    threads: int = 4
    seed: int = 0
    progress: bool = False
    import_batch: int = 20


@dataclass
class IngestReport:
    """What the run did (``to_dict`` is the ``--json`` document)."""

    source: str
    project_id: int
    dry_run: bool
    budget: int | None
    near_threshold: float
    scored_by: str
    funnel: FunnelPass
    project_tasks: int
    project_labeled: int
    picked: list[dict[str, Any]] = field(default_factory=list)
    deferred: int = 0
    resumed: int = 0  # uploads of an interrupted run found in the project and completed
    import_errors: list[dict[str, str]] = field(default_factory=list)
    cost_per_label: float | None = None
    ledger: str | None = None

    def dropped_by_reason(self) -> dict[str, int]:
        """Counts of dropped items per reason (every reason listed)."""
        counts = Counter(o.reason for o in self.funnel.dropped)
        return {r: int(counts.get(r, 0)) for r in DROP_REASONS}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary and item lists."""
        f = self.funnel
        by_reason = self.dropped_by_reason()
        cost = None
        if self.cost_per_label is not None:
            cost = {
                "per_label": self.cost_per_label,
                "avoided": round(len(f.dropped) * self.cost_per_label, 2),
                "by_reason": {r: round(n * self.cost_per_label, 2) for r, n in by_reason.items()},
            }
        imported_key = "would_import" if self.dry_run else "imported"
        return {
            "source": self.source,
            "project": self.project_id,
            "project_tasks": self.project_tasks,
            "project_labeled": self.project_labeled,
            "dry_run": self.dry_run,
            "budget": self.budget,
            "near_threshold": self.near_threshold,
            "scored_by": self.scored_by,
            "listed": f.listed,
            "read": f.read,
            "skipped": {
                "total": len(f.skipped),
                "items": [o.to_dict() for o in f.skipped],
            },
            "dropped": {
                "total": len(f.dropped),
                "by_reason": by_reason,
                "items": [o.to_dict() for o in f.dropped],
            },
            "passed": len(f.candidates),
            imported_key: len(self.picked) - len(self.import_errors),
            "deferred": self.deferred,
            "resumed_uploads": self.resumed,
            "tasks": self.picked,
            "import_errors": self.import_errors,
            "cost_of_dropped": cost,
            "seconds": round(f.seconds, 3),
            "images_per_second": round(f.throughput, 2),
            "ledger": self.ledger,
        }


def ingest(
    client: Any,
    project_id: int,
    source: Source,
    *,
    ledger_path: Path,
    cache_dir: Path | None,
    options: IngestOptions,
) -> IngestReport:
    """Run the funnel on ``source`` for ``project_id`` and import what passes (unless dry run)."""
    if options.budget is not None and options.budget < 0:
        raise ValueError(f"--budget must be at least 0, got {options.budget}")
    from labelwheel.pool import get_project_or_fail

    get_project_or_fail(client, project_id)  # before a ledger is made for a project that is not
    embedder = Embedder(
        options.backbone, options.image_size, options.batch_size, cache_root=cache_dir
    )
    ledger = Ledger(ledger_path, project_id, read_only=options.dry_run)
    try:
        ctx = load_project_context(client, project_id, embedder, ledger, progress=options.progress)
        funnel = run_funnel(
            source,
            ctx,
            embedder,
            ledger,
            near_threshold=options.near_threshold,
            threads=options.threads,
            progress=options.progress,
        )
        report = IngestReport(
            source=source.description,
            project_id=project_id,
            dry_run=options.dry_run,
            budget=options.budget,
            near_threshold=options.near_threshold,
            scored_by="bits" if ctx.head is not None else "diversity",
            funnel=funnel,
            project_tasks=ctx.n_tasks,
            project_labeled=ctx.n_labeled,
            cost_per_label=options.cost_per_label,
            ledger=None if options.dry_run and not ledger_path.exists() else str(ledger_path),
        )
        if funnel.landed and not options.dry_run:
            report.resumed = complete_landed(client, ledger, funnel.landed)
        cands = funnel.candidates
        if not cands:
            return report
        vectors = np.stack([c.vector for c in cands])
        scores = score_candidates(vectors, ctx.embeddings, ctx.head, seed=options.seed)
        order = scores.order
        if options.budget is not None:
            report.deferred = max(0, len(order) - options.budget)
            order = order[: options.budget]
        picks: list[ImportPick] = []
        for rank, i in enumerate(order, start=1):
            c = cands[int(i)]
            fields: dict[str, Any] = {
                SHA_FIELD: c.sha,
                "labelwheel_source": c.item.key,
                "labelwheel_rank": rank,
                "labelwheel_scored_by": scores.method,
                "labelwheel_diversity": round(float(scores.diversity[i]), 5),
                "labelwheel_anomaly": round(float(scores.anomaly[i]), 5),
            }
            if scores.bits is not None:
                fields["labelwheel_bits"] = round(float(scores.bits[i]), 5)
            picks.append(ImportPick(c.item, c.sha, fields))
        report.picked = [
            {"key": p.item.key, **{k: v for k, v in p.fields.items() if k != "labelwheel_source"}}
            for p in picks
        ]
        if options.dry_run:
            return report
        outcomes = import_picks(
            client,
            project_id,
            source,
            picks,
            ledger,
            batch_size=options.import_batch,
            progress=options.progress,
        )
        by_key = {o.key: o for o in outcomes}
        for row in report.picked:
            o = by_key.get(row["key"])
            row["task_id"] = o.task_id if o else None
            if o is not None and o.error:
                report.import_errors.append({"key": o.key, "error": o.error})
        return report
    finally:
        ledger.close()
        embedder.close()
