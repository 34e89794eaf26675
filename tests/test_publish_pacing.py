"""Publishing pace: writes take at most ``duty`` of the wall time, slower when Label Studio is."""

from __future__ import annotations

import time
from typing import Any

import pytest

from labelwheel.publishing import PublishPacing, retrieve_in_chunks


def test_pause_keeps_the_writes_to_their_share_of_the_time() -> None:
    pacing = PublishPacing(duty=0.5, pause=0.25, max_pause=30.0)
    assert pacing.pause_after(4.0) == pytest.approx(4.0)  # as long as the chunk took
    assert pacing.pause_after(0.01) == pytest.approx(0.25)  # never under the floor
    assert pacing.pause_after(1000.0) == pytest.approx(30.0)  # never over the ceiling
    quarter = PublishPacing(duty=0.25)
    assert quarter.pause_after(2.0) == pytest.approx(6.0)
    assert PublishPacing(duty=1.0).pause_after(5.0) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "kw, word",
    [
        ({"duty": 0.0}, "duty"),
        ({"duty": 1.5}, "duty"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"pause": -1.0}, "pause"),
        ({"pause": 5.0, "max_pause": 1.0}, "max_pause"),
        ({"busy_retries": -1}, "busy_retries"),
    ],
)
def test_bad_pacing_is_refused_naming_the_field(kw: dict[str, Any], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        PublishPacing(**kw)


class SlowRetriever:
    """Stands in for Label Studio's retrieve action only to time the caller's pauses: the
    first chunks answer slowly (a busy server), the last ones fast."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.calls: list[tuple[float, float, list[int]]] = []

    def retrieve_predictions(
        self, project_id: int, task_ids: list[int], *, busy_retries: int = 0
    ) -> None:
        began = time.monotonic()
        time.sleep(self.delays[len(self.calls)])
        self.calls.append((began, time.monotonic(), list(task_ids)))


def test_retrieve_steps_back_after_slow_chunks() -> None:
    server = SlowRetriever([0.4, 0.4, 0.02, 0.02])
    pacing = PublishPacing(chunk_size=3, duty=0.5, pause=0.05)
    seen: list[tuple[int, int]] = []
    asked = retrieve_in_chunks(
        server,  # type: ignore[arg-type]
        7,
        list(range(10)),
        pacing,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert asked == 10
    assert [c[2] for c in server.calls] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert seen == [(3, 10), (6, 10), (9, 10), (10, 10)]
    gaps = [server.calls[i + 1][0] - server.calls[i][1] for i in range(3)]
    assert gaps[0] >= 0.38 and gaps[1] >= 0.38  # a slow chunk: a pause as long
    assert gaps[2] < 0.3  # a fast one: the floor
