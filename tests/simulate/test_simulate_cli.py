"""`labelwheel simulate` end to end on real digits, and its errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from labelwheel.cli import cli


def _run(args: list[str]) -> object:
    return CliRunner().invoke(cli, ["simulate", *args], catch_exceptions=False)


def test_simulate_writes_curves_plot_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    result = _run(
        [
            "--dataset", "digits", "--features", "raw", "--strategies", "random,margin",
            "--budget", "40", "--batch-size", "10", "--seeds", "2", "--out", str(out),
            "--no-progress",
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("curves.json", "curves.csv", "curves.png", "summary.txt"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "curves.json").read_text())
    assert data["labels"] == [10, 20, 30, 40]
    assert data["seeds"] == [0, 1]
    assert set(data["accuracy"]) == {"random", "margin"}
    assert np.asarray(data["accuracy"]["margin"]).shape == (2, 4)
    assert data["meta"]["features"] == "raw"
    assert {row["strategy"] for row in data["summary"]} == {"random", "margin"}
    rows = (out / "curves.csv").read_text().splitlines()
    assert rows[0] == "strategy,seed,labels,accuracy"
    assert len(rows) == 1 + 2 * 2 * 4
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "full-data accuracy" in result.output
    assert "margin" in result.output


def test_simulate_accepts_an_npz_of_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (3, 5))
    y = np.repeat([0, 1, 2], 40)
    X = centres[y] + rng.normal(0, 1, (120, 5))
    path = tmp_path / "blobs.npz"
    np.savez(path, X=X, y=y)
    result = _run(
        [
            "--dataset", str(path), "--strategies", "random,entropy", "--budget", "30",
            "--seeds", "0,7", "--out", str(tmp_path / "o"), "--no-progress",
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "o" / "curves.json").read_text())
    assert data["seeds"] == [0, 7]
    assert data["n_pool"] == 90 and data["n_test"] == 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "random,nope"], "unknown strategy nope"),
        (["--strategies", "margin,margin"], "listed twice"),
        (["--dataset", "cifar"], "unknown data set 'cifar'"),
        (["--dataset", "missing.npz"], "no such file"),
        (["--budget", "100000"], "exceeds the pool"),
        (["--budget", "0"], "--budget"),
        (["--seeds", "many"], "neither a count"),
        (["--seeds", "0"], "positive count"),
        (["--features", "pixels"], "--features"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = _run(["--dataset", "digits", "--out", str(tmp_path / "o"), "--no-progress", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "curves.json").exists()


def test_npz_without_labels_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, X=np.zeros((10, 3)))
    result = _run(["--dataset", str(path), "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 2
    assert "'X' and 'y'" in result.output
    (tmp_path / "junk.npz").write_text("not a zip")
    result = _run(["--dataset", str(tmp_path / "junk.npz"), "--no-progress"])
    assert result.exit_code == 2
    assert "could not read" in result.output


def test_simulate_semi_supervised_and_balanced_options(tmp_path: Path) -> None:
    out = tmp_path / "semi"
    result = _run(
        [
            "--dataset", "digits", "--features", "raw", "--strategies", "margin",
            "--budget", "30", "--seeds", "1", "--out", str(out), "--no-progress",
            "--semi-supervised", "spreading", "--balanced",
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "curves.json").read_text())["meta"]
    assert meta["semi_supervised"] == "spreading" and meta["balanced"] is True
    bad = CliRunner().invoke(cli, ["simulate", "--semi-supervised", "magic"])
    assert bad.exit_code == 2 and "magic" in bad.output
