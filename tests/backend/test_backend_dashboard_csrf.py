"""The dashboard's one write (POST /dashboard/api/plan) needs a CSRF token and a same-origin
request (issue 10); bad project ids and deep JSON are 4xx there too.

Refusals happen before Label Studio is contacted, so these tests need no Label Studio: an accepted
request goes on and fails with 503 ("Label Studio is unknown"), which shows the guard let it
through. The full write through the form is covered with Label Studio and headless Chromium in
tests/lead/test_lead_dashboard.py.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from flask import Flask

from labelwheel.ml_backend import csrf
from labelwheel.ml_backend.dashboard import bp

PLAN = "http://localhost/dashboard/api/plan"


def _auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    app = Flask("dashboard-csrf")
    app.register_blueprint(bp)
    app.config["LABELWHEEL_DASHBOARD"] = {"model_dir": None}
    return app


def _token(client: Any, headers: dict[str, str] | None = None) -> str:
    resp = client.get("/dashboard/api/csrf", headers=headers or {})
    assert resp.status_code == 200
    token = resp.get_json()["csrf_token"]
    assert re.fullmatch(r"\d+\.[\w-]+\.[0-9a-f]{64}", token)
    return str(token)


def _refused(resp: Any, words: str) -> None:
    assert resp.status_code == 403, resp.get_data(as_text=True)[:300]
    text = resp.get_data(as_text=True)
    assert words in text, text[:500]


def test_form_post_without_token_is_403_with_a_message(app: Flask) -> None:
    client = app.test_client()
    resp = client.post(PLAN, data={"project": 1, "budget": 2})
    _refused(resp, "CSRF token")
    assert b"<html" in resp.data  # a form post gets the error page


def test_json_post_without_token_is_403(app: Flask) -> None:
    resp = app.test_client().post(PLAN, json={"project": 1, "budget": 2})
    _refused(resp, "CSRF token")
    assert "message" in resp.get_json()


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "null"},
        {"Origin": "http://evil.example"},
        {"Referer": "http://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
    ],
    ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()),
)
def test_cross_site_post_is_403_even_with_a_valid_token(
    app: Flask, headers: dict[str, str]
) -> None:
    client = app.test_client()
    token = _token(client)
    resp = client.post(PLAN, data={"project": 1, "budget": 2, "csrf_token": token}, headers=headers)
    _refused(resp, "cross-site request refused")


def test_forged_malformed_and_expired_tokens_are_403(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app.test_client()
    good = _token(client)
    expires, nonce, mac = good.split(".")
    forged = f"{int(expires) + 10**6}.{nonce}.{mac}"
    for token, words in (
        (forged, "not valid"),
        (f"{expires}.{nonce}.{'0' * 64}", "not valid"),
        ("abc", "malformed"),
        ("²³.x.y", "malformed"),
        ("", "no CSRF token"),
    ):
        resp = client.post(PLAN, data={"project": 1, "budget": 2, "csrf_token": token})
        _refused(resp, words)
    monkeypatch.setattr(csrf, "TOKEN_SECONDS", -1)
    expired = _token(client)
    _refused(client.post(PLAN, data={"project": 1, "budget": 2, "csrf_token": expired}), "expired")


def test_token_of_another_user_is_403(app: Flask) -> None:
    client = app.test_client()
    alice, mallory = _auth("alice", "a-secret"), _auth("mallory", "m-secret")
    token = _token(client, mallory)
    resp = client.post(PLAN, data={"project": 1, "budget": 2, "csrf_token": token}, headers=alice)
    _refused(resp, "not valid")


def test_token_of_another_app_is_403(app: Flask) -> None:
    other = Flask("other-backend")
    other.register_blueprint(bp)
    token = _token(other.test_client())
    resp = app.test_client().post(PLAN, data={"project": 1, "budget": 2, "csrf_token": token})
    _refused(resp, "not valid")


def test_valid_token_same_origin_passes_the_guard(app: Flask) -> None:
    client = app.test_client()
    token = _token(client)
    for headers in ({}, {"Origin": "http://localhost"}, {"Sec-Fetch-Site": "same-origin"}):
        resp = client.post(
            PLAN, data={"project": 1, "budget": 2, "csrf_token": token}, headers=headers
        )
        # past the guard: the next step needs Label Studio, which this app does not know
        assert resp.status_code == 503, resp.get_data(as_text=True)[:300]
    resp = client.post(PLAN, json={"project": 1, "budget": 2}, headers={csrf.TOKEN_HEADER: token})
    assert resp.status_code == 503 and "LABEL_STUDIO_URL" in resp.get_json()["message"]


@pytest.mark.parametrize("project", ["²", "٣", "1" * 20, "-3", "0", "1_0", " "], ids=repr)
def test_bad_project_ids_on_the_dashboard_are_400(app: Flask, project: str) -> None:
    client = app.test_client()
    for url in ("/dashboard/api/summary", "/dashboard/api/plan", "/dashboard/coverage.png"):
        resp = client.get(url, query_string={"project": project, "budget": "2"})
        assert resp.status_code == 400, (url, project, resp.status_code)
        assert resp.get_json()["message"]


def test_deep_json_post_to_the_dashboard_is_400(app: Flask) -> None:
    client = app.test_client()
    raw = b"[" * 100_000 + b"]" * 100_000
    resp = client.post(PLAN, data=raw, content_type="application/json")
    assert resp.status_code == 400 and "deeper" in resp.get_json()["message"]
