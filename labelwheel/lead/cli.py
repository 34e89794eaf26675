"""``labelwheel plan | forecast | coverage | audit``: the data lead's commands (``report`` is
:mod:`labelwheel.lead.cli_report`; the options and helpers they share are
:mod:`labelwheel.lead.cli_common`).

Each works on a Label Studio project (``--project ID`` with ``--url``/``--api-key`` or the env
variables ``LABEL_STUDIO_URL``/``LABEL_STUDIO_API_KEY``; a legacy token or a personal access token)
or offline on a folder of images (``--images DIR``). ``--json`` prints one JSON document for
scripts; otherwise tables for people. Errors are one clear line on stderr and exit status 1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from labelwheel.lead.cli_common import (
    emit_json,
    fail,
    format_table,
    friendly_errors,
    load_source,
    money,
    skipped_note,
    source_options,
)

# ------------------------------------------------------------------------------------- plan


@click.command("plan")
@source_options
@click.option(
    "--budget", type=int, required=True, help="How many tasks to label next (≤ unlabelled pool)."
)
@click.option(
    "--strategy", help="Selector (default: LABELWHEEL_STRATEGY or the selectors' default)."
)
@click.option("--cost-per-label", type=float, help="Price of one label, for the cost column.")
@click.option("--dry-run", is_flag=True, help="Only print the plan; do not write the view.")
@friendly_errors
def plan_command(
    budget: int, strategy: str | None, cost_per_label: float | None, dry_run: bool, **kw: Any
) -> None:
    """Pick the next BUDGET tasks to label and save them as a Label Studio view.

    The view "labelwheel: next N" holds exactly the picked tasks, most informative first (each
    picked task carries its rank in the data field labelwheel_rank; the view sorts by it).
    Re-running replaces that view.
    """
    from labelwheel.lead.plan import make_plan, write_plan_view

    if budget < 1:
        raise fail(f"--budget must be at least 1, got {budget}")
    if cost_per_label is not None and (cost_per_label < 0 or not math.isfinite(cost_per_label)):
        raise fail("--cost-per-label must be a non-negative number")
    if strategy is not None:
        from labelwheel import selectors

        if strategy not in selectors.STRATEGIES:
            raise fail(
                f"unknown strategy {strategy!r}; use one of "
                + ", ".join(sorted(selectors.STRATEGIES))
            )
    loaded = load_source(kw)
    pool = loaded.pool
    skipped_note(pool)
    plan = make_plan(
        pool, budget, strategy=strategy, cost_per_label=cost_per_label, seed=kw["seed"]
    )
    view = None
    if loaded.client is not None and not dry_run:
        view = write_plan_view(loaded.client, pool.project_id, plan, pool.tasks)
    if kw["as_json"]:
        out = plan.to_dict()
        out["view"] = {"id": view.get("id"), "title": plan.view_title} if view else None
        out["source"] = pool.source
        emit_json(out)
        return
    click.echo(
        f"{pool.source}: {plan.unlabeled} unlabelled of {plan.pool_size}; strategy {plan.strategy}"
    )
    for note in plan.notes:
        click.echo(f"note: {note}")
    rows = [
        [
            p.rank,
            p.task_id if pool.project_id is not None else p.ref,
            p.reason,
            round(p.bits, 3),
            f"{p.predicted} ({p.confidence:.2f})" if p.predicted is not None else None,
            money(p.cost) if p.cost is not None else None,
        ]
        for p in plan.picks
    ]
    head = ["#", "task" if pool.project_id is not None else "image", "why", "bits", "model says"]
    click.echo(format_table([*head, "cost"], rows))
    total = f"total: {plan.budget} labels, {plan.total_bits:.1f} bits"
    if plan.total_cost is not None:
        total += f", expected cost {money(plan.total_cost)}"
    click.echo(total)
    if view is not None:
        click.echo(
            f'wrote view "{plan.view_title}" (id {view.get("id")}) in project {pool.project_id}'
        )
    elif loaded.client is not None:
        click.echo("dry run: no view written")


# ----------------------------------------------------------------------------------- forecast


@click.command("forecast")
@source_options
@click.option("--target", type=float, required=True, help="Target accuracy, e.g. 0.95.")
@click.option(
    "--history",
    type=click.Choice(["auto", "versions", "cv"]),
    default="auto",
    show_default=True,
    help="Accuracy history: the backend's model versions, or a cross-validated learning curve "
    "on the labels present (auto: versions if there are enough).",
)
@click.option("--plot", type=click.Path(path_type=Path), help="Write the learning curve as PNG.")
@friendly_errors
def forecast_command(target: float, history: str, plot: Path | None, **kw: Any) -> None:
    """How many more labels reach --target accuracy (fits acc(n) = a − b·n^(−c))."""
    from labelwheel.lead.forecast import forecast_labels, render_forecast_png
    from labelwheel.lead.sources import accuracy_history

    if not 0.0 < target < 1.0:
        raise fail(f"--target must be an accuracy between 0 and 1 (e.g. 0.95), got {target}")
    loaded = load_source(kw, labeled_only=True)
    pool = loaded.pool
    skipped_note(pool)
    points, kind = accuracy_history(pool, loaded.store, prefer=history, seed=kw["seed"])
    fc = forecast_labels(points, target, current_labels=pool.n_labeled, seed=kw["seed"])
    if plot is not None:
        plot.write_bytes(render_forecast_png(fc))
    if kw["as_json"]:
        out = fc.to_dict()
        out["history"] = kind
        out["source"] = pool.source
        emit_json(out)
        return
    label = "model versions" if kind == "versions" else "cross-validated learning curve"
    click.echo(f"{pool.source}: {pool.n_labeled} labels; history from {label}")
    if points:
        click.echo(
            format_table(
                ["labels", "accuracy", "from"],
                [[p.n_labels, p.accuracy, p.source] for p in fc.points],
            )
        )
    if fc.fit is not None:
        click.echo(f"fit: acc(n) = {fc.fit.a:.4f} − {fc.fit.b:.4f}·n^(−{fc.fit.c:.3f})")
    click.echo(fc.message)
    if plot is not None:
        click.echo(f"learning curve written to {plot}")


# ----------------------------------------------------------------------------------- coverage


@click.command("coverage")
@source_options
@click.option("--out", type=click.Path(path_type=Path), help="Write the 2-D map as PNG.")
@click.option("--clusters", type=click.IntRange(1, 500), help="k-means clusters (default ~√(n/2)).")
@click.option(
    "--projection",
    type=click.Choice(["auto", "pca", "tsne", "umap"]),
    default="auto",
    show_default=True,
    help="2-D projection (auto: UMAP if installed, else t-SNE, PCA above 5,000 items).",
)
@friendly_errors
def coverage_command(out: Path | None, clusters: int | None, projection: str, **kw: Any) -> None:
    """Map the pool: clusters without labels (holes), near-duplicates, anomalies."""
    from labelwheel.lead.coverage import analyse_coverage, render_coverage_png

    loaded = load_source(kw)
    pool = loaded.pool
    skipped_note(pool)
    cov = analyse_coverage(
        pool, n_clusters=clusters, projection=projection, seed=kw["seed"], with_map=out is not None
    )
    if out is not None:
        render_coverage_png(cov, out, title=f"Coverage: {pool.source}")
    if kw["as_json"]:
        data = cov.to_dict(pool)
        data["source"] = pool.source
        data["map"] = str(out) if out else None
        emit_json(data)
        return
    click.echo(f"{pool.source}: {len(pool)} items, {pool.n_labeled} labelled")
    rows = [
        [
            r.cluster,
            r.size,
            f"{r.share:.1%}",
            r.labels,
            r.accuracy,
            r.top_label,
            "HOLE" if r.hole else "",
        ]
        for r in cov.rows
    ]
    head = ["cluster", "size", "share", "labels", "accuracy", "top label", ""]
    click.echo(format_table(head, rows))
    holes = [r for r in cov.rows if r.hole]
    share = sum(r.share for r in holes)
    click.echo(f"holes: {len(holes)} cluster(s) without labels, {share:.1%} of the pool")
    ident = (
        (lambda p: str(pool.ids[p])) if pool.project_id is not None else (lambda p: pool.refs[p])
    )
    click.echo(f"near-duplicate groups: {len(cov.duplicate_groups)}")
    for g in cov.duplicate_groups[:10]:
        click.echo("  " + ", ".join(ident(p) for p in g))
    click.echo(f"anomalies: {', '.join(ident(p) for p in cov.anomalies) or 'none'}")
    for note in cov.notes:
        click.echo(f"note: {note}")
    if out is not None:
        click.echo(f"map written to {out}")


# -------------------------------------------------------------------------------------- audit


@click.command("audit")
@source_options
@click.option(
    "--labels",
    "labels_csv",
    type=click.Path(path_type=Path),
    help="With --images: a CSV of 'file name,label' rows (else sub-folders or labels.csv).",
)
@click.option(
    "--folds",
    type=click.IntRange(2, 20),
    default=5,
    show_default=True,
    help="Cross-validation folds.",
)
@click.option("--limit", type=click.IntRange(1), help="Show and write only the N most suspicious.")
@click.option("--dry-run", is_flag=True, help="Only print the suspects; do not write the view.")
@click.option(
    "--holdout-field",
    help="Task data field naming a task's split (default 'split'); with --images the split is "
    "the labels CSV's third column.",
)
@click.option(
    "--holdout-values",
    help="Comma-separated values of that field that mark held-out tasks "
    "(default test,holdout,held-out,validation,val).",
)
@friendly_errors
def audit_command(
    labels_csv: Path | None,
    folds: int,
    limit: int | None,
    dry_run: bool,
    holdout_field: str | None,
    holdout_values: str | None,
    **kw: Any,
) -> None:
    """Find annotations that are probably wrong, and save them as a Label Studio view.

    Out-of-fold probabilities of the model on the labels, confident learning (cleanlab),
    near-duplicates with different labels, labelled near-duplicates of held-out tasks (data field
    split = test/holdout/validation: leakage), annotators who disagree, outliers and clusters
    where the model does much worse than overall. The view "labelwheel: review suspected label
    errors" holds the suspects, most suspicious first; each carries the data fields
    labelwheel_audit_rank, labelwheel_suggested, labelwheel_suspicion and labelwheel_why.
    Re-running replaces the view and clears the fields of tasks no longer suspected.
    """
    from labelwheel.lead.audit import audit_pool
    from labelwheel.lead.audit_io import (
        DEFAULT_HOLDOUT_FIELD,
        DEFAULT_HOLDOUT_VALUES,
        annotator_labels,
        holdout_mask,
        is_held_out,
        parse_holdout_values,
        read_label_table,
        with_labels,
        write_audit_view,
    )

    table, splits = None, None
    if labels_csv is not None:
        if kw["images_dir"] is None:
            raise fail("--labels goes with --images DIR (a project's labels are its annotations)")
        table, splits = read_label_table(labels_csv, kw["images_dir"])
    if holdout_field is not None and kw["images_dir"] is not None:
        raise fail("--holdout-field is for --project; offline the split is the CSV's 3rd column")
    field = (holdout_field or DEFAULT_HOLDOUT_FIELD).strip()
    if not field:
        raise fail("--holdout-field must not be empty")
    values: tuple[str, ...] = DEFAULT_HOLDOUT_VALUES
    if holdout_values is not None:
        values = parse_holdout_values(holdout_values)

    def keep(task: dict[str, Any]) -> bool:
        """The audit judges labels: embed the annotated tasks and the held-out ones only."""
        annotations = task.get("annotations") or []
        done = any(isinstance(a, dict) and not a.get("was_cancelled") for a in annotations)
        return done or is_held_out(task, field, values)

    loaded = load_source(kw, keep=keep)
    pool = loaded.pool
    if table is not None:
        pool = with_labels(pool, table)
    skipped_note(pool)
    held = holdout_mask(pool, field=field, values=values, splits=splits)
    audit = audit_pool(
        pool,
        folds=folds,
        seed=kw["seed"],
        annotator_labels=annotator_labels(pool),
        holdout=held if held.any() else None,
    )
    if not held.any() and (holdout_field or holdout_values or splits):
        where = "the labels CSV's split column" if splits is not None else f"data field {field!r}"
        audit.notes.append(
            f"no item is held out ({where} is never one of {', '.join(values)}): "
            "the held-out leakage check did not run"
        )
    if limit is not None:
        audit.suspects = audit.suspects[:limit]
    view = None
    if loaded.client is not None and not dry_run:
        view = write_audit_view(loaded.client, pool.project_id, audit, pool.tasks)
    if kw["as_json"]:
        out = audit.to_dict()
        out["view"] = {"id": view.get("id"), "title": audit.view_title} if view else None
        emit_json(out)
        return
    click.echo(
        f"{pool.source}: {audit.labeled} labels audited with {audit.folds}-fold out-of-fold "
        f"predictions (accuracy {audit.oof_accuracy:.1%}); confident learning flags "
        f"{audit.label_issues}"
    )
    for note in audit.notes:
        click.echo(f"note: {note}")
    project = pool.project_id is not None
    rows = [
        [
            s.rank,
            s.task_id if project else s.ref,
            s.given,
            s.suggested,
            round(s.suspicion, 3),
            "; ".join(s.reasons),
        ]
        for s in audit.suspects
    ]
    head = ["#", "task" if project else "image", "given", "suggested", "suspicion", "why"]
    click.echo(format_table(head, rows))
    click.echo(f"{len(audit.suspects)} suspect(s)")
    if audit.holdout:
        click.echo(
            f"{audit.holdout} held-out item(s); {len(audit.holdout_leaks)} labelled training "
            "item(s) are near-duplicates of held-out ones (leakage: inflates held-out accuracy)"
        )
    for w in audit.weak_clusters:
        click.echo(
            f"weak cluster {w.cluster}: model right on {w.accuracy:.0%} of {w.labels} labels "
            f"(overall {w.overall:.0%}); mostly '{w.top_label}'"
        )
    if view is not None:
        click.echo(
            f'wrote view "{audit.view_title}" (id {view.get("id")}) in project {pool.project_id}'
        )
    elif loaded.client is not None and not dry_run:
        click.echo(f'no suspects: view "{audit.view_title}" removed')
    elif loaded.client is not None:
        click.echo("dry run: no view written")
