"""End-to-end: a project whose images live in cloud storage.

A real S3-compatible server on loopback (moto's standalone server) holds 40 demo digits; Label
Studio imports them through an S3 source storage (presigned URLs), so its tasks hold raw
``s3://bucket/key`` URIs. The backend never sees the storage's credentials: it reads each image
through Label Studio's resolve endpoint for the task (with the API token) and follows Label
Studio's 303 to the presigned URL on the storage host (without the token).

- every task gets a prediction with a score at connect time, annotations train a version, and
  every unlabelled task then gets a pre-label of that version;
- the resolve path the backend builds is the one Label Studio hands out itself, and reading it
  gives the object's bytes;
- the GCS and Azure URI forms reach Label Studio's resolver decoded as meant (it answers 404 for a
  storage the project does not have, and names the URI in its log).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
    wait_for,
)

from labelwheel.ls_api import LabelStudioClient
from labelwheel.ls_local import free_port
from labelwheel.media import ImageError, ImageFetcher, ImagePolicy
from labelwheel.media.storage import (
    encode_fileuri,
    parse_resolve_path,
    task_image_ref,
    task_resolve_path,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUCKET = "labelwheel-digits"
PREFIX = "digits"
PER_CLASS = 4  # 40 images: 4 per digit
LABELLED_PER_CLASS = 2  # 20 annotations train the first version
# moto accepts any key pair; these are the storage's credentials, known to Label Studio only.
S3_KEY_ID, S3_SECRET = "AKIALABELWHEELTEST", secrets.token_hex(16)


@dataclass
class MotoS3:
    endpoint: str
    proc: subprocess.Popen[bytes]

    def client(self):  # boto3 client with the storage's credentials (the test's side only)
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto's standalone S3 server on a free loopback port (a real HTTP server, own process)."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.fail("moto_server not found: pip install 'moto[server]' (dev extra)", pytrace=False)
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, f"moto_server exited with {proc.returncode}"
        return requests.get(f"{endpoint}/moto-api/", timeout=2).status_code < 500

    try:
        wait_for(up, 60, "moto_server answers")
        yield MotoS3(endpoint, proc)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@dataclass
class S3Project:
    project_id: int
    storage_id: int
    ml_backend_id: int
    keys: dict[int, str]  # task id -> object key
    objects: dict[str, bytes]  # object key -> bytes uploaded
    truth: dict[int, str]  # task id -> held-back label
    predicted_at_connect: int


def _task_uri(task: dict) -> str:
    """The storage URI behind a task as Label Studio hands it out (its own resolve URL)."""
    target = parse_resolve_path(task["data"]["image"])
    assert target is not None, f"not a resolve URL: {task['data']['image']!r}"
    return target.uri


@pytest.fixture(scope="module")
def s3_project(label_studio, backend, demo_images, moto_s3) -> S3Project:
    client = LabelStudioClient(label_studio.url, label_studio.token, timeout=120)
    s3 = moto_s3.client()
    s3.create_bucket(Bucket=BUCKET)
    chosen = []
    for label in demo_images.labels:
        chosen += [im for im in demo_images.images if im.label == label][:PER_CLASS]
    objects: dict[str, bytes] = {}
    labels_by_key: dict[str, str] = {}
    for im in chosen:
        key = f"{PREFIX}/{im.name}"
        objects[key] = im.path.read_bytes()
        labels_by_key[key] = im.label
        s3.put_object(Bucket=BUCKET, Key=key, Body=objects[key], ContentType="image/png")

    pid = create_project(client, demo_images.labels, title=f"e2e s3 {secrets.token_hex(3)}")
    storage = client.request(
        "POST",
        "/api/storages/s3/",
        json={
            "project": pid,
            "title": "digits on S3",
            "bucket": BUCKET,
            "prefix": PREFIX,
            "regex_filter": r".*\.png",
            "use_blob_urls": True,
            "presign": True,
            "presign_ttl": 15,
            "aws_access_key_id": S3_KEY_ID,
            "aws_secret_access_key": S3_SECRET,
            "region_name": "us-east-1",
            "s3_endpoint": moto_s3.endpoint,
        },
    ).json()
    client.request("POST", f"/api/storages/s3/{storage['id']}/sync")
    tasks = wait_for(
        lambda: (t := list(client.iter_tasks(pid))) and len(t) == len(chosen) and t,
        120,
        f"Label Studio imports {len(chosen)} tasks from the S3 storage",
    )
    keys: dict[int, str] = {}
    for task in tasks:
        uri = _task_uri(task)
        assert uri.startswith(f"s3://{BUCKET}/{PREFIX}/"), uri
        keys[int(task["id"])] = uri[len(f"s3://{BUCKET}/") :]
    result = connect(client, pid, backend)
    return S3Project(
        project_id=pid,
        storage_id=int(storage["id"]),
        ml_backend_id=result.ml_backend_id,
        keys=keys,
        objects=objects,
        truth={tid: labels_by_key[key] for tid, key in keys.items()},
        predicted_at_connect=result.predicted,
    )


def _labelled(task: dict) -> bool:
    return bool(task.get("is_labeled")) or int(task.get("total_annotations") or 0) > 0


def test_e2e_s3_every_task_predicted_then_prelabelled(client, backend, s3_project):
    pid = s3_project.project_id
    n = len(s3_project.keys)
    # Label Studio keeps the raw URI in the task (what /predict and the webhook receive).
    some = next(iter(s3_project.keys))
    raw = client.request("GET", f"/api/tasks/{some}", params={"resolve_uri": "false"}).json()
    assert raw["data"]["image"] == f"s3://{BUCKET}/{s3_project.keys[some]}"

    # Connect: every task got a prediction with a score, and every image was read.
    assert s3_project.predicted_at_connect == n
    version0 = project_model_version(client, pid)
    preds0 = predictions_by_task(client, pid, version0)
    assert set(preds0) == set(s3_project.keys)
    scores = sorted(float(p["score"]) for p in preds0.values())
    assert scores == [i / n for i in range(n)], "each task holds its own rank in the pool"
    # ranked by the selector over the pool's images, not the fallback order of unreadable
    # images (task order)
    by_score = sorted(preds0, key=lambda tid: float(preds0[tid]["score"]))
    assert by_score != sorted(preds0), "the pool's images were read and ranked"
    assert backend.metric("labelwheel_prediction_image_failures_total", project=pid) == 0

    # Annotate two images of each digit; "Start training" makes and publishes a version.
    by_label: dict[str, list[int]] = {}
    for tid in sorted(s3_project.truth):
        by_label.setdefault(s3_project.truth[tid], []).append(tid)
    to_label = [tid for tids in by_label.values() for tid in tids[:LABELLED_PER_CLASS]]
    for tid in to_label:
        annotate(client, tid, s3_project.truth[tid])
    version1 = train_and_wait(client, backend, pid, s3_project.ml_backend_id)
    assert version1 != version0

    # Every unlabelled task now holds a pre-label of the new version.
    preds1 = predictions_by_task(client, pid, version1)
    open_tasks = [int(t["id"]) for t in client.iter_tasks(pid) if not _labelled(t)]
    assert len(open_tasks) == n - len(to_label)
    missing = [tid for tid in open_tasks if tid not in preds1]
    assert not missing, f"tasks without a prediction of {version1}: {missing}"
    unlabelled = [tid for tid in open_tasks if chosen_label(preds1[tid]["result"]) is None]
    assert not unlabelled, f"tasks without a pre-label of {version1}: {unlabelled}"
    right = sum(chosen_label(preds1[t]["result"]) == s3_project.truth[t] for t in open_tasks)
    assert right >= len(open_tasks) // 4, f"{right}/{len(open_tasks)} pre-labels right"
    assert backend.metric("labelwheel_prediction_image_failures_total", project=pid) == 0


def _fetcher(label_studio) -> ImageFetcher:
    """The media layer's fetcher as the backend builds it: Label Studio's URL and token, no
    allowlist (the storage host is reached only through Label Studio's redirect)."""
    client = LabelStudioClient(label_studio.url, label_studio.token)
    policy = ImagePolicy(ls_url=label_studio.url, local_files_root=None)
    return ImageFetcher(policy, client.auth_headers)


def test_e2e_s3_resolve_path_is_label_studios_and_reads_the_object(
    client, label_studio, moto_s3, s3_project
):
    fetcher = _fetcher(label_studio)
    tasks = list(client.iter_tasks(s3_project.project_id, fields="all"))
    for task in tasks[:5]:
        tid = int(task["id"])
        uri = f"s3://{BUCKET}/{s3_project.keys[tid]}"
        ours = task_image_ref(uri, tid, s3_project.project_id)
        handed_out = urllib.parse.urlsplit(task["data"]["image"])
        assert ours == f"{handed_out.path}?{handed_out.query}", "the path Label Studio hands out"
        assert task_image_ref(task["data"]["image"], tid) == ours, "one form per task"
        # Label Studio answers 303 to a presigned URL on the storage host.
        resp = client.request("GET", ours, allow_redirects=False)
        assert resp.status_code == 303
        location = urllib.parse.urlsplit(resp.headers["Location"])
        assert f"{location.scheme}://{location.netloc}" == moto_s3.endpoint
        assert "X-Amz-Signature=" in location.query, "a presigned URL"
        # The fetcher follows it (without the token) and reads the object's bytes.
        assert fetcher.fetch_bytes(ours) == s3_project.objects[s3_project.keys[tid]]


@pytest.mark.parametrize("scheme", ["gs", "azure-blob", "azure-spi"])
def test_e2e_gcs_and_azure_uri_forms_reach_label_studios_resolver(
    client, label_studio, s3_project, scheme
):
    tid = next(iter(s3_project.keys))
    uri = f"{scheme}://{BUCKET}/{s3_project.keys[tid]}-{secrets.token_hex(4)}"
    path = task_image_ref(uri, tid)
    assert (
        path
        == task_resolve_path(tid, uri)
        == f"/tasks/{tid}/resolve/?fileuri={encode_fileuri(uri)}"
    )
    # Label Studio decodes it to the URI we meant and looks for a storage of that kind: the
    # project has none, so 404 (what it answers for any URI no storage of the project reads).
    resp = requests.get(
        label_studio.url + path, headers=client.auth_headers(), allow_redirects=False, timeout=30
    )
    assert resp.status_code == 404
    assert f"Could not find storage for URI {uri}" in wait_for(
        lambda: (log := label_studio.log_path.read_text(errors="replace")) and uri in log and log,
        10,
        f"Label Studio logs the decoded URI {uri}",
    )
    with pytest.raises(ImageError) as err:
        _fetcher(label_studio).fetch_bytes(path)
    assert "404" in str(err.value)


def test_e2e_s3_proxy_mode_storage_is_read_through_label_studio(
    client, label_studio, demo_images, moto_s3
):
    """A storage with ``presign`` off: Label Studio answers the resolve path with the bytes
    itself (proxy mode), so the backend talks to Label Studio only."""
    bucket = f"proxied-{secrets.token_hex(3)}"
    s3 = moto_s3.client()
    s3.create_bucket(Bucket=bucket)
    images = demo_images.images[:3]
    for im in images:
        s3.put_object(Bucket=bucket, Key=im.name, Body=im.path.read_bytes())
    pid = create_project(client, demo_images.labels)
    storage = client.request(
        "POST",
        "/api/storages/s3/",
        json={
            "project": pid,
            "bucket": bucket,
            "regex_filter": r".*\.png",
            "use_blob_urls": True,
            "presign": False,
            "aws_access_key_id": S3_KEY_ID,
            "aws_secret_access_key": S3_SECRET,
            "region_name": "us-east-1",
            "s3_endpoint": moto_s3.endpoint,
        },
    ).json()
    client.request("POST", f"/api/storages/s3/{storage['id']}/sync")
    tasks = wait_for(
        lambda: (t := list(client.iter_tasks(pid))) and len(t) == len(images) and t,
        60,
        "Label Studio imports the proxied bucket",
    )
    fetcher = _fetcher(label_studio)
    by_name = {im.name: im.path.read_bytes() for im in images}
    for task in tasks:
        uri = _task_uri(task)
        path = task_image_ref(uri, int(task["id"]))
        resp = client.request("GET", path, allow_redirects=False)
        assert resp.status_code == 200, "proxy mode: no redirect, the bytes come from Label Studio"
        assert resp.content == by_name[uri.rsplit("/", 1)[-1]]
        assert fetcher.fetch_bytes(path) == by_name[uri.rsplit("/", 1)[-1]]


def test_e2e_s3_project_pool_for_the_lead_tools(client, s3_project, tmp_path):
    """The lead tools' pool loader reads the same tasks (as Label Studio hands them out, with its
    own host) through the same resolve path: every image readable, one reference per task."""
    from e2e_helpers import E2E_IMAGE_SIZE

    from labelwheel.pool import load_project_pool

    pool = load_project_pool(
        client, s3_project.project_id, image_size=E2E_IMAGE_SIZE, cache_dir=tmp_path
    )
    assert not pool.skipped
    assert sorted(int(i) for i in pool.ids) == sorted(s3_project.keys)
    for tid, ref in zip(pool.ids, pool.refs, strict=True):
        uri = f"s3://{BUCKET}/{s3_project.keys[int(tid)]}"
        assert ref == task_resolve_path(int(tid), uri)
