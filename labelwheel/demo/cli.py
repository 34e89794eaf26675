"""``labelwheel up`` / ``labelwheel down``: the command line of the demo."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click

from labelwheel.demo.run import (
    run_up,
)
from labelwheel.demo.state import (
    DEFAULT_BACKEND_PORT,
    DEFAULT_LS_PORT,
    DEFAULT_N_IMAGES,
    DemoError,
    DemoState,
    _AlreadyRunning,
    _Stop,
    stop_recorded_processes,
)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


@click.command("up")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".state"),
    show_default=True,
    help="Where Label Studio's data, the backend's MODEL_DIR, the demo images, logs and "
    "credentials are kept (re-used by the next run).",
)
@click.option(
    "--ls-port", type=click.IntRange(1, 65535), default=DEFAULT_LS_PORT, show_default=True
)
@click.option(
    "--backend-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_BACKEND_PORT,
    show_default=True,
)
@click.option(
    "--label-studio-bin",
    "ls_bin",
    default=None,
    help="The label-studio executable (default: env LABELWHEEL_LS_BIN, else "
    ".venv-ls/bin/label-studio).",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Return once everything runs; stop later with `labelwheel down`.",
)
@click.option(
    "--images",
    "n_images",
    type=click.IntRange(10, 5000),
    default=DEFAULT_N_IMAGES,
    show_default=True,
    help="Number of demo images (only when the state dir has none yet).",
)
def up_command(
    state_dir: Path,
    ls_port: int,
    backend_port: int,
    ls_bin: str | None,
    detach: bool,
    n_images: int,
) -> None:
    """Start Label Studio and the labelwheel backend with a demo project (what `make up` runs).

    Creates (once) an admin user, a demo image-classification project with real images
    (handwritten digits), connects the backend and imports its predictions, then prints the URL,
    the login and what to do next. Stays in the foreground until Ctrl-C unless --detach.
    """
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_up(
            state_dir,
            ls_port=ls_port,
            backend_port=backend_port,
            ls_bin=ls_bin,
            detach=detach,
            n_images=n_images,
        )
    except _AlreadyRunning as exc:
        click.echo(str(exc))
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    except _Stop:
        click.echo("interrupted.")
        sys.exit(130)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("down")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".state"),
    show_default=True,
    help="The state dir `labelwheel up` used.",
)
def down_command(state_dir: Path) -> None:
    """Stop the Label Studio and backend processes `labelwheel up --detach` started.

    Only processes recorded in the state dir that are still the very processes started there
    are stopped (a re-used process id is left alone). The state is kept (`make clean` removes it).
    """
    try:
        state = DemoState.load(state_dir.resolve())
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    if state is None:
        click.echo(f"nothing to stop: no labelwheel state in {state_dir}")
        return
    stopped = stop_recorded_processes(state, echo=click.echo)
    click.echo("stopped." if stopped else "nothing was running.")
