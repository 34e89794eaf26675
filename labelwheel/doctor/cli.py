"""``labelwheel doctor``: the command (the checks live in :mod:`labelwheel.doctor`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from labelwheel.cli_options import basic_auth_options, label_studio_options

_EPILOG = (
    "Exit status: 0 when every check passed (warnings and skipped checks allowed), 1 when any "
    "check failed, 2 on a usage error."
)


@click.command("doctor", epilog=_EPILOG)
@click.option("--project", "project_id", type=int, required=True, help="Label Studio project id.")
@label_studio_options
@click.option(
    "--backend-url",
    envvar="LABELWHEEL_BACKEND_URL",
    show_envvar=True,
    default=None,
    help="The backend's URL as Label Studio reaches it (default: the project's registered "
    "ML backend).",
)
@basic_auth_options("Basic-auth user the backend was started with (optional: then checked too).")
@click.option(
    "--local-files-root",
    envvar="LABELWHEEL_LOCAL_FILES_ROOT",
    show_envvar=True,
    type=click.Path(path_type=Path),
    default=None,
    help="Where /data/local-files/?d=... paths resolve, as for the backend.",
)
@click.option(
    "--allowed-hosts",
    envvar="LABELWHEEL_ALLOWED_HOSTS",
    show_envvar=True,
    default="",
    help="Comma-separated image hosts the backend may fetch from, as for the backend.",
)
@click.option(
    "--sample",
    "sample_tasks",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="How many tasks to scan for URL forms (one image per form and storage is fetched).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 600),
    default=10.0,
    show_default=True,
    help="HTTP timeout per request (s).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON for scripts.")
def doctor_command(
    project_id: int,
    url: str | None,
    api_key: str | None,
    backend_url: str | None,
    basic_auth_user: str | None,
    basic_auth_pass: str | None,
    local_files_root: Path | None,
    allowed_hosts: str,
    sample_tasks: int,
    timeout: float,
    as_json: bool,
) -> None:
    """Check a project's whole path to the backend; one line per check, with the fix.

    Label Studio reachable and its version; the API token valid and its kind (legacy or
    personal access token, and that it refreshes); the project and its label config; the ML
    backend registered, Label Studio's own check of it, and GET /health from here; the webhook
    present and carrying an auth header the backend accepts; for each storage and each URL form
    in a sample of the tasks, one image fetched end to end and decoded. Run it with the
    backend's environment (same variables as `labelwheel serve`).
    """
    if not url:
        raise click.UsageError("no Label Studio URL: pass --url or set LABEL_STUDIO_URL")
    if not api_key:
        raise click.UsageError("no API key: pass --api-key or set LABEL_STUDIO_API_KEY")
    if bool(basic_auth_user) != bool(basic_auth_pass):
        raise click.UsageError(
            "give both --basic-auth-user and --basic-auth-pass (BASIC_AUTH_USER/BASIC_AUTH_PASS) "
            "or neither"
        )
    if local_files_root is not None and not local_files_root.is_dir():
        raise click.UsageError(f"--local-files-root {local_files_root} is not a directory")
    hosts = frozenset(h.strip().lower() for h in allowed_hosts.split(",") if h.strip())

    from labelwheel.doctor import DoctorOptions, exit_code, render_json, render_text, run_doctor

    options = DoctorOptions(
        ls_url=url,
        api_key=api_key,
        project_id=project_id,
        backend_url=backend_url or None,
        basic_auth=(basic_auth_user, basic_auth_pass)
        if basic_auth_user and basic_auth_pass
        else None,
        local_files_root=local_files_root.resolve() if local_files_root else None,
        allowed_hosts=hosts,
        sample_tasks=sample_tasks,
        timeout=timeout,
    )
    checks = run_doctor(options)
    click.echo(render_json(checks) if as_json else render_text(checks))
    sys.exit(exit_code(checks))
