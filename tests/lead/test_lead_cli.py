"""The lead commands offline on a folder of real images (``--images DIR``), and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from labelwheel.cli import cli

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, mnist_images) -> Path:
    """60 MNIST digits as PNGs: 36 labelled (classes 0, 1, 7 in sub-folders), 24 unlabelled."""
    from PIL import Image

    imgs, y = mnist_images
    root = tmp_path_factory.mktemp("images")
    count: dict[int, int] = {}
    n_unlabelled = 0
    for img, lab in zip(imgs, y, strict=True):
        lab = int(lab)
        if lab not in (0, 1, 7):
            continue
        if count.get(lab, 0) < 12:
            folder = root / str(lab)
            count[lab] = count.get(lab, 0) + 1
        elif n_unlabelled < 24:
            folder = root / "unlabelled"
            n_unlabelled += 1
        else:
            continue
        folder.mkdir(exist_ok=True)
        Image.fromarray(img).resize((56, 56)).save(
            folder / f"{lab}-{count.get(lab)}-{n_unlabelled}.png"
        )
        if sum(count.values()) == 36 and n_unlabelled == 24:
            break
    return root


def run(args: list[str], cache: Path) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [*args, "--image-size", "32", "--cache-dir", str(cache), "--quiet"],
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_plan_offline_json(image_dir, cache) -> None:
    code, out, err = run(
        ["plan", "--images", str(image_dir), "--budget", "5", "--cost-per-label", "0.25", "--json"],
        cache,
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["budget"] == 5 and len(data["picks"]) == 5
    assert all(p["ref"].startswith("unlabelled/") for p in data["picks"])
    assert data["total_cost"] == pytest.approx(1.25)
    assert data["view"] is None and data["labeled"] == 36 and data["unlabeled"] == 24


def test_plan_offline_table(image_dir, cache) -> None:
    code, out, _ = run(
        ["plan", "--images", str(image_dir), "--budget", "3", "--strategy", "margin"], cache
    )
    assert code == 0
    assert "why" in out and "bits" in out and "total: 3 labels" in out
    assert out.count("unlabelled/") == 3


def test_budget_larger_than_pool(image_dir, cache) -> None:
    code, out, err = run(["plan", "--images", str(image_dir), "--budget", "25"], cache)
    assert code == 1
    assert "larger than the unlabelled pool (24 items)" in err
    assert "Traceback" not in err + out


@pytest.mark.slow
def test_forecast_offline(image_dir, cache, tmp_path) -> None:
    plot = tmp_path / "curve.png"
    code, out, err = run(
        ["forecast", "--images", str(image_dir), "--target", "0.99", "--json", "--plot", str(plot)],
        cache,
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["history"] == "cv"
    assert data["status"] in {"reachable", "reached", "out_of_reach", "too_little_history"}
    assert data["message"]
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_coverage_offline(image_dir, cache, tmp_path) -> None:
    out_png = tmp_path / "map.png"
    code, out, err = run(
        ["coverage", "--images", str(image_dir), "--out", str(out_png), "--projection", "pca"],
        cache,
    )
    assert code == 0, err
    assert "cluster" in out and "holes:" in out and f"map written to {out_png}" in out
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_report_offline_json(image_dir, cache) -> None:
    code, out, err = run(
        ["report", "--images", str(image_dir), "--json", "--cost-per-label", "2"], cache
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["class_balance"] == {"0": 12, "1": 12, "7": 12}
    assert data["labeled"] == 36 and data["pool_size"] == 60
    assert data["measured_accuracy"] is not None and data["measured_accuracy"] > 0.6
    assert data["acceptance"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "--budget", "3"], "exactly one of --project ID or --images DIR"),
        (["forecast", "--target", "0.9", "--project", "1", "--images", "x"], "exactly one of"),
        (["forecast", "--target", "1.5", "--images", "."], "--target must be"),
        (["plan", "--budget", "0", "--images", "."], "--budget must be at least 1"),
        (["plan", "--budget", "2", "--images", ".", "--strategy", "psychic"], "unknown strategy"),
        (["report", "--images", ".", "--cost-per-label", "-1"], "non-negative"),
    ],
)
def test_bad_arguments(args, message, cache) -> None:
    code, _out, err = run(args, cache)
    assert code == 1
    assert message in err
    assert "Traceback" not in err


def test_no_images(tmp_path, cache) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    code, _, err = run(["coverage", "--images", str(tmp_path)], cache)
    assert code == 1 and "no images in" in err


def test_project_without_credentials(cache, monkeypatch) -> None:
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    code, _, err = run(["report", "--project", "3"], cache)
    assert code == 1 and "LABEL_STUDIO_URL" in err
