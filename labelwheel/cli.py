"""The ``labelwheel`` command line.

Sub-commands live in their own modules and are imported only when used, so ``labelwheel --help``
stays fast and does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from labelwheel import __version__

# name -> "module:attribute" of a click.Command
_COMMANDS: dict[str, str] = {
    "simulate": "labelwheel.simulate.cli:simulate_command",
    "serve": "labelwheel.ml_backend.cli:serve_command",
    "connect": "labelwheel.connect:connect_command",
    "doctor": "labelwheel.doctor.cli:doctor_command",
    "up": "labelwheel.demo.cli:up_command",
    "down": "labelwheel.demo.cli:down_command",
    "plan": "labelwheel.lead.cli:plan_command",
    "forecast": "labelwheel.lead.cli:forecast_command",
    "coverage": "labelwheel.lead.cli:coverage_command",
    "report": "labelwheel.lead.cli_report:report_command",
    "ingest": "labelwheel.ingest.cli:ingest_command",
    "audit": "labelwheel.lead.cli:audit_command",
    "embed": "labelwheel.distributed.cli:embed_command",
    "select": "labelwheel.distributed.cli:select_command",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(module_name)
        command = getattr(module, attr)
        if not isinstance(command, click.Command):  # pragma: no cover - programming error
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labelwheel")
def cli() -> None:
    """labelwheel: active learning for Label Studio.

    Pre-labels images with a pretrained backbone, ranks unlabelled tasks by how much they would
    teach the model, retrains from what annotators approve or correct, and tells data leads how
    many labels they still need.
    """


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``labelwheel`` console script."""
    return cli.main(args=argv, prog_name="labelwheel")


if __name__ == "__main__":  # pragma: no cover
    main()
