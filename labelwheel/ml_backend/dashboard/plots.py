"""``/dashboard/*.png``: the plots (matplotlib, Agg), cached on the project's analysis."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from flask import Response

from labelwheel.ml_backend.dashboard.analysis import Analysis, _analysis, _forecast
from labelwheel.ml_backend.dashboard.common import (
    DEFAULT_TARGET,
    _float_arg,
    _ls_errors,
    _require_project,
    bp,
)


def _png(data: bytes) -> Response:
    resp = Response(data, mimetype="image/png")
    resp.headers["Cache-Control"] = "private, max-age=60"
    return resp


def _cached_png(a: Analysis, key: str, make: Any) -> Response:
    data = a.pngs.get(key)
    if data is None:
        data = make()
        a.pngs[key] = data
    return _png(data)


@bp.get("/dashboard/coverage.png")
@_ls_errors
def coverage_png() -> Response:
    """The coverage map."""
    from labelwheel.lead.coverage import render_coverage_png

    a = _analysis(_require_project())
    return _cached_png(a, "coverage", lambda: render_coverage_png(a.coverage, title="Coverage map"))


@bp.get("/dashboard/forecast.png")
@_ls_errors
def forecast_png() -> Response:
    """The learning curve with the forecast for ``target``."""
    from labelwheel.lead.forecast import render_forecast_png

    a = _analysis(_require_project())
    target = _float_arg("target", DEFAULT_TARGET, 0.01, 0.999) or DEFAULT_TARGET
    return _cached_png(a, f"forecast-{target}", lambda: render_forecast_png(_forecast(a, target)))


@bp.get("/dashboard/balance.png")
@_ls_errors
def balance_png() -> Response:
    """Class balance as a bar chart."""
    a = _analysis(_require_project())
    counts = a.report.class_balance
    return _cached_png(
        a,
        "balance",
        lambda: _bar_png(
            list(counts), [float(v) for v in counts.values()], "labels", "Class balance"
        ),
    )


@bp.get("/dashboard/acceptance.png")
@_ls_errors
def acceptance_png() -> Response:
    """Pre-label acceptance rate per model version."""
    a = _analysis(_require_project())
    rows = a.report.acceptance
    return _cached_png(
        a,
        "acceptance",
        lambda: _bar_png(
            [r.version for r in rows],
            [float(r.rate or 0.0) for r in rows],
            "accepted unchanged",
            "Pre-label acceptance per version",
            percent=True,
            notes=[f"n={r.total}" for r in rows],
        ),
    )


def _bar_png(
    names: list[str],
    values: list[float],
    ylabel: str,
    title: str,
    *,
    percent: bool = False,
    notes: list[str] | None = None,
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if names:
        bars = ax.bar(range(len(names)), values, color="#1f5fbf")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(
            names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center"
        )
        for i, bar in enumerate(bars):
            text = f"{values[i]:.0%}" if percent else f"{values[i]:g}"
            if notes:
                text += f"\n{notes[i]}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        if percent:
            ax.set_ylim(0, 1.15)
    else:
        ax.text(
            0.5, 0.5, "nothing yet", ha="center", va="center", transform=ax.transAxes, color="#777"
        )
        ax.set_xticks([])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    buf = BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
