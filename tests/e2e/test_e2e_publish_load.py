"""End-to-end: publishing never makes Label Studio fail an annotator.

On its default SQLite, Label Studio answers 500 "database is locked" to other requests while one
client writes many predictions at once. The backend writes in paced chunks
(:class:`labelwheel.publishing.PublishPacing`) and backs off on 5xx, so annotators who ask for their
next task and save annotations during ``connect`` and during the publish after a training see no
error. Two annotator threads hammer Label Studio the whole time; every response is recorded.
"""

from __future__ import annotations

import http.cookiejar
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
from e2e_helpers import choice_result, connect, create_project, train_and_wait

from labelwheel.connect import VIEW_ORDERING, VIEW_TITLE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_TASKS = 200


class Annotators:
    """Threads that play annotators: ``/next`` on the saved view, then save an answer."""

    def __init__(
        self,
        ls_url: str,
        token: str,
        project_id: int,
        view_id: int,
        label_of: Callable[[str], str],
    ):
        self.url = ls_url
        self.headers = {"Authorization": f"Token {token}"}
        self.project_id = project_id
        self.view_id = view_id
        self.label_of = label_of
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.saved = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _record(self, resp: requests.Response, what: str) -> None:
        with self._lock:
            self.statuses[resp.status_code] += 1
            if resp.status_code >= 500:
                self.errors.append(f"{what}: {resp.status_code} {resp.text[:200]}")

    def _loop(self) -> None:
        session = requests.Session()
        # API clients keep no cookie: with Label Studio's session cookie, a request runs its
        # session-timeout middleware, which creates the organisation's policy row the first
        # time (a write inside a read: 500 "database is locked" if any client writes then, and
        # not retried). Browser annotators get that row at login; a token client need not
        # hold a session at all. Seen in 2 runs of this test with a cookie jar.
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        while not self._stop.is_set():
            resp = session.get(
                f"{self.url}/api/projects/{self.project_id}/next",
                params={"view": self.view_id},
                headers=self.headers,
                timeout=60,
            )
            self._record(resp, "GET /next")
            if resp.status_code != 200:
                self._stop.wait(0.2)
                continue
            task = resp.json()
            # annotate only a few, so the publish still has most of the pool to predict
            if self.saved < 24:
                resp = session.post(
                    f"{self.url}/api/tasks/{int(task['id'])}/annotations",
                    json={"result": choice_result(self.label_of(task["data"]["image"]))},
                    headers=self.headers,
                    timeout=60,
                )
                self._record(resp, "POST annotation")
                if resp.status_code < 300:
                    with self._lock:
                        self.saved += 1
            self._stop.wait(0.05)

    @contextmanager
    def running(self, n: int = 2) -> Iterator[Annotators]:
        threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            self._stop.set()
            for t in threads:
                t.join(timeout=90)
            self._stop.clear()


def test_e2e_no_label_studio_5xx_while_publishing(label_studio, backend, client, demo_images):
    pid = create_project(client, demo_images.labels)
    ids = client.import_files(pid, demo_images.paths[:N_TASKS])
    assert len(ids) == N_TASKS
    view = client.ensure_view(pid, VIEW_TITLE, VIEW_ORDERING)
    annotators = Annotators(
        label_studio.url, label_studio.token, pid, int(view["id"]), demo_images.label_of
    )

    with annotators.running():
        result = connect(client, pid, backend)
        assert result.predicted >= N_TASKS - 30  # annotated meanwhile: predicted too, or not
        version = train_and_wait(client, backend, pid, result.ml_backend_id, timeout=400)

    assert sum(annotators.statuses.values()) > 20, "the annotators were busy during the run"
    assert annotators.saved > 0
    assert not annotators.errors, annotators.errors[:5]
    # the publish reached every task without an annotation
    unlabelled = [
        t["id"]
        for t in client.iter_tasks(pid)
        if not t.get("is_labeled") and not int(t.get("total_annotations") or 0)
    ]
    with_version = {
        int(p["task"])
        for p in client.list_project_predictions(pid)
        if p["model_version"] == version
    }
    assert set(unlabelled) <= with_version
