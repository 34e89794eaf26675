"""The README stays true: it lists every backend setting and every CLI command."""

from __future__ import annotations

from pathlib import Path

from labelwheel.cli import _COMMANDS
from labelwheel.ml_backend.config import VARIABLES

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_lists_every_environment_variable() -> None:
    missing = [v.name for v in VARIABLES if f"`{v.name}`" not in README]
    assert not missing, f"README's configuration table lacks {missing}"


def test_readme_names_every_command() -> None:
    missing = [name for name in _COMMANDS if f"labelwheel {name}" not in README]
    assert not missing, f"README's command table lacks {missing}"


def test_readme_quick_start_commands_exist_in_makefile() -> None:
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text(encoding="utf-8")
    for target in ("up", "test", "down", "clean"):
        assert f"\n{target}:" in makefile
        assert f"make {target}" in README
