"""``labelwheel embed``: a folder, an S3 prefix or a project's images into an embedding store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from labelwheel.cli_options import backbone_options, label_studio_options

__all__ = ["embed_command"]


@click.command("embed")
@click.argument("source", required=False)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The embedding store (created, or resumed: references it holds are skipped). Put it "
    "under MODEL_DIR/stores/ and the ML backend and the lead tools use its vectors.",
)
@click.option("--project", "project_id", type=int, help="Embed this Label Studio project's tasks.")
@label_studio_options
@click.option(
    "--s3-endpoint-url",
    envvar="LABELWHEEL_S3_ENDPOINT_URL",
    show_envvar=True,
    help="Endpoint of an S3-compatible store for s3:// sources.",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run as a Ray Data job: a cluster address (auto, ray://head:10001) or 'local'.",
)
@click.option(
    "--actors",
    type=click.IntRange(1, None),
    help="Ray actors, one backbone each (default: the cluster's CPUs).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 4096),
    default=32,
    show_default=True,
    help="Images per batch (per worker).",
)
@click.option(
    "--shard-rows",
    type=click.IntRange(1, None),
    default=4096,
    show_default=True,
    help="Vectors per store shard.",
)
@backbone_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def embed_command(
    source: str | None,
    out: Path,
    project_id: int | None,
    url: str | None,
    api_key: str | None,
    s3_endpoint_url: str | None,
    ray_address: str | None,
    actors: int | None,
    batch_size: int,
    shard_rows: int,
    backbone: str,
    image_size: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Embed SOURCE (a folder or s3://bucket/prefix), or --project ID, into the store --out.

    In this process by default, or on a Ray cluster with --ray. A re-run embeds only what the
    store does not hold yet.
    """
    from labelwheel.distributed.job import run_embed
    from labelwheel.distributed.sources import EmbedSource

    if (source is None) == (project_id is None):
        raise click.UsageError("give SOURCE or --project ID (one of them)")
    if project_id is not None and (not url or not api_key):
        raise click.UsageError("--project needs --url and --api-key (or their variables)")
    spec = EmbedSource(
        source or "", project=project_id, url=url, api_key=api_key, endpoint_url=s3_endpoint_url
    )
    try:
        result = run_embed(
            spec,
            out,
            backbone=backbone,
            image_size=image_size,
            batch_size=batch_size,
            shard_rows=shard_rows,
            ray_address=ray_address,
            actors=actors,
            progress=not quiet,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # Label Studio or Ray unreachable: one line, not a traceback
        raise click.ClickException(f"{exc.__class__.__name__}: {exc}") from None
    if as_json:
        summary = {
            "store": str(out),
            "source": spec.description,
            "listed": result.listed,
            "embedded": result.embedded,
            "skipped": result.skipped,
            "failed": len(result.failed),
            "failures": [{"ref": r, "reason": e} for r, e in result.failed[:100]],
            "shards": result.shards,
        }
        click.echo(json.dumps(summary))
        return
    for _ref, reason in result.failed[:20]:
        click.echo(f"skipped {reason}", err=True)
    click.echo(
        f"{spec.description} → {out}: {result.embedded} embedded, {result.skipped} already in "
        f"the store, {len(result.failed)} failed ({result.shards} new shards)"
    )
