"""Fast tests of the demo's data and state handling (no Label Studio needed)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from labelwheel.demo import DemoError, DemoState
from labelwheel.demo.cli import down_command, up_command
from labelwheel.demo.state import _is_ours, _record
from labelwheel.demo_data import (
    DEMO_LABELS,
    image_data_uris,
    label_for_reference,
    load_demo_dataset,
    write_demo_images,
)


def test_e2e_demo_images_are_real_balanced_and_deterministic(tmp_path) -> None:
    a = write_demo_images(tmp_path / "a", 40, size=64, seed=3)
    b = write_demo_images(tmp_path / "b", 40, size=64, seed=3)
    c = write_demo_images(tmp_path / "c", 40, size=64, seed=4)
    assert [im.name for im in a.images] == [f"digit-{i:04d}.png" for i in range(40)]
    assert [im.path.read_bytes() for im in a.images] == [im.path.read_bytes() for im in b.images]
    assert [im.path.read_bytes() for im in a.images] != [im.path.read_bytes() for im in c.images]
    assert Counter(im.label for im in a.images) == Counter({lab: 4 for lab in DEMO_LABELS})
    with Image.open(a.images[0].path) as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (64, 64)
        pixels = np.asarray(img)
    # A digit: dark ink on a light page, not a blank or noise image.
    assert pixels.min() < 60 and np.median(pixels) > 200
    # The answers are held back in a CSV beside the images (never uploaded).
    assert (
        a.ground_truth_path.read_text().splitlines()[1] == f"{a.images[0].name},{a.images[0].label}"
    )
    again = load_demo_dataset(tmp_path / "a")
    assert again.images == a.images


def test_e2e_demo_answers_found_from_label_studio_upload_paths(tmp_path) -> None:
    d = write_demo_images(tmp_path, 12, size=32, seed=0)
    first = d.images[0]
    assert d.label_of(f"/data/upload/7/1a2b3c4d-{first.name}") == first.label
    assert d.label_of(first.name) == first.label
    with pytest.raises(KeyError):
        label_for_reference("/data/upload/7/1a2b3c4d-other.png", {first.name: first.label})
    uri = image_data_uris([first.path])[0]
    assert uri.startswith("data:image/png;base64,iVBOR")


@pytest.mark.parametrize("n,size", [(5, 64), (6000, 64), (20, 8)])
def test_e2e_demo_images_bad_arguments_raise_value_error(tmp_path, n, size) -> None:
    with pytest.raises(ValueError):
        write_demo_images(tmp_path, n, size=size)


def test_e2e_demo_missing_dataset_raises_value_error(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"ground_truth\.csv"):
        load_demo_dataset(tmp_path)


def test_e2e_demo_state_is_private_and_reused(tmp_path) -> None:
    first = DemoState.load_or_create(tmp_path)
    mode = stat.S_IMODE(os.stat(first.path).st_mode)
    assert mode == 0o600
    assert len(first.data["token"]) == 40 and len(first.data["password"]) >= 12
    second = DemoState.load_or_create(tmp_path)
    assert second.data == first.data
    other = DemoState.load_or_create(tmp_path / "other")
    assert other.data["password"] != first.data["password"]
    assert other.data["token"] != first.data["token"]


def test_e2e_demo_state_corrupt_is_reported(tmp_path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(DemoError, match="make clean"):
        DemoState.load_or_create(tmp_path)


def test_e2e_demo_down_only_stops_its_own_processes(tmp_path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        entry = _record(sleeper.pid, "python")
        assert _is_ours(entry)
        # Same pid, another process start time: a re-used pid, not ours.
        assert not _is_ours({**entry, "start": "1"})
        state = DemoState.load_or_create(tmp_path)
        state.pids["backend"] = {**entry, "start": "1"}
        state.save()
        result = CliRunner().invoke(down_command, ["--state-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert "nothing was running" in result.output
        assert sleeper.poll() is None, "a foreign process was left alone"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_e2e_demo_down_without_state(tmp_path) -> None:
    result = CliRunner().invoke(down_command, ["--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 0
    assert "nothing to stop" in result.output


def test_e2e_demo_up_reports_busy_port_and_missing_label_studio(tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        fake_ls = tmp_path / "label-studio"
        fake_ls.write_text("#!/bin/sh\nexit 1\n")
        fake_ls.chmod(0o755)
        args = ["--state-dir", str(tmp_path / "s"), "--label-studio-bin", str(fake_ls)]
        busy = CliRunner().invoke(up_command, [*args, "--ls-port", str(port)])
        assert busy.exit_code == 1
        assert f"port {port}" in busy.output and "--ls-port" in busy.output
        same = CliRunner().invoke(
            up_command, [*args, "--ls-port", "9999", "--backend-port", "9999"]
        )
        assert same.exit_code == 1 and "must differ" in same.output
    missing = CliRunner().invoke(
        up_command, ["--state-dir", str(tmp_path / "s"), "--label-studio-bin", "/nonexistent/ls"]
    )
    assert missing.exit_code == 1
    assert "not found" in missing.output and "make ls-venv" in missing.output
