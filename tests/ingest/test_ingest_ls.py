"""``labelwheel ingest`` against a real Label Studio: dry run in detail, import, re-run, budget,
scores in task data, duplicates of the project, an interrupted run resumed, errors."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import TEST_IMAGE_SIZE, SourceTruth
from PIL import Image

from labelwheel.cli import cli
from labelwheel.label_config import image_classification_config
from labelwheel.ls_api import LabelStudioClient

pytestmark = pytest.mark.e2e

LABELS = ["photo", "digit"]


def _env(ls: Any) -> dict[str, str]:
    return {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token}


def _ingest(ls: Any, source: str, project: int, tmp: Path, *args: str) -> tuple[int, dict, str]:
    argv = [
        "ingest",
        source,
        "--project",
        str(project),
        "--json",
        "--image-size",
        TEST_IMAGE_SIZE,
        "--cache-dir",
        str(tmp / "cache"),
        "--ledger",
        str(tmp / "ledger.sqlite3"),
        *args,
    ]
    result = CliRunner().invoke(cli, argv, env=_env(ls), catch_exceptions=False)
    data = json.loads(result.stdout) if result.exit_code == 0 else {}
    return result.exit_code, data, result.stderr


def _tasks(client: LabelStudioClient, project: int) -> list[dict]:
    return list(client.iter_tasks(project))


def _settled_tasks(client: LabelStudioClient, project: int, timeout: float = 20.0) -> list[dict]:
    """The project's tasks once Label Studio has finished the requests a killed client left in
    flight (it completes an import or a PATCH after the client is gone): the same tasks, with
    the same data, read twice 1 s apart."""
    deadline = time.monotonic() + timeout
    last = _tasks(client, project)
    while True:
        time.sleep(1.0)
        now = _tasks(client, project)
        if [(t["id"], t["data"]) for t in now] == [(t["id"], t["data"]) for t in last]:
            return now
        assert time.monotonic() < deadline, "Label Studio's tasks kept changing"
        last = now


@pytest.fixture
def project(ls_client: LabelStudioClient, request: pytest.FixtureRequest) -> int:
    p = ls_client.create_project(
        f"ingest {request.node.name}"[:50], image_classification_config(LABELS)
    )
    return int(p["id"])


def test_dry_run_then_import_then_rerun_imports_nothing(
    label_studio: Any,
    ls_client: LabelStudioClient,
    project: int,
    tmp_path: Path,
    make_source: Callable[[Path], SourceTruth],
) -> None:
    truth = make_source(tmp_path / "incoming")
    src = str(truth.root)

    # dry run: every decision, nothing written anywhere
    code, dry, err = _ingest(
        label_studio, src, project, tmp_path, "--dry-run", "--cost-per-label", "0.5"
    )
    assert code == 0, err
    assert dry["dry_run"] is True
    assert dry["listed"] == dry["read"] == len(truth.files)
    assert dry["scored_by"] == "diversity"  # an empty project has no model yet
    got = {d["key"]: (d["reason"], d.get("duplicate_of")) for d in dry["dropped"]["items"]}
    assert got == truth.dropped
    assert dry["dropped"]["by_reason"] == {
        "unreadable": 1,
        "corrupt": 2,
        "exact_duplicate": 2,
        "near_duplicate": 4,
    }
    assert dry["cost_of_dropped"]["avoided"] == pytest.approx(9 * 0.5)
    assert dry["cost_of_dropped"]["by_reason"]["near_duplicate"] == pytest.approx(2.0)
    assert dry["passed"] == dry["would_import"] == len(truth.kept)
    rows = dry["tasks"]
    assert sorted(r["key"] for r in rows) == sorted(truth.kept)
    assert [r["labelwheel_rank"] for r in rows] == list(range(1, len(rows) + 1))
    div = [r["labelwheel_diversity"] for r in rows]
    assert div[1:] == sorted(div[1:], reverse=True)  # k-center: farthest first
    assert all(r["labelwheel_anomaly"] > 0 for r in rows)
    assert all("labelwheel_bits" not in r and "task_id" not in r for r in rows)
    assert _tasks(ls_client, project) == []
    assert not (tmp_path / "ledger.sqlite3").exists()

    # a real run with a budget: the 10 first of the same order, each task carrying its scores
    code, first, err = _ingest(label_studio, src, project, tmp_path, "--budget", "10")
    assert code == 0, err
    assert first["imported"] == 10 and first["deferred"] == len(truth.kept) - 10
    assert [r["key"] for r in first["tasks"]] == [r["key"] for r in rows[:10]]
    tasks = {t["id"]: t for t in _tasks(ls_client, project)}
    assert len(tasks) == 10
    for row in first["tasks"]:
        data = tasks[row["task_id"]]["data"]
        assert data["image"].startswith(f"/data/upload/{project}/")
        assert data["image"].endswith(row["key"])
        assert data["labelwheel_source"] == row["key"]
        assert data["labelwheel_rank"] == row["labelwheel_rank"]
        assert data["labelwheel_diversity"] == row["labelwheel_diversity"]
        assert data["labelwheel_anomaly"] == row["labelwheel_anomaly"]
        assert data["labelwheel_sha256"] == row["labelwheel_sha256"]

    # re-run: what was imported or dropped is skipped unread; the 27 deferred are imported now
    code, second, err = _ingest(label_studio, src, project, tmp_path)
    assert code == 0, err
    assert second["imported"] == len(truth.kept) - 10
    reasons = {s["key"]: s["reason"] for s in second["skipped"]["items"]}
    for row in first["tasks"]:
        assert reasons[row["key"]] == "already_imported"
    for name, (why, _) in truth.dropped.items():
        if why in ("near_duplicate", "corrupt"):
            assert reasons[name] == f"already_dropped:{why}"
    dropped_now = {d["key"]: d["reason"] for d in second["dropped"]["items"]}
    for name in ("z_exact_astronaut.png", "z_exact_digit03.png"):  # skipped or dropped again
        assert reasons.get(name) == "already_imported" or dropped_now[name] == "exact_duplicate"
    assert dropped_now["z_empty.png"] == "unreadable"  # failures to read are retried

    # and once more: nothing left to import, nothing read but the empty file
    code, third, err = _ingest(label_studio, src, project, tmp_path, "--cost-per-label", "2")
    assert code == 0, err
    assert third["imported"] == 0 and third["read"] == 1 and third["passed"] == 0
    tasks_now = _tasks(ls_client, project)
    assert len(tasks_now) == len(truth.kept)
    shas = [t["data"]["labelwheel_sha256"] for t in tasks_now]
    assert len(set(shas)) == len(shas)
    assert sorted(t["data"]["labelwheel_source"] for t in tasks_now) == sorted(truth.kept)


def test_project_model_scores_bits_and_project_duplicates_are_dropped(
    label_studio: Any,
    ls_client: LabelStudioClient,
    project: int,
    tmp_path: Path,
    make_source: Callable[[Path], SourceTruth],
) -> None:
    truth = make_source(tmp_path / "incoming")
    # the project already holds 4 photos and 4 digits, labelled, uploaded by hand
    held = [k for k in truth.kept if k.startswith("a_photo")][:4]
    held += [k for k in truth.kept if k.startswith("b_digit")][:4]
    ids = ls_client.import_files(project, [truth.root / k for k in held])
    for task_id, key in zip(ids, held, strict=True):
        label = "photo" if key.startswith("a_photo") else "digit"
        result = [
            {
                "from_name": "choice",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]
        ls_client.create_annotation(task_id, result)
    task_of = dict(zip(held, ids, strict=True))
    # a re-encode of a held image arrives too
    Image.open(truth.root / held[1]).convert("RGB").save(truth.root / "y_reencoded.jpg", quality=75)

    code, out, err = _ingest(label_studio, str(truth.root), project, tmp_path, "--dry-run")
    assert code == 0, err
    assert out["scored_by"] == "bits" and out["project_labeled"] == 8
    got = {d["key"]: (d["reason"], d.get("duplicate_of")) for d in out["dropped"]["items"]}
    for key in held:
        assert got[key] == ("exact_duplicate", f"task {task_of[key]}")
    assert got["y_reencoded.jpg"] == ("near_duplicate", f"task {task_of[held[1]]}")
    if "a_photo_astronaut.png" in held:
        assert got["z_exact_astronaut.png"] == (
            "exact_duplicate",
            f"task {task_of['a_photo_astronaut.png']}",
        )
    rows = out["tasks"]
    assert len(rows) == len(truth.kept) - len(held)
    bits = [r["labelwheel_bits"] for r in rows]
    assert bits == sorted(bits, reverse=True)  # most informative first
    assert all(0.0 <= b <= 1.0 + 1e-9 for b in bits)  # two classes: at most one bit
    assert len(_tasks(ls_client, project)) == len(held)  # dry run: nothing imported


def test_interrupted_run_resumes_without_double_import(
    label_studio: Any,
    ls_client: LabelStudioClient,
    project: int,
    tmp_path: Path,
    make_source: Callable[[Path], SourceTruth],
) -> None:
    truth = make_source(tmp_path / "incoming")
    ledger = tmp_path / "ledger.sqlite3"
    argv = [
        sys.executable,
        "-m",
        "labelwheel.cli",
        "ingest",
        str(truth.root),
        "--project",
        str(project),
        "--json",
        "--image-size",
        TEST_IMAGE_SIZE,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--ledger",
        str(ledger),
        "--import-batch",
        "3",
    ]
    env = {**os.environ, **_env(label_studio)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    imported = 0
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ledger.exists():
                with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5) as conn:
                    try:
                        imported = conn.execute(
                            "SELECT COUNT(*) FROM items WHERE status='imported'"
                        ).fetchone()[0]
                    except sqlite3.OperationalError:
                        imported = 0
                if imported >= 3:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be interrupted"
        proc.kill()  # SIGKILL: no clean-up of any kind
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    before = _settled_tasks(ls_client, project)
    assert 3 <= len(before) < len(truth.kept)
    unfinished = [t for t in before if "labelwheel_sha256" not in t["data"]]

    code, out, err = _ingest(label_studio, str(truth.root), project, tmp_path)
    assert code == 0, err
    tasks = _tasks(ls_client, project)
    shas = [t["data"].get("labelwheel_sha256") for t in tasks]
    assert len(tasks) == len(truth.kept), "every kept image imported exactly once"
    assert None not in shas and len(set(shas)) == len(shas)
    assert out["imported"] == len(truth.kept) - len(before)
    # uploads that landed without their fields (killed mid-batch) are completed, not repeated
    assert out["resumed_uploads"] >= len(unfinished)
    for t in tasks:
        assert t["data"]["labelwheel_source"] in truth.kept
        assert "labelwheel_anomaly" in t["data"] and "labelwheel_rank" in t["data"]


def test_errors_are_one_line(
    label_studio: Any, project: int, tmp_path: Path, make_source: Callable[[Path], SourceTruth]
) -> None:
    truth = make_source(tmp_path / "incoming")
    code, _, err = _ingest(label_studio, str(truth.root), 999999, tmp_path)
    assert code == 1 and "project 999999 not found" in err and "Traceback" not in err
    code, _, err = _ingest(label_studio, str(tmp_path / "nope"), project, tmp_path)
    assert code == 1 and "is not a folder" in err
    code, _, err = _ingest(label_studio, str(truth.root), project, tmp_path, "--budget", "-1")
    assert code == 1 and "--budget must be at least 0" in err
    result = CliRunner().invoke(
        cli,
        ["ingest", str(truth.root), "--project", str(project)],
        env={"LABEL_STUDIO_URL": "", "LABEL_STUDIO_API_KEY": ""},
    )
    assert result.exit_code == 1 and "no Label Studio URL" in result.stderr
    code, _, err = _ingest(label_studio, "s3://", project, tmp_path)
    assert code == 1 and "no bucket" in err


def test_text_report_for_people(
    label_studio: Any, project: int, tmp_path: Path, make_source: Callable[[Path], SourceTruth]
) -> None:
    truth = make_source(tmp_path / "incoming")
    argv = [
        "ingest",
        str(truth.root),
        "--project",
        str(project),
        "--dry-run",
        "--budget",
        "5",
        "--cost-per-label",
        "0.25",
        "--image-size",
        TEST_IMAGE_SIZE,
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    result = CliRunner().invoke(cli, argv, env=_env(label_studio), catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert f"listed {len(truth.files)}, read {len(truth.files)}" in out
    assert "dropped 9:" in out
    assert "z_near_chelsea_q70.jpg: near duplicate: of a_photo_chelsea.png (similarity" in out
    assert "z_exact_astronaut.png: exact duplicate: of a_photo_astronaut.png" in out
    assert "z_corrupt_random.jpg: corrupt: not an image" in out
    assert "labelling the dropped images would have cost 2.25 (9 × 0.25)" in out
    assert f"would import 5 (scored by diversity); {len(truth.kept) - 5} over the budget" in out
    assert "#1 " in out and "#5 " in out and "#6 " not in out


def test_a_file_changed_since_it_was_read_is_not_imported(
    ls_client: LabelStudioClient, project: int, tmp_path: Path, source_template: SourceTruth
) -> None:
    from labelwheel.ingest.importer import ImportPick, import_picks
    from labelwheel.ingest.sources import FolderSource
    from labelwheel.ingest.state import Ledger, sha_of

    root = tmp_path / "src"
    root.mkdir()
    for name in ("a_photo_coins.png", "a_photo_moon.png"):
        (root / name).write_bytes((source_template.root / name).read_bytes())
    source = FolderSource(root)
    items = {i.key: i for i in source.items()}
    picks = [
        ImportPick(items[k], sha_of((root / k).read_bytes()), {"labelwheel_rank": r})
        for r, k in enumerate(sorted(items), start=1)
    ]
    page = (source_template.root / "a_photo_page.png").read_bytes()
    (root / "a_photo_moon.png").write_bytes(page)  # changed after it was analysed
    with Ledger(tmp_path / "l.sqlite3", project) as ledger:
        out = import_picks(ls_client, project, source, picks, ledger)
        assert ledger.counts() == {"imported": 1}
    assert sorted((o.key, o.error or "") for o in out) == [
        ("a_photo_coins.png", ""),
        ("a_photo_moon.png", "changed since it was read"),
    ]
    tasks = _tasks(ls_client, project)
    assert [t["data"]["labelwheel_rank"] for t in tasks] == [1]
    assert [tasks[0]["id"]] == [o.task_id for o in out if o.task_id is not None]
