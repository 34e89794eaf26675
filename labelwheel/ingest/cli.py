"""``labelwheel ingest SOURCE --project ID``: the funnel before Label Studio."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import click

from labelwheel.cli_options import backbone_options, label_studio_options

__all__ = ["ingest_command"]


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


@click.command("ingest")
@click.argument("source")
@click.option("--project", "project_id", type=int, required=True, help="Label Studio project id.")
@click.option("--budget", type=int, help="Import at most N images: the N most informative.")
@click.option("--dry-run", is_flag=True, help="Analyse and report; import and record nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option(
    "--cost-per-label", type=float, help="Price of one label: what the dropped images would cost."
)
@click.option(
    "--near-threshold",
    type=click.FloatRange(0.5, 1.0),
    default=0.995,
    show_default=True,
    help="Similarity (correlation of blurred 16×16 thumbnails) from which two images are near "
    "duplicates.",
)
@label_studio_options
@click.option(
    "--s3-endpoint-url",
    envvar="LABELWHEEL_S3_ENDPOINT_URL",
    show_envvar=True,
    help="Endpoint of an S3-compatible store for s3:// sources (default: boto3's, which also "
    "reads AWS_ENDPOINT_URL); credentials from the AWS_* variables.",
)
@click.option(
    "--ledger",
    "ledger_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The ingest ledger (default: <cache dir>/ingest/<host>-<port>-project<ID>.sqlite3).",
)
@click.option(
    "--model-dir",
    envvar="MODEL_DIR",
    show_envvar=True,
    type=click.Path(path_type=Path),
    help="The ML backend's state dir (its embedding cache is shared).",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help="Embedding cache (default: MODEL_DIR, else LABELWHEEL_CACHE_DIR, else "
    "~/.cache/labelwheel).",
)
@backbone_options
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--import-batch", type=click.IntRange(1, 500), default=20, hidden=True)
def ingest_command(
    source: str,
    project_id: int,
    budget: int | None,
    dry_run: bool,
    as_json: bool,
    cost_per_label: float | None,
    near_threshold: float,
    url: str | None,
    api_key: str | None,
    s3_endpoint_url: str | None,
    ledger_path: Path | None,
    model_dir: Path | None,
    cache_dir: Path | None,
    backbone: str,
    image_size: int,
    seed: int,
    quiet: bool,
    import_batch: int,
) -> None:
    """Screen the images in SOURCE (a folder or s3://bucket/prefix) and import only what passes.

    Each image is read once: unreadable or corrupt files, exact duplicates (same bytes) and near
    duplicates (re-encoded, resized) of each other or of the project's images are dropped with
    the reason. The rest is scored (bits of the project's current model when it has labels,
    else diversity; and anomaly) and imported, the most informative first (only N with
    --budget), each task carrying its scores in its data (labelwheel_bits, labelwheel_diversity,
    labelwheel_anomaly, labelwheel_rank, labelwheel_sha256). A ledger makes re-runs import
    nothing twice and lets an interrupted run resume.
    """
    import requests

    from labelwheel.ingest.run import IngestOptions, ingest
    from labelwheel.ingest.sources import open_source
    from labelwheel.ingest.state import default_ledger_path
    from labelwheel.pool import default_cache_dir

    if budget is not None and budget < 0:
        raise _fail(f"--budget must be at least 0, got {budget}")
    if cost_per_label is not None and (cost_per_label < 0 or not math.isfinite(cost_per_label)):
        raise _fail("--cost-per-label must be a non-negative number")
    if not url:
        raise _fail("no Label Studio URL: pass --url or set LABEL_STUDIO_URL")
    if not api_key:
        raise _fail("no Label Studio API key: pass --api-key or set LABEL_STUDIO_API_KEY")
    from labelwheel.ls_api import LabelStudioClient, LabelStudioError

    state_dir = cache_dir or model_dir or default_cache_dir()
    ledger = ledger_path or default_ledger_path(state_dir, url, project_id)
    progress = not quiet and not as_json and sys.stderr.isatty()
    progress = (progress or bool(os.environ.get("LABELWHEEL_PROGRESS"))) and not quiet
    options = IngestOptions(
        budget=budget,
        dry_run=dry_run,
        near_threshold=near_threshold,
        cost_per_label=cost_per_label,
        backbone=backbone,
        image_size=image_size,
        seed=seed,
        progress=progress,
        import_batch=import_batch,
    )
    try:
        src = open_source(source, endpoint_url=s3_endpoint_url)
        client = LabelStudioClient(url, api_key, timeout=120)
        report = ingest(
            client, project_id, src, ledger_path=ledger, cache_dir=state_dir, options=options
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except LabelStudioError as exc:
        raise _fail(str(exc)) from None
    except requests.ConnectionError as exc:
        raise _fail(f"cannot reach Label Studio: {str(exc)[:200]}") from None
    except requests.Timeout as exc:
        raise _fail(f"Label Studio did not answer in time: {str(exc)[:200]}") from None
    data = report.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2, allow_nan=False))
        return
    _print_report(data)


def _print_report(d: dict[str, Any]) -> None:
    click.echo(
        f"{d['source']} → project {d['project']} ({d['project_tasks']} tasks, "
        f"{d['project_labeled']} labelled)"
    )
    click.echo(
        f"listed {d['listed']}, read {d['read']} ({d['images_per_second']:.1f} images/s), "
        f"skipped {d['skipped']['total']} decided by earlier runs"
    )
    dropped = d["dropped"]
    click.echo(f"dropped {dropped['total']}:")
    for reason, n in dropped["by_reason"].items():
        click.echo(f"  {reason.replace('_', ' '):16s} {n}")
    for item in dropped["items"][:20]:
        why = item["reason"].replace("_", " ")
        extra = item.get("detail") or ""
        if item.get("duplicate_of"):
            extra = f"of {item['duplicate_of']}"
            if item.get("similarity") is not None:
                extra += f" (similarity {item['similarity']:.4f})"
        click.echo(f"    {item['key']}: {why}{': ' + extra if extra else ''}")
    if dropped["total"] > 20:
        click.echo(f"    ... and {dropped['total'] - 20} more (--json lists all)")
    cost = d["cost_of_dropped"]
    if cost is not None:
        click.echo(
            f"labelling the dropped images would have cost {cost['avoided']:,.2f} "
            f"({dropped['total']} × {cost['per_label']:,.2f})"
        )
    verb = "would import" if d["dry_run"] else "imported"
    count = d.get("would_import", d.get("imported", 0))
    line = f"passed {d['passed']}; {verb} {count} (scored by {d['scored_by']})"
    if d["deferred"]:
        line += f"; {d['deferred']} over the budget left for a later run"
    click.echo(line)
    for row in d["tasks"][:10]:
        bits = f"{row['labelwheel_bits']:.3f} bits, " if "labelwheel_bits" in row else ""
        task = f" → task {row['task_id']}" if row.get("task_id") else ""
        click.echo(
            f"  #{row['labelwheel_rank']} {row['key']}: {bits}diversity "
            f"{row['labelwheel_diversity']:.3f}, anomaly {row['labelwheel_anomaly']:.3f}{task}"
        )
    for err in d["import_errors"]:
        click.echo(f"  not imported: {err['key']}: {err['error']}", err=True)
