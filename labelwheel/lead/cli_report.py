"""``labelwheel report``: the data lead's one-page report, in text or JSON.

Class balance, duplicates, measured vs estimated real accuracy and pre-label acceptance
(:mod:`labelwheel.lead.report`); with ``--model-dir``, the honest measure from the backend's
control slice (:mod:`labelwheel.lead.honest`) and active learning's lift over random picks
(:mod:`labelwheel.lead.lift`). The shared options and helpers are
:mod:`labelwheel.lead.cli_common`'s.
"""

from __future__ import annotations

import math
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


@click.command("report")
@source_options
@click.option("--cost-per-label", type=float, help="Price of one label, to price the duplicates.")
@friendly_errors
def report_command(cost_per_label: float | None, **kw: Any) -> None:
    """Class balance, duplicates, measured vs estimated real accuracy, acceptance per version;
    with --model-dir: real accuracy from the control slice (plain, PPI, on the whole data) and
    active learning's lift over random picks."""
    from labelwheel.lead.honest import estimate_versions
    from labelwheel.lead.lift import pool_lift
    from labelwheel.lead.report import build_report
    from labelwheel.lead.sources import acceptance_rows

    if cost_per_label is not None and (cost_per_label < 0 or not math.isfinite(cost_per_label)):
        raise fail("--cost-per-label must be a non-negative number")
    loaded = load_source(kw)
    pool = loaded.pool
    skipped_note(pool)
    record = loaded.store if pool.project_id is not None else None
    confidence = record.control_confidence(pool.project_id) if record is not None else None
    rep = build_report(
        pool,
        acceptance=acceptance_rows(pool, loaded.store),
        honest=estimate_versions(record.control_feedback(pool.project_id), confidence)
        if record is not None
        else None,
        cost_per_label=cost_per_label,
        seed=kw["seed"],
        honest_confidence=confidence,
        al_lift=pool_lift(pool, record.labelling_order(pool.project_id), seed=kw["seed"])
        if record is not None
        else None,
    )
    if kw["as_json"]:
        emit_json(rep.to_dict())
        return
    click.echo(f"{rep.source}: {rep.pool_size} items, {rep.labeled} labelled")
    click.echo("\nclass balance")
    total = sum(rep.class_balance.values()) or 1
    click.echo(
        format_table(
            ["class", "labels", "share"],
            [[c, n, f"{n / total:.1%}"] for c, n in rep.class_balance.items()],
        )
    )
    if rep.imbalance_ratio is not None:
        click.echo(f"imbalance (largest / smallest class): {rep.imbalance_ratio:.1f}×")
    click.echo("\nduplicates")
    click.echo(
        f"{rep.duplicate_groups} near-duplicate group(s); {rep.duplicates_removed} item(s) removed "
        f"from labelling ({rep.duplicates_already_labeled} of them already labelled)"
    )
    if rep.cost_per_label is not None:
        click.echo(
            f"money saved by skipping them: {money(rep.duplicate_cost_saved)}; "
            f"already spent on duplicates: {money(rep.duplicate_cost_spent)}"
        )
    click.echo("\naccuracy")
    if rep.measured_accuracy is None:
        click.echo("measured: not enough labels to cross-validate")
    else:
        click.echo(
            f"measured (cross-validated on {rep.measured_on} labels): {rep.measured_accuracy:.3f}"
        )
    if rep.estimated_accuracy is not None and rep.estimated_bounds is not None:
        lo, hi = rep.estimated_bounds
        click.echo(
            f"estimated real (weighted by the whole pool): {rep.estimated_accuracy:.3f} "
            f"(bounds {lo:.3f}–{hi:.3f}; {rep.unknown_share:.0%} of the pool unmeasured)"
        )
    click.echo("\npre-label acceptance per version")
    if rep.acceptance:
        click.echo(
            format_table(
                ["version", "accepted", "corrected", "rate", "from"],
                [
                    [
                        a.version,
                        a.approvals,
                        a.corrections,
                        f"{a.rate:.0%}" if a.rate is not None else None,
                        a.source,
                    ]
                    for a in rep.acceptance
                ],
            )
        )
    else:
        click.echo("no annotations made on pre-labels yet")
    if loaded.store is not None:
        _echo_honest(rep.honest, rep.honest_all_versions)
        _echo_lift(rep.al_lift)
    for note in rep.notes:
        click.echo(f"note: {note}")


def _echo_honest(rows: list[Any], pooled: Any = None) -> None:
    """The honest measure: real accuracy (random control slice) vs accuracy on selected tasks."""

    def pct(x: float | None) -> str | None:
        return None if x is None else f"{x:.0%}"

    def span(iv: Any, signed: bool = False) -> str | None:
        if iv is None:
            return None
        fmt = "{:+.0%}" if signed else "{:.0%}"
        return f"{fmt.format(iv[0])}..{fmt.format(iv[1])}"

    from labelwheel.lead.honest import PPI_MIN_LABELS, pooled_estimate

    def ppi(r: Any) -> list[str | None]:
        if r.ppi is None or r.ppi.estimate is None:
            return [None, None]
        if r.ppi.method != "ppi":
            return ["(plain)", None]
        return [pct(r.ppi.estimate), span(r.ppi.interval)]

    def data_wide(r: Any) -> list[str | None]:
        if r.data_wide is None or r.data_wide.estimate is None:
            return [None, None]
        return [pct(r.data_wide.estimate), span(r.data_wide.interval)]

    click.echo("\nreal accuracy per version (random control slice) vs selected tasks")
    if not any(r.control_n for r in rows):
        click.echo(
            "no annotations on control tasks yet (LABELWHEEL_CONTROL_FRACTION of the queue is "
            "served at random; its pre-labels measure the real accuracy)"
        )
        return
    click.echo(
        format_table(
            [
                "version",
                "control",
                "real",
                "95% CI",
                "real (PPI)",
                "95% CI",
                "on data",
                "95% CI",
                "selected",
                "on selected",
                "gap",
                "95% CI",
            ],
            [
                [
                    r.version,
                    r.control_n,
                    pct(r.real_accuracy),
                    span(r.real_interval),
                    *ppi(r),
                    *data_wide(r),
                    r.selected_n,
                    pct(r.selected_accuracy),
                    None if r.lift is None else f"{r.lift:+.0%}",
                    span(r.lift_interval, signed=True),
                ]
                for r in [*rows, pooled if pooled is not None else pooled_estimate(rows)]
            ],
        )
    )
    click.echo(
        "real = pre-labels approved on random control tasks (unbiased; Wilson 95% interval); "
        "real (PPI) = the same labels correcting the version's own calibrated confidence over "
        "its whole pool (prediction-powered, unbiased, normal 95% interval; (plain): under "
        f"{PPI_MIN_LABELS} control labels or no confidence recorded, the plain one stands); "
        "on data = the accuracy on the whole data: the control estimate weighs in for the "
        "unlabelled share only (the selector took the hard tasks out of it, so it is easier "
        "than the data), the version's cross-validated accuracy for the labelled share; "
        "on selected = on the selector's tasks (biased low by design); gap = real - selected "
        "(how much harder the selected tasks are; JSON key 'lift')"
    )


def _echo_lift(lift: Any) -> None:
    """Active learning's lift over random picks (labelwheel.lead.lift)."""
    if lift is None:
        return
    click.echo("\nactive learning vs random picks (control slice)")
    if lift.lift is None:
        click.echo(f"not measured: {lift.reason}")
        return
    lo, hi = lift.interval
    click.echo(
        f"at {lift.labels} labels per arm: selected labels {lift.active_accuracy:.0%}, random "
        f"labels {lift.random_accuracy:.0%} on held-out random tasks; lift {lift.lift:+.0%} "
        f"(95% CI {lo:+.0%}..{hi:+.0%}; {lift.n_control} control labels, {lift.folds} folds)"
    )
