"""labelwheel.ls_api against a real Label Studio (and its error handling without one)."""

from __future__ import annotations

import base64
import io
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from labelwheel.label_config import image_classification_config, parse_classification_config
from labelwheel.ls_api import LabelStudioClient, LabelStudioError, is_legacy_token
from labelwheel.ls_local import LocalLabelStudio, free_port
from labelwheel.media import ImageFetcher, ImagePolicy

CONFIG = image_classification_config(["red", "green", "blue"])


def _png(path: Path, color: tuple[int, int, int]) -> Path:
    Image.new("RGB", (16, 12), color).save(path)
    return path


def _data_uri(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _project(client: LabelStudioClient, name: str) -> int:
    return int(client.create_project(f"{name} {secrets.token_hex(3)}", CONFIG)["id"])


# -- without a server ------------------------------------------------------------------------------


def test_key_kinds_and_bad_arguments() -> None:
    assert is_legacy_token("0123456789abcdef0123456789ABCDEF01234567")
    assert not is_legacy_token("eyJhbGciOi.eyJ0b2tlbl90.sig")
    with pytest.raises(ValueError, match="LABEL_STUDIO_URL"):
        LabelStudioClient("", "k")
    with pytest.raises(ValueError, match="http"):
        LabelStudioClient("localhost:8080", "k")
    with pytest.raises(ValueError, match="LABEL_STUDIO_API_KEY"):
        LabelStudioClient("http://127.0.0.1:1", " ")
    client = LabelStudioClient("http://127.0.0.1:1/", "a" * 40)
    assert client.url == "http://127.0.0.1:1"
    assert client.auth_headers() == {"Authorization": f"Token {'a' * 40}"}
    with pytest.raises(ValueError, match="not on Label Studio"):
        client.request("GET", "http://example.com/api/projects")


def test_unreachable_label_studio_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LabelStudioError, match=f"cannot reach Label Studio at {url}") as e:
        LabelStudioClient(url, "a" * 40, timeout=3).get_project(1)
    assert e.value.call == "GET /api/projects/1"
    with pytest.raises(LabelStudioError, match="cannot reach Label Studio"):
        LabelStudioClient(url, "not-a-legacy-token", timeout=3).get_project(1)


# -- with Label Studio -----------------------------------------------------------------------------


@pytest.mark.e2e
def test_import_iterate_and_fetch(ls_client: LabelStudioClient, tmp_path: Path) -> None:
    pid = _project(ls_client, "import")
    files = [_png(tmp_path / f"img{i}.png", (40 * i, 0, 0)) for i in range(3)]
    file_ids = ls_client.import_files(pid, files)
    assert len(file_ids) == 3 and len(set(file_ids)) == 3
    data_ids = ls_client.import_tasks(pid, [{"image": _data_uri((0, 9 * i, 0))} for i in range(4)])
    assert len(data_ids) == 4
    tasks = list(ls_client.iter_tasks(pid, page_size=2))  # 4 pages, the last one short
    assert [t["id"] for t in tasks] == file_ids + data_ids
    assert all(t["total_annotations"] == 0 for t in tasks)
    uploads = [t["data"]["image"] for t in tasks[:3]]
    assert all(u.startswith(f"/data/upload/{pid}/") for u in uploads)
    assert [u.rsplit("-", 1)[-1] for u in uploads] == ["img0.png", "img1.png", "img2.png"]
    # exact pages: 7 tasks, page_size 7 and 1
    assert len(list(ls_client.iter_tasks(pid, page_size=7))) == 7
    assert len(list(ls_client.iter_tasks(pid, page_size=1))) == 7

    assert ls_client.fetch_bytes(uploads[0], 10_000, 10) == files[0].read_bytes()
    with pytest.raises(LabelStudioError, match="larger than"):
        ls_client.fetch_bytes(uploads[0], 10, 10)
    r = requests.get(ls_client.url + uploads[0], timeout=10)
    assert r.status_code == 401  # uploads need credentials
    fetcher = ImageFetcher(ImagePolicy(ls_client.url, None, frozenset()), ls_client.auth_headers)
    assert fetcher.load(uploads[1]).getpixel((0, 0)) == (40, 0, 0)
    assert fetcher.load(tasks[4]["data"]["image"]).getpixel((0, 0)) == (0, 9, 0)
    assert ls_client.get_task(file_ids[0])["data"]["image"] == uploads[0]


@pytest.mark.e2e
def test_local_files_served_to_the_fetcher(
    ls_client: LabelStudioClient, label_studio: LocalLabelStudio
) -> None:
    root = label_studio.local_files_root
    assert root is not None
    (root / "set").mkdir(exist_ok=True)
    _png(root / "set" / "a.png", (1, 2, 3))
    pid = _project(ls_client, "local")
    # Label Studio serves local files only under a local storage of the project
    ls_client.request(
        "POST",
        "/api/storages/localfiles",
        json={"project": pid, "path": str(root / "set"), "title": "set", "use_blob_urls": True},
    )
    (tid,) = ls_client.import_tasks(pid, [{"image": "/data/local-files/?d=set/a.png"}])
    ref = ls_client.get_task(tid)["data"]["image"]
    # Label Studio serves it (with credentials) and the fetcher reads it under the same root
    assert ls_client.fetch_bytes(ref, 10_000, 10) == (root / "set" / "a.png").read_bytes()
    fetcher = ImageFetcher(ImagePolicy(ls_client.url, root, frozenset()), ls_client.auth_headers)
    assert fetcher.load(ref).getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.e2e
def test_errors_carry_call_status_and_message(ls_client: LabelStudioClient) -> None:
    with pytest.raises(LabelStudioError) as e:
        ls_client.get_project(987654)
    assert e.value.status == 404
    assert str(e.value).startswith("GET /api/projects/987654 failed: HTTP 404: No Project")
    with pytest.raises(LabelStudioError, match=r"POST /api/projects failed: HTTP 400: .*title"):
        ls_client.create_project("ab", CONFIG)
    bad = LabelStudioClient(ls_client.url, secrets.token_hex(20))
    with pytest.raises(LabelStudioError, match=r"HTTP 401.*LABEL_STUDIO_API_KEY") as e:
        bad.list_projects()
    assert e.value.status == 401
    garbage = LabelStudioClient(ls_client.url, "this-is-not-a-token")
    with pytest.raises(LabelStudioError, match="neither a 40-hex legacy token nor a valid"):
        garbage.list_projects()


@pytest.mark.e2e
def test_predictions_model_version_and_ordering(ls_client: LabelStudioClient) -> None:
    pid = _project(ls_client, "order")
    ids = ls_client.import_tasks(pid, [{"image": _data_uri((i, i, i))} for i in range(5)])
    cfg = parse_classification_config(CONFIG)
    scores = {ids[0]: 0.9, ids[1]: 0.1, ids[2]: 0.5, ids[3]: 0.3}  # ids[4]: no prediction
    for tid, score in scores.items():
        result = cfg.prediction_result([0.2, 0.7, 0.1])
        pred = ls_client.create_prediction(tid, result, score, "vtest")
        assert pred["model_version"] == "vtest" and pred["task"] == tid
    with pytest.raises(LabelStudioError) as e:
        ls_client.set_project_model_version(pid, "never-predicted")
    assert e.value.status == 400
    ls_client.set_project_model_version(pid, "vtest")
    assert ls_client.get_project(pid)["model_version"] == "vtest"
    ordered = [
        t["id"]
        for t in ls_client.iter_tasks(
            pid, page_size=2, query={"ordering": ["tasks:predictions_score"]}
        )
    ]
    assert ordered == [ids[1], ids[3], ids[2], ids[0], ids[4]]  # ascending, unscored last
    view = ls_client.ensure_view(pid, "by score", ["tasks:predictions_score"])
    via_view = [t["id"] for t in ls_client.iter_tasks(pid, view_id=int(view["id"]))]
    assert via_view == ordered
    nxt = ls_client.next_task(pid, view_id=int(view["id"]))
    assert nxt is not None and nxt["id"] == ids[1]
    preds = ls_client.list_project_predictions(pid)
    assert sorted(p["task"] for p in preds) == sorted(scores)
    assert ls_client.list_predictions(ids[0])[0]["score"] == pytest.approx(0.9)


@pytest.mark.e2e
def test_views_are_idempotent(ls_client: LabelStudioClient) -> None:
    pid = _project(ls_client, "views")
    v1 = ls_client.ensure_view(pid, "mine", ["tasks:predictions_score"])
    v2 = ls_client.ensure_view(pid, "mine", ["-tasks:id"])
    assert v1["id"] == v2["id"]
    assert v2["data"]["ordering"] == ["-tasks:id"]
    other = ls_client.ensure_view(pid, "other", ["tasks:id"])
    assert other["id"] != v1["id"]
    # a duplicate made by hand is removed on the next ensure
    ls_client.request(
        "POST",
        "/api/dm/views",
        json={"project": pid, "data": {"title": "mine", "ordering": []}},
    )
    v3 = ls_client.ensure_view(pid, "mine", ["tasks:predictions_score"])
    titles = [v["data"]["title"] for v in ls_client.list_views(pid)]
    assert sorted(titles) == ["mine", "other"]
    assert v3["id"] == v1["id"]
    assert v3["data"]["ordering"] == ["tasks:predictions_score"]


@pytest.mark.e2e
def test_webhook_headers_are_idempotent(ls_client: LabelStudioClient) -> None:
    pid = _project(ls_client, "hooks")
    backend = f"http://127.0.0.1:{free_port()}"
    ls_client.ensure_webhook_headers(pid, backend, {"Authorization": "Basic abc"})
    hooks = ls_client.list_webhooks(pid)
    assert len(hooks) == 1
    assert hooks[0]["url"] == f"{backend}/webhook"
    assert hooks[0]["send_for_all_actions"] is True
    assert hooks[0]["headers"] == {"Authorization": "Basic abc"}
    ls_client.ensure_webhook_headers(pid, backend + "/", {"Authorization": "Basic xyz", "X-A": "1"})
    hooks = ls_client.list_webhooks(pid)
    assert len(hooks) == 1
    assert hooks[0]["headers"] == {"Authorization": "Basic xyz", "X-A": "1"}
    assert hooks[0]["is_active"] is True


def _pat(client: LabelStudioClient) -> str:
    token = client.create_personal_access_token()
    assert token.count(".") == 2
    return token


@pytest.mark.e2e
@pytest.mark.slow
def test_personal_access_token_and_legacy_tokens_off(
    fresh_label_studio: LocalLabelStudio, tmp_path: Path
) -> None:
    ls = fresh_label_studio
    legacy = LabelStudioClient(ls.url, ls.token)
    pat = LabelStudioClient(ls.url, _pat(legacy))
    assert not pat.legacy
    header = pat.auth_headers()["Authorization"]
    assert header.startswith("Bearer ") and header != f"Bearer {pat.api_key}"
    assert pat.whoami()["email"] == ls.username
    # the access token is cached until shortly before it expires
    assert pat.auth_headers()["Authorization"] == header
    pat._access_exp = 0.0  # as if it had expired
    assert pat.auth_headers()["Authorization"] != header
    # a token Label Studio refuses is refreshed once, then the call succeeds
    pat._access = "not.a.token"
    pat._access_exp = 4e9
    assert pat.whoami()["email"] == ls.username
    # a refresh token is refused as Bearer and as Token
    for scheme in ("Bearer", "Token"):
        r = requests.get(
            f"{ls.url}/api/projects",
            headers={"Authorization": f"{scheme} {pat.api_key}"},
            timeout=10,
        )
        assert r.status_code == 401

    with pytest.raises(LabelStudioError) as e:
        legacy.create_personal_access_token()
    assert e.value.status == 409

    settings = pat.set_legacy_tokens_enabled(False)
    assert settings["legacy_api_tokens_enabled"] is False
    with pytest.raises(LabelStudioError, match="legacy tokens stop working") as e:
        legacy.list_projects()
    assert e.value.status == 401
    # everything still works with the PAT, multipart uploads and file fetches included
    pid = int(pat.create_project("pat project", CONFIG)["id"])
    (tid,) = pat.import_files(pid, [_png(tmp_path / "p.png", (7, 7, 7))])
    ref = pat.get_task(tid)["data"]["image"]
    assert pat.fetch_bytes(ref, 10_000, 10) == (tmp_path / "p.png").read_bytes()
    fetcher = ImageFetcher(ImagePolicy(pat.url, None, frozenset()), pat.auth_headers)
    assert fetcher.load(ref).getpixel((0, 0)) == (7, 7, 7)
    got: Any = pat.request("GET", "/api/jwt/settings").json()
    assert json.loads(json.dumps(got))["legacy_api_tokens_enabled"] is False
