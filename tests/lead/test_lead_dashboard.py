"""`/dashboard` on a real Label Studio: test client, backend app with auth, headless Chromium."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from flask import Flask
from lead_helpers import choice_result

from labelwheel.ls_api import LabelStudioClient
from labelwheel.ml_backend.dashboard import bp

torch.set_num_threads(1)
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def client(label_studio) -> LabelStudioClient:
    return LabelStudioClient(label_studio.url, label_studio.token)


@pytest.fixture(scope="module")
def project(make_ls_project) -> dict[str, Any]:
    return make_ls_project("lead dashboard")


@pytest.fixture(scope="module")
def plain_app(label_studio, tmp_path_factory) -> Flask:
    """The blueprint alone, reading Label Studio directly (no backend service)."""
    app = Flask("dashboard-only")
    app.register_blueprint(bp)
    app.config["LABELWHEEL_DASHBOARD"] = {
        "url": label_studio.url,
        "api_key": label_studio.token,
        "image_size": 32,
        "cache_dir": str(tmp_path_factory.mktemp("dash-cache")),
    }
    return app


def _views(client, pid: int) -> list[dict[str, Any]]:
    return [v for v in client.list_views(pid) if v["data"]["title"].startswith("labelwheel: next")]


def test_page_plots_and_json_without_backend(plain_app, project) -> None:
    c = plain_app.test_client()
    pid = project["id"]
    page = c.get(f"/dashboard?project={pid}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for section in ("summary", "coverage", "forecast", "planner", "acceptance", "balance"):
        assert f'id="{section}"' in html
    assert "https://" not in html and "http://" not in html  # no CDN, nothing external
    for name in ("coverage", "forecast", "balance", "acceptance"):
        r = c.get(f"/dashboard/{name}.png?project={pid}")
        assert r.status_code == 200 and r.mimetype == "image/png" and r.data.startswith(PNG)
    summary = c.get(f"/dashboard/api/summary?project={pid}").get_json()
    assert summary["report"]["class_balance"] == {"0": 5, "1": 5, "7": 5}
    assert [a["version"] for a in summary["report"]["acceptance"]] == ["v1"]
    assert summary["forecast"]["history"] == "cv"
    css = c.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and b".card" in css.data


def test_planner_preview_and_write(plain_app, project, client) -> None:
    c = plain_app.test_client()
    pid = project["id"]
    preview = c.get(f"/dashboard/api/plan?project={pid}&budget=4&strategy=margin")
    assert preview.status_code == 200
    picks = [p["task_id"] for p in preview.get_json()["picks"]]
    assert len(picks) == 4 and not set(picks) & project["labelled"]
    assert _views(client, pid) == []  # a preview writes nothing

    page = c.get(f"/dashboard?project={pid}&budget=4&strategy=margin").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None  # the write form carries its CSRF token
    r = c.post(
        "http://localhost/dashboard/api/plan",
        data={"project": pid, "budget": 4, "strategy": "margin", "csrf_token": token.group(1)},
    )
    assert r.status_code == 303 and "written=labelwheel" in r.headers["Location"]
    views = _views(client, pid)
    assert [v["data"]["title"] for v in views] == ["labelwheel: next 4"]
    assert [t["id"] for t in client.iter_tasks(pid, view_id=views[0]["id"])] == picks


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("/dashboard/api/plan?project={pid}&budget=0", 400, "at least 1"),
        ("/dashboard/api/plan?project={pid}&budget=99", 400, "larger than the unlabelled pool"),
        ("/dashboard/api/plan?project={pid}&budget=x", 400, "whole number"),
        ("/dashboard/api/summary?project=abc", 400, "must be a number"),
        ("/dashboard/api/summary?project={pid}&target=2", 400, "target must be between"),
        ("/dashboard/api/summary?project=987654", 404, "not found"),
        ("/dashboard/coverage.png?project=987654", 404, "not found"),
    ],
)
def test_bad_requests_are_4xx_with_a_message(plain_app, project, url, status, message) -> None:
    r = plain_app.test_client().get(url.format(pid=project["id"]))
    assert r.status_code == status
    assert message in r.get_json()["message"]


def test_cross_site_post_is_refused_and_writes_nothing(plain_app, project, client) -> None:
    before = [v["id"] for v in client.list_views(project["id"])]
    r = plain_app.test_client().post(
        "/dashboard/api/plan",
        json={"project": project["id"], "budget": 2},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert [v["id"] for v in client.list_views(project["id"])] == before


def test_unknown_project_page_is_a_404_page(plain_app) -> None:
    r = plain_app.test_client().get("/dashboard?project=987654")
    assert r.status_code == 404 and b"not found" in r.data and b"<html" in r.data


def test_without_label_studio_settings(monkeypatch) -> None:
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    app = Flask("bare")
    app.register_blueprint(bp)
    r = app.test_client().get("/dashboard/api/summary?project=1")
    assert r.status_code == 503 and "LABEL_STUDIO_URL" in r.get_json()["message"]


# --------------------------------------------------------------------------- inside the backend


@pytest.fixture(scope="module")
def backend_app(label_studio, tmp_path_factory) -> Iterator[Flask]:
    from labelwheel.ml_backend import create_app, get_service

    app = create_app(
        {
            "MODEL_DIR": str(tmp_path_factory.mktemp("model-dir")),
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.token,
            "BASIC_AUTH_USER": "lead",
            "BASIC_AUTH_PASS": "dashboard-secret",
            "LABELWHEEL_IMAGE_SIZE": "32",
            "TESTING": True,
        },
        environ={},
    )
    yield app
    get_service(app).close()


AUTH = {"Authorization": "Basic " + base64.b64encode(b"lead:dashboard-secret").decode()}


def test_backend_serves_dashboard_behind_basic_auth(backend_app, project) -> None:
    from labelwheel.ml_backend import get_service

    c = backend_app.test_client()
    pid = project["id"]
    assert c.get(f"/dashboard?project={pid}").status_code == 401
    assert c.get(f"/dashboard/coverage.png?project={pid}").status_code == 401
    r = c.get(f"/dashboard?project={pid}", headers=AUTH)
    assert r.status_code == 200 and b'id="coverage-plot"' in r.data
    # The pool was embedded by the backend's own model (its fetch policy and cache).
    assert get_service(backend_app).model.images_embedded >= 36
    assert c.get(f"/dashboard/forecast.png?project={pid}", headers=AUTH).data.startswith(PNG)
    assert b'id="pool-job"' not in r.data, "no pool job has run for this project yet"


def test_dashboard_shows_the_backend_pool_job(backend_app, project, client) -> None:
    from labelwheel.ml_backend import get_service

    service = get_service(backend_app)
    pid = project["id"]
    config = service.parse_config(client.get_project(pid)["label_config"])
    service.model.pool_jobs.ensure(pid, config)
    ranking = service.model.pool_jobs.wait(pid, 240)
    assert ranking is not None, service.model.pool_jobs.progress(pid)
    r = backend_app.test_client().get(f"/dashboard?project={pid}", headers=AUTH)
    assert r.status_code == 200
    assert b'id="pool-job"' in r.data
    assert re.search(rb"backend pool ranking: (ready|published)", r.data), r.data[:2000]


# --------------------------------------------------------------------------- headless Chromium

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@contextmanager
def dashboard_page(served: str, pid: int, errors: list[str]) -> Iterator[Any]:
    """Headless Chromium on the project's dashboard page (basic auth), loaded with 200; console
    errors and page errors are appended to ``errors``."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                http_credentials={"username": "lead", "password": "dashboard-secret"},
                viewport={"width": 1280, "height": 900},
            )
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_default_timeout(180_000)
            response = page.goto(f"{served}/dashboard?project={pid}", wait_until="load")
            assert response is not None and response.status == 200
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def served(backend_app) -> Iterator[str]:
    """The backend app on a real HTTP port (werkzeug in a thread)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, backend_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.mark.browser
@pytest.mark.slow
def test_dashboard_in_headless_chromium(served, project, client) -> None:
    pid = project["id"]
    errors: list[str] = []
    with dashboard_page(served, pid, errors) as page:
        for plot in ("coverage-plot", "forecast-plot", "acceptance-plot", "balance-plot"):
            page.wait_for_function(
                f"document.getElementById('{plot}').complete && "
                f"document.getElementById('{plot}').naturalWidth > 0"
            )
            width = page.eval_on_selector(f"#{plot}", "img => img.naturalWidth")
            assert width > 300, plot
        assert "estimated real accuracy" in page.inner_text("#summary")
        page.screenshot(path=str(ARTIFACTS / "lead-dashboard.png"), full_page=True)

        # The planner: enter a budget, see the picks, write the view.
        page.fill("#budget", "4")
        page.select_option("#strategy", "margin")
        page.click("#plan-preview")
        page.wait_for_selector("#picks")
        rows = page.locator("#picks tbody tr")
        assert rows.count() == 4
        shown = [int(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(4)]
        assert not set(shown) & project["labelled"]
        page.screenshot(path=str(ARTIFACTS / "lead-dashboard-planner.png"), full_page=True)
        page.click("#write-view")
        page.wait_for_selector("#plan-written")
        assert "labelwheel: next 4" in page.inner_text("#plan-written")
        page.screenshot(path=str(ARTIFACTS / "lead-dashboard-written.png"), full_page=True)
    assert errors == []
    views = [v for v in client.list_views(pid) if v["data"]["title"].startswith("labelwheel: next")]
    assert [v["data"]["title"] for v in views] == ["labelwheel: next 4"]
    in_view = [t["id"] for t in client.iter_tasks(pid, view_id=views[0]["id"])]
    assert sorted(in_view) == sorted(shown) and len(in_view) == 4


# --------------------------------------------------------------------------- audit panel


@pytest.fixture(scope="module")
def audit_project(make_ls_project, client) -> dict[str, Any]:
    """The planner's kind of project with 19 more annotations (34 labels), one wrong label per
    class, and the two tasks left unlabelled marked held out (data field split = test)."""
    p = make_ls_project("lead dashboard audit")
    rest = [t for t in p["ids"] if t not in p["labelled"]]
    held = rest[-2:]
    wrong: dict[int, str] = {}
    for tid in rest[:-2]:
        truth = p["truth"][tid]
        label = truth
        if truth not in {p["truth"][w] for w in wrong}:
            label = {"0": "1", "1": "0", "7": "0"}[truth]  # the first of each class: wrong
            wrong[tid] = label
        client.create_annotation(tid, choice_result(label))
    for tid in held:
        data = {**client.get_task(tid)["data"], "split": "test"}
        client.request("PATCH", f"/api/tasks/{tid}", json={"data": data})
    assert len(wrong) == 3
    return {**p, "wrong": wrong, "held": held}


def test_audit_api_lists_the_wrong_labels(plain_app, audit_project) -> None:
    c = plain_app.test_client()
    pid = audit_project["id"]
    r = c.get(f"/dashboard/api/audit?project={pid}&limit=5")
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    assert data["labeled"] == 34 and data["holdout"] == 2
    assert len(data["suspects"]) == min(5, data["suspects_total"])
    found = {s["task_id"] for s in data["suspects"]} & set(audit_project["wrong"])
    assert found, data["suspects"]
    for s in data["suspects"]:
        assert s["reasons"] and 0.0 <= s["suspicion"] <= 1.0
        if s["task_id"] in audit_project["wrong"]:
            assert s["given"] == audit_project["wrong"][s["task_id"]]
    scores = [s["suspicion"] for s in data["suspects"]]
    assert scores == sorted(scores, reverse=True)
    for bad, message in (("limit=0", "at least 1"), ("limit=501", "at most 500")):
        r = c.get(f"/dashboard/api/audit?project={pid}&{bad}")
        assert r.status_code == 400 and message in r.get_json()["message"]


@pytest.mark.browser
@pytest.mark.slow
def test_audit_panel_in_headless_chromium(served, audit_project) -> None:
    pid = audit_project["id"]
    errors: list[str] = []
    with dashboard_page(served, pid, errors) as page:
        assert page.locator("#suspects").count() == 0  # computed on request, not with the page
        page.click("#audit-run")
        page.wait_for_selector("#suspects")
        assert "suspect(s)" in page.inner_text("#audit-summary")
        assert "2 held-out task(s)" in page.inner_text("#audit-summary")
        rows = page.locator("#suspects tbody tr")
        assert 1 <= rows.count() <= 20
        cells = [
            [c.strip() for c in rows.nth(i).locator("td").all_inner_texts()]
            for i in range(rows.count())
        ]
        assert [int(c[0]) for c in cells] == list(range(1, len(cells) + 1))
        shown = {int(c[1]): c for c in cells}
        found = set(shown) & set(audit_project["wrong"])
        assert found, cells
        for tid in found:
            assert shown[tid][2] == audit_project["wrong"][tid]  # the given (wrong) label
            assert shown[tid][5]  # why
        suspicion = [float(c[4]) for c in cells]
        assert suspicion == sorted(suspicion, reverse=True)
        page.locator("#audit").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "lead-dashboard-audit.png"), full_page=True)
    assert errors == []
