"""``labelwheel embed``: a folder, an S3 prefix or a project's images into an embedding store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from labelwheel.cli_options import backbone_options, label_studio_options

__all__ = ["embed_command", "select_command"]


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
    help="Ray actors, one backbone each (default: the cluster's CPUs / --actor-cpus).",
)
@click.option(
    "--actor-cpus",
    type=click.IntRange(1, None),
    help="CPUs (inference threads) per Ray actor (default: a node's CPUs, at most 4).",
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
    actor_cpus: int | None,
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
            actor_cpus=actor_cpus,
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


@click.command("select")
@click.argument("store", type=click.Path(path_type=Path, file_okay=False))
@click.option("--n", "n", type=click.IntRange(1, None), required=True, help="How many to pick.")
@click.option(
    "--strategy",
    type=click.Choice(["kcenter", "kmeans", "typiclust", "probcover", "random"]),
    default="kcenter",
    show_default=True,
    help="A strategy that needs embeddings only (a store holds no model probabilities).",
)
@click.option(
    "--candidates",
    type=click.IntRange(1, None),
    help="Candidates kept per shard in stage one (default: --n).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run stage one as Ray tasks, one per shard: a cluster address (auto, "
    "ray://head:10001) or 'local'. The store must be at the same path on every node.",
)
@click.option(
    "--exclude",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="References never to pick, counted as covered (already labelled): one per line, or a "
    "CSV with a ref column such as an earlier --out.",
)
@click.option(
    "--coverage",
    is_flag=True,
    help="Also measure the pick's covering radius and mean distance over every stored vector.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="CSV of the picks: rank, ref, sha, shard, row (most informative first).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def select_command(
    store: Path,
    n: int,
    strategy: str,
    candidates: int | None,
    seed: int,
    ray_address: str | None,
    exclude: Path | None,
    coverage: bool,
    out: Path,
    as_json: bool,
) -> None:
    """Pick --n rows of the embedding store STORE in two stages: candidates per shard (read one
    shard at a time, or as Ray tasks with --ray), then the final pick over their union."""
    import csv
    import io

    from labelwheel.distributed.selection import select_store
    from labelwheel.fsio import atomic_write_bytes

    try:
        excluded = _read_refs(exclude) if exclude is not None else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise click.ClickException(f"cannot read {exclude}: {exc}") from None
    try:
        result = select_store(
            store,
            n,
            strategy,
            candidates=candidates,
            seed=seed,
            ray_address=ray_address,
            coverage=coverage,
            exclude=excluded,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # Ray unreachable or failing: one line, not a traceback
        raise click.ClickException(f"{exc.__class__.__name__}: {exc}") from None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "ref", "sha", "shard", "row"])
    for p in result.picks:
        writer.writerow([p.rank, p.ref, p.sha, p.shard, p.row])
    try:
        atomic_write_bytes(out, buf.getvalue().encode())
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from None
    summary = {
        "store": str(store),
        "out": str(out),
        "strategy": strategy,
        "picked": len(result.picks),
        "rows": result.rows,
        "shards": result.shards,
        "candidates": result.candidates,
        "excluded": result.excluded,
        "stage_one_s": round(result.stage_one_s, 3),
        "stage_two_s": round(result.stage_two_s, 3),
        "radius": result.radius,
        "mean_distance": result.mean_distance,
        "index": result.index_kind,
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    line = (
        f"{store}: picked {len(result.picks)} of {result.rows} rows ({strategy}, two stages: "
        f"{result.shards} shards → {result.candidates} candidates) → {out}"
    )
    if result.radius is not None:
        line += (
            f"; covering radius {result.radius:.4g}, mean distance "
            f"{result.mean_distance:.4g} ({result.index_kind} search)"
        )
    click.echo(line)


def _read_refs(path: Path) -> list[str]:
    """References from a file: one per line, or the ``ref`` column of a CSV with a header."""
    import csv

    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and "ref" in next(csv.reader([lines[0]])):
        return [row["ref"] for row in csv.DictReader(lines) if row.get("ref")]
    return [line.strip() for line in lines if line.strip()]
