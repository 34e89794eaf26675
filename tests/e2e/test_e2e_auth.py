"""End-to-end: authentication, both directions.

- Label Studio → backend: basic auth is required on /predict and /webhook (and is what Label
  Studio sends once connected).
- Backend → Label Studio: a personal access token works as well as a legacy token, also after the
  organisation turns legacy tokens off.
"""

from __future__ import annotations

import pytest
import requests
from e2e_helpers import (
    annotate,
    chosen_label,
    connect,
    create_project,
    predictions_by_task,
    project_model_version,
    train_and_wait,
)

from labelwheel.ls_api import LabelStudioClient, LabelStudioError

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PREDICT_BODY = {
    "tasks": [{"id": 1, "data": {"image": "/data/upload/1/x.png"}}],
    "project": "1.0",
    "label_config": (
        '<View><Image name="image" value="$image"/><Choices name="choice" toName="image">'
        '<Choice value="a"/><Choice value="b"/></Choices></View>'
    ),
}
WEBHOOK_BODY = {"action": "START_TRAINING", "project": {"id": 1}}


@pytest.mark.parametrize("path,body", [("/predict", PREDICT_BODY), ("/webhook", WEBHOOK_BODY)])
@pytest.mark.parametrize("auth", [None, "wrong-password", "wrong-user"])
def test_e2e_backend_refuses_missing_or_wrong_basic_auth(backend, path, body, auth) -> None:
    credentials = {
        None: None,
        "wrong-password": (backend.user, backend.password + "x"),
        "wrong-user": ("someone-else", backend.password),
    }[auth]
    resp = requests.post(f"{backend.url}{path}", json=body, auth=credentials, timeout=10)
    assert resp.status_code == 401
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["message"]
    assert "Basic" in resp.headers.get("WWW-Authenticate", "")
    # /health stays open (Label Studio checks it before anything else).
    assert requests.get(f"{backend.url}/health", timeout=10).status_code == 200


def test_e2e_personal_access_token_works_also_without_legacy_tokens(
    fresh_label_studio, backend_factory, demo_images
) -> None:
    ls = fresh_label_studio
    legacy = LabelStudioClient(ls.url, ls.token, timeout=120)
    pat = legacy.create_personal_access_token()
    assert not pat.startswith("Token") and len(pat) > 40
    client = LabelStudioClient(ls.url, pat, timeout=120)
    assert client.whoami()["email"] == legacy.whoami()["email"]

    backend = backend_factory(ls.url, pat)
    pid = create_project(client, demo_images.labels)
    client.import_files(pid, demo_images.paths[:16])
    result = connect(client, pid, backend)
    assert result.predicted == 16

    # The organisation turns legacy tokens off: Token auth is refused from now on.
    client.set_legacy_tokens_enabled(False)
    with pytest.raises(LabelStudioError) as info:
        legacy.get_project(pid)
    assert info.value.status == 401

    # The backend keeps working with the PAT: it fetches newly uploaded images, trains from
    # annotations, publishes the new version's predictions and switches the model version.
    new_ids = client.import_files(pid, demo_images.paths[16:24])
    images = {t["id"]: t["data"]["image"] for t in client.iter_tasks(pid)}
    answered = sorted(images)[:12]
    for tid in answered:
        annotate(client, tid, demo_images.label_of(images[tid]))
    version = train_and_wait(client, backend, pid, result.ml_backend_id)
    assert project_model_version(client, pid) == version
    preds = predictions_by_task(client, pid, version)
    for tid in set(images) - set(answered):
        assert chosen_label(preds[tid]["result"]) in demo_images.labels, (tid, preds.get(tid))
    assert set(new_ids) - set(answered) <= set(preds)
