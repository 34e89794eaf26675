"""What the data lead's commands share (:mod:`labelwheel.lead.cli`,
:mod:`labelwheel.lead.cli_report`): the source options, turning expected failures into one-line
errors, loading the pool of a source, and the output for people (tables) and scripts (JSON).

A source is a Label Studio project (``--project ID`` with ``--url``/``--api-key`` or the env
variables ``LABEL_STUDIO_URL``/``LABEL_STUDIO_API_KEY``) or a folder of images (``--images DIR``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from labelwheel.cli_options import backbone_options, label_studio_options

__all__ = [
    "Loaded",
    "emit_json",
    "fail",
    "format_table",
    "friendly_errors",
    "load_source",
    "money",
    "skipped_note",
    "source_options",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Loaded:
    """A pool with the connections it came from (``client`` and ``store`` are None offline)."""

    pool: Any
    client: Any
    store: Any


# ------------------------------------------------------------------------------------ options


def source_options(func: F) -> F:
    """The options every lead command takes: the source (``--project`` or ``--images``, Label
    Studio's ``--url``/``--api-key``), ``--model-dir``, ``--cache-dir``, the backbone, ``--seed``,
    ``--json`` and ``--quiet``. The command gets them in ``**kw`` for :func:`load_source`."""
    options = [
        click.option("--project", "project_id", type=int, help="Label Studio project id."),
        click.option(
            "--images",
            "images_dir",
            type=click.Path(path_type=Path),
            help="Work offline on a folder of images (labels from sub-folders or labels.csv).",
        ),
        label_studio_options,
        click.option(
            "--model-dir",
            envvar="MODEL_DIR",
            show_envvar=True,
            type=click.Path(path_type=Path),
            help="The ML backend's state dir: model versions, acceptance, embedding cache.",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(path_type=Path),
            help="Embedding cache (default: MODEL_DIR, else LABELWHEEL_CACHE_DIR, else "
            "~/.cache/labelwheel).",
        ),
        backbone_options,
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# ------------------------------------------------------------------------------------- errors


def fail(message: str) -> click.ClickException:
    """The error to raise for a bad invocation: click prints ``Error: message``, exit status 1."""
    return click.ClickException(message)


def friendly_errors(func: F) -> F:
    """Turn expected failures into one-line messages with exit status 1 (no tracebacks)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import requests

        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except ValueError as exc:  # bad input, unsupported config, unknown project, ...
            raise fail(str(exc)) from None
        except requests.ConnectionError as exc:
            raise fail(f"cannot reach Label Studio: {_short(exc)}") from None
        except requests.Timeout as exc:
            raise fail(f"Label Studio did not answer in time: {_short(exc)}") from None
        except RuntimeError as exc:
            if type(exc).__name__ == "LabelStudioError":
                raise fail(str(exc)) from None
            raise

    return wrapper  # type: ignore[return-value]


def _short(exc: BaseException, n: int = 200) -> str:
    """``exc``'s message cut to ``n`` characters."""
    text = str(exc)
    return text if len(text) <= n else text[: n - 1] + "…"


# ------------------------------------------------------------------------------------ loading


def _client(url: str | None, api_key: str | None) -> Any:
    """A Label Studio client, or a clear error when the URL or the key is missing."""
    if not url:
        raise fail("no Label Studio URL: pass --url or set LABEL_STUDIO_URL")
    if not api_key:
        raise fail("no Label Studio API key: pass --api-key or set LABEL_STUDIO_API_KEY")
    from labelwheel.ls_api import LabelStudioClient

    return LabelStudioClient(url, api_key)


def load_source(
    kw: dict[str, Any],
    *,
    labeled_only: bool = False,
    need_project: bool = False,
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> Loaded:
    """The pool of ``--project`` or ``--images`` (``kw``: the :func:`source_options`). ``keep``:
    of a project, embed only the tasks it keeps (``pool.tasks`` still holds them all)."""
    from labelwheel.lead.sources import open_store
    from labelwheel.pool import default_cache_dir, load_folder_pool, load_project_pool

    project_id, images_dir = kw["project_id"], kw["images_dir"]
    if (project_id is None) == (images_dir is None):
        raise fail("give exactly one of --project ID or --images DIR")
    if need_project and project_id is None:
        raise fail("this needs a Label Studio project (--project ID), not --images")
    cache_dir = kw["cache_dir"] or kw["model_dir"] or default_cache_dir()
    progress = not kw["quiet"] and not kw["as_json"] and sys.stderr.isatty()
    progress = progress or bool(os.environ.get("LABELWHEEL_PROGRESS"))
    common = {
        "backbone": kw["backbone"],
        "image_size": kw["image_size"],
        "cache_dir": cache_dir,
        "progress": progress and not kw["quiet"],
    }
    if images_dir is not None:
        return Loaded(load_folder_pool(images_dir, **common), None, None)
    client = _client(kw["url"], kw["api_key"])
    if keep is None:
        pool = load_project_pool(client, project_id, labeled_only=labeled_only, **common)
        return Loaded(pool, client, open_store(kw["model_dir"]))
    all_tasks = list(client.iter_tasks(project_id, fields="all"))
    kept = [t for t in all_tasks if keep(t)]
    if all_tasks and not kept:
        raise fail(f"project {project_id} has no labelled tasks yet")
    pool = load_project_pool(client, project_id, tasks=kept or all_tasks, **common)
    pool.tasks = all_tasks
    return Loaded(pool, client, open_store(kw["model_dir"]))


def skipped_note(pool: Any) -> None:
    """Warn on stderr when the pool skipped items (unreadable images), naming the first."""
    if pool.skipped:
        click.echo(
            f"warning: {len(pool.skipped)} item(s) skipped (unreadable image), e.g. "
            f"{pool.skipped[0][0]}: {pool.skipped[0][1]}",
            err=True,
        )


# ------------------------------------------------------------------------------------- output


def emit_json(data: Any) -> None:
    """Print ``data`` as one indented JSON document (numpy numbers and paths allowed, no NaN)."""
    click.echo(json.dumps(data, indent=2, default=_json_default, allow_nan=False))


def _json_default(obj: Any) -> Any:
    """numpy integers and floats as Python numbers, paths as strings; anything else is an error."""
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: numeric columns right-aligned, the rest left-aligned, None as "–"."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    numeric = [
        all(_is_number(row[i]) for row in rows if row[i] is not None) for i in range(len(headers))
    ]

    def fmt(vals: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(vals)
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt(list(headers)), "  ".join("-" * w for w in widths)]
    lines += [fmt(row) for row in cells]
    return "\n".join(lines)


def _is_number(v: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    """One table cell: floats to 3 places (whole, with thousands separators, from 1,000), ints
    with thousands separators from 10,000, None as "–"."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    return str(v)


def money(x: float | None) -> str:
    """An amount with two decimals and thousands separators; None as "–"."""
    return "–" if x is None else f"{x:,.2f}"
