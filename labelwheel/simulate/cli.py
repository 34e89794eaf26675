"""``labelwheel simulate``: the command line of the simulator."""

from __future__ import annotations

from pathlib import Path

import click

from labelwheel.semisup import DEFAULT_SEMI, SEMI_MODES
from labelwheel.simulate.data import load_features
from labelwheel.simulate.loop import DEFAULT_STRATEGIES, available_strategies, run_simulation


def _parse_seeds(value: str) -> list[int]:
    text = value.strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            count = int(text)
            if count < 1:
                raise click.BadParameter("must be a positive count or a comma-separated list")
            seeds = list(range(count))
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is neither a count (e.g. 5) nor a comma list of seeds (e.g. 0,1,2)"
        ) from exc
    if len(set(seeds)) != len(seeds) or not seeds:
        raise click.BadParameter("seeds must be distinct and at least one")
    return seeds


@click.command("simulate")
@click.option(
    "--dataset",
    default="digits",
    show_default=True,
    help="mnist5k, digits, lfw, or an .npz file with arrays X (features or images) and y.",
)
@click.option(
    "--features",
    type=click.Choice(["backbone", "raw"]),
    default=None,
    help="Backbone embeddings or standardised raw pixels [default: raw for digits, else backbone].",
)
@click.option(
    "--backbone",
    default="efficientnet-lite0",
    show_default=True,
    help="Image backbone for --features backbone (efficientnet-lite0..4, torchvision:<name>).",
)
@click.option(
    "--image-size", type=click.IntRange(16, 1024), default=None, help="Backbone input px."
)
@click.option(
    "--strategies",
    default=",".join(DEFAULT_STRATEGIES),
    show_default=True,
    help="Comma-separated selector names; 'all' for every strategy.",
)
@click.option(
    "--budget", type=click.IntRange(min=1), default=200, show_default=True, help="Labels to reach."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Labels revealed per round.",
)
@click.option("--seeds", default="5", show_default=True, help="A count (5) or a list (0,1,2).")
@click.option(
    "--test-size",
    type=click.FloatRange(0.05, 0.9),
    default=0.25,
    show_default=True,
    help="Held-out fraction (stratified).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("simulation"),
    show_default=True,
    help="Directory for curves.json, curves.csv, curves.png and summary.txt.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Embedding cache [default: $LABELWHEEL_CACHE or ~/.cache/labelwheel].",
)
@click.option(
    "--semi-supervised",
    "semi_supervised",
    type=click.Choice(list(SEMI_MODES)),
    default=DEFAULT_SEMI,
    show_default=True,
    help="The head's use of the unlabelled pool: label spreading on its kNN graph, "
    "self-training, or none (the plain head); as LABELWHEEL_HEAD_SEMI in the backend.",
)
@click.option(
    "--balanced/--no-balanced",
    default=False,
    show_default=True,
    help="Class-balanced batches: round-robin over the model's predicted classes.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def simulate_command(
    dataset: str,
    features: str | None,
    backbone: str,
    image_size: int | None,
    strategies: str,
    budget: int,
    batch_size: int,
    seeds: str,
    test_size: float,
    out_dir: Path,
    cache_dir: Path | None,
    semi_supervised: str,
    balanced: bool,
    progress: bool,
) -> None:
    """Simulate active learning on a labelled data set and compare selectors to random.

    Starts from zero labels, lets each strategy pick --batch-size samples per round, retrains a
    logistic regression and records held-out accuracy up to --budget labels, for every seed.
    Prints, per strategy, the labels needed to reach 95% of the full-data accuracy.
    """
    from sklearn.model_selection import train_test_split

    seed_list = _parse_seeds(seeds)
    try:
        known = available_strategies()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    if names == ["all"]:
        names = list(known)
    unknown = [s for s in names if s not in known]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown strategy {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(known)}",
            param_hint="--strategies",
        )
    if len(set(names)) != len(names):
        raise click.BadParameter("a strategy is listed twice", param_hint="--strategies")
    feature_kind = features or ("raw" if dataset == "digits" else "backbone")
    try:
        X, y, class_names = load_features(
            dataset, feature_kind, image_size, backbone, cache_dir, progress=progress
        )
    except ValueError as exc:  # unknown data set or backbone, unreadable file, bad image size
        raise click.UsageError(str(exc)) from exc
    try:
        X_pool, X_test, y_pool, y_test = train_test_split(
            X, y, test_size=test_size, random_state=0, stratify=y
        )
    except ValueError as exc:
        raise click.BadParameter(f"cannot split the data: {exc}", param_hint="--dataset") from exc
    if budget > len(y_pool):
        raise click.BadParameter(
            f"budget {budget} exceeds the pool of {len(y_pool)} samples", param_hint="--budget"
        )
    meta = {
        "dataset": dataset,
        "features": feature_kind,
        "backbone": backbone if feature_kind == "backbone" else None,
        "image_size": image_size,
        "test_size": test_size,
        "class_names": list(class_names),
    }
    try:
        results = run_simulation(
            X_pool,
            y_pool,
            X_test,
            y_test,
            names,
            budget=budget,
            batch_size=batch_size,
            seeds=seed_list,
            progress=progress,
            meta=meta,
            semi_supervised=semi_supervised,
            balanced=balanced,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    paths = results.save(out_dir, title=f"{dataset} ({feature_kind} features)")
    text = results.format_summary()
    (out_dir / "summary.txt").write_text(text + "\n")
    click.echo(text)
    click.echo("wrote " + ", ".join(str(p) for p in [*paths, out_dir / "summary.txt"]))
