"""``labelwheel serve``: run the ML backend with a development server."""

from __future__ import annotations

import logging
import sys
import textwrap

import click

from labelwheel.ml_backend.config import VARIABLES


def _epilog() -> str:
    lines = ["\b", "Environment variables:"]
    for var in VARIABLES:
        default = "unset" if var.default is None else var.default or "empty"
        lines.append(f"  {var.name} (default: {default})")
        lines.extend(
            textwrap.wrap(var.help, 92, initial_indent="      ", subsequent_indent="      ")
        )
    lines.append("")
    lines.append("\b")
    lines.append("Production: gunicorn -w 1 --threads 8 -b 0.0.0.0:9090 \\")
    lines.append("    'labelwheel.ml_backend:create_app()'")
    return "\n".join(lines)


@click.command("serve", epilog=_epilog(), context_settings={"max_content_width": 100})
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=9090, show_default=True, type=click.IntRange(1, 65535))
@click.option("--debug/--no-debug", default=False, help="Flask debug mode (never in production).")
def serve_command(host: str, port: int, debug: bool) -> None:
    """Run the Label Studio ML backend (development server, threaded).

    Configuration comes from the environment (listed below). A bad value stops start-up with a
    message naming the variable.
    """
    from labelwheel.ml_backend import create_app
    from labelwheel.ml_backend.config import ConfigError

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )  # other libraries: warnings only; labelwheel's own level is LABELWHEEL_LOG_LEVEL
    try:
        app = create_app()
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"error: cannot use MODEL_DIR: {exc}", err=True)
        sys.exit(2)
    try:
        app.run(host=host, port=port, debug=debug, threaded=True, use_reloader=False)
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc}", err=True)
        sys.exit(1)
