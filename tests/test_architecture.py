"""The floors of the package (docs/architecture.md): a floor imports only the floors below it.

Checked on the source (every ``import`` statement, lazy ones inside functions included), so a
new upward arrow fails here before anyone reads the diagram.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "labelwheel"

# Everything below the web server: none of it may import labelwheel.ml_backend.
LOWER_FLOORS = (
    "media",
    "features",
    "head.py",
    "pool",
    "selectors",
    "records.py",
    "fsio.py",
    "npyio.py",
    "datasets.py",
    "label_config",
    "lead",
    "simulate",
    "ingest",
    "distributed",
    "doctor",
    "cli.py",
    "cli_options.py",
    "connect.py",
    "ls_api.py",
    "ls_transport.py",
)
# The selectors are pure numpy / scikit-learn / faiss: no I/O, no web, no images.
SELECTOR_FORBIDDEN = ("requests", "flask", "PIL", "sqlite3", "torch", "labelwheel.media")


def _modules(entry: str) -> list[Path]:
    path = PACKAGE / entry
    if path.is_file():
        return [path]
    return sorted(path.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _lower_modules() -> list[Path]:
    found = [m for entry in LOWER_FLOORS for m in _modules(entry)]
    assert found, "the lower floors exist"
    return found


@pytest.mark.parametrize("module", _lower_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_lower_floors_never_import_the_backend(module: Path) -> None:
    upward = sorted(
        n
        for n in _imports(module)
        if n == "labelwheel.ml_backend" or n.startswith("labelwheel.ml_backend.")
    )
    assert not upward, f"{module.relative_to(PACKAGE)} imports {upward}"


def test_selectors_do_no_io() -> None:
    for module in _modules("selectors"):
        bad = sorted(
            n
            for n in _imports(module)
            for f in SELECTOR_FORBIDDEN
            if n == f or n.startswith(f + ".")
        )
        assert not bad, f"{module.relative_to(PACKAGE)} imports {bad}"


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from labelwheel.ml_backend.store import Store\n")
    assert "labelwheel.ml_backend.store" in _imports(source)
