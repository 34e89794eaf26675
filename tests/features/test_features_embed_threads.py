"""One caller's slow images never hold up another caller's fetches (Embedder fetch threads)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from labelwheel.features import Embedder

SIZE = 64


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(48, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_a_stalled_caller_does_not_queue_another_callers_fetches() -> None:
    emb = Embedder("efficientnet-lite0", SIZE, 8, cache_root=None, fetch_threads=4)
    emb.embed_refs(["warm"], lambda ref: _png(0))  # load the backbone outside the race
    release = threading.Event()
    stalled = threading.Event()
    blocked = 0
    lock = threading.Lock()

    def read(ref: str) -> bytes:
        nonlocal blocked
        if ref.startswith("slow/"):
            with lock:
                blocked += 1
                if blocked == 4:
                    stalled.set()
            # a host that does not answer: held until the test releases it
            assert release.wait(60), "released"
        return _png(int(ref.split("/")[1]))

    slow_refs = [f"slow/{i}" for i in range(1, 13)]  # more than the fetch threads
    slow_out: list = []
    slow = threading.Thread(target=lambda: slow_out.append(emb.embed_refs(slow_refs, read)))
    slow.start()
    try:
        assert stalled.wait(30), "the slow caller holds all its fetch threads"
        done = threading.Event()
        fast_out: list = []

        def fast() -> None:
            fast_out.append(emb.embed_refs(["fast/100", "fast/101"], read))
            done.set()

        threading.Thread(target=fast, daemon=True).start()
        assert done.wait(30), "a second caller is served while the first one is stalled"
        assert fast_out[0].ok == [0, 1]
        assert not release.is_set()
    finally:
        release.set()
        slow.join(60)
    assert slow_out and slow_out[0].ok == list(range(len(slow_refs)))


def test_a_call_reads_on_at_most_the_threads_it_is_given() -> None:
    emb = Embedder("efficientnet-lite0", SIZE, 8, cache_root=None, fetch_threads=8)
    emb.embed_refs(["warm"], lambda ref: _png(0))
    for threads, pipelined in ((2, True), (3, False), (None, True)):
        emb.pipelined = pipelined
        readers: set[int] = set()
        inside = 0
        most = 0
        lock = threading.Lock()

        def read(ref: str) -> bytes:
            nonlocal inside, most
            with lock:
                readers.add(threading.get_ident())
                inside += 1
                most = max(most, inside)
            try:
                threading.Event().wait(0.01)  # long enough for every thread to be reading
                return _png(int(ref))
            finally:
                with lock:
                    inside -= 1

        refs = [str(1000 * (threads or 1) + i) for i in range(24)]
        out = emb.embed_refs(refs, read, threads=threads)
        assert out.ok == list(range(24))
        assert most <= (threads or 8) and len(readers) <= (threads or 8)
        assert most == (threads or 8)  # and it does use them
    with pytest.raises(ValueError, match="threads must be at least 1"):
        emb.embed_refs(["x"], read, threads=0)
