"""``labelwheel doctor`` without a server: URL forms, the report's lines, JSON and exit codes, and
usage errors. (Against a real Label Studio: ``tests/e2e/test_e2e_doctor.py``.)"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from labelwheel.cli import cli
from labelwheel.doctor import Check, exit_code, render_json, render_text
from labelwheel.doctor.media import classify_ref
from labelwheel.media.storage import task_resolve_path

LS = "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("ref", "form"),
    [
        ("/data/upload/3/ab12-cat.png", "upload"),
        (f"{LS}/data/upload/3/ab12-cat.png", "upload"),
        ("/data/local-files/?d=photos/cat.png", "local-files"),
        (f"{LS}/data/local-files/?d=photos/cat.png", "local-files"),
        ("data:image/png;base64,iVBORw0KGgo=", "data-uri"),
        ("https://images.example.com/cat.png", "http"),
        ("http://127.0.0.1:9999/cat.png", "http"),  # same host, other port: another origin
        ("s3://bucket/cats/1.png", "s3"),
        ("gs://bucket/cats/1.png", "gs"),
        ("azure-blob://container/cats/1.png", "azure-blob"),
        (LS + task_resolve_path(7, "s3://bucket/cats/1.png"), "resolve"),
        ("/storage-data/uploaded/?filepath=upload/1/a.png", "storage-data"),
        ("/api/projects/1", "label-studio"),
        ("cat.png", "other"),
        ("file:///etc/passwd", "other"),
    ],
)
def test_classify_ref(ref: str, form: str) -> None:
    assert classify_ref(ref, LS) == form


def _checks() -> list[Check]:
    return [
        Check("label_studio", "Label Studio reachable", "pass", "up (Label Studio 1.23.2)"),
        Check("token", "API token valid", "warn", "odd", fix="do this"),
        Check("webhook", "webhook to the backend", "fail", "no header", fix="run connect"),
        Check("media", "images", "skip", "not checked: no project"),
    ]


def test_text_report_has_one_line_per_check_and_the_fixes() -> None:
    text = render_text(_checks())
    assert text.splitlines() == [
        "[PASS] Label Studio reachable: up (Label Studio 1.23.2)",
        "[WARN] API token valid: odd",
        "       fix: do this",
        "[FAIL] webhook to the backend: no header",
        "       fix: run connect",
        "[SKIP] images: not checked: no project",
        "some checks failed: 1 passed, 1 warnings, 1 failed, 1 skipped",
    ]


def test_json_report_and_exit_codes() -> None:
    checks = _checks()
    body = json.loads(render_json(checks))
    assert body["ok"] is False
    assert [c["status"] for c in body["checks"]] == ["pass", "warn", "fail", "skip"]
    assert body["checks"][2] == {
        "name": "webhook",
        "title": "webhook to the backend",
        "status": "fail",
        "message": "no header",
        "fix": "run connect",
        "details": {},
    }
    assert exit_code(checks) == 1
    # warnings and skips do not fail the run
    assert exit_code([c for c in checks if c.status != "fail"]) == 0
    assert json.loads(render_json(checks[:2]))["ok"] is True


def test_check_refuses_an_unknown_status() -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        Check("x", "x", "ok", "?")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--project", "1"], {"LABEL_STUDIO_API_KEY": "k"}, "no Label Studio URL"),
        (["--project", "1", "--url", LS], {}, "no API key"),
        (
            ["--project", "1", "--url", LS, "--api-key", "k", "--basic-auth-user", "u"],
            {},
            "give both --basic-auth-user and --basic-auth-pass",
        ),
        (
            ["--project", "1", "--url", LS, "--api-key", "k", "--local-files-root", "/nope/x"],
            {},
            "is not a directory",
        ),
        (["--url", LS, "--api-key", "k"], {}, "Missing option '--project'"),
    ],
)
def test_usage_errors_exit_2(args: list[str], env: dict[str, str], message: str) -> None:
    clean = {
        k: None
        for k in (
            "LABEL_STUDIO_URL",
            "LABEL_STUDIO_API_KEY",
            "BASIC_AUTH_USER",
            "BASIC_AUTH_PASS",
            "LABELWHEEL_LOCAL_FILES_ROOT",
        )
    }
    result = CliRunner().invoke(cli, ["doctor", *args], env={**clean, **env})
    assert result.exit_code == 2
    assert message in result.output


def test_unreachable_label_studio_is_one_failed_check_and_exit_1() -> None:
    env = {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": "0" * 40}
    result = CliRunner().invoke(cli, ["doctor", "--project", "1", "--timeout", "2"], env=env)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("[FAIL] Label Studio reachable: no answer from http://127.0.0.1:9")
    assert lines[1].startswith("       fix: start Label Studio")
    assert all(line.startswith("[SKIP]") for line in lines[2:-1])
    assert lines[-1].startswith("some checks failed: 0 passed, 0 warnings, 1 failed")
