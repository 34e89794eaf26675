"""One caller's slow images never hold up another caller's fetches (Embedder fetch threads)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from labelwheel.features import Embedder, local_read_threads

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


class _Readers:
    """A reader that records which threads read and how many at once."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.inside = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, ref: str) -> bytes:
        with self.lock:
            self.threads.add(threading.get_ident())
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            threading.Event().wait(0.01)  # long enough for every thread to be reading
            return _png(int(ref))
        finally:
            with self.lock:
                self.inside -= 1


def test_a_call_reads_on_at_most_the_threads_it_is_given() -> None:
    emb = Embedder("efficientnet-lite0", SIZE, 8, cache_root=None, fetch_threads=8)
    emb.embed_refs(["warm"], lambda ref: _png(0))
    for threads, pipelined in ((2, True), (3, False), (None, True), (4, None)):
        read = _Readers()
        refs = [str(1000 * (threads or 1) + i) for i in range(24)]
        out = emb.embed_refs(refs, read, threads=threads, pipelined=pipelined)
        assert out.ok == list(range(24))
        assert read.most == len(read.threads) == (threads or 8)  # all of them, no more
    # local reads: at most local_read_threads() of them (and never more than fetch_threads)
    read = _Readers()
    out = emb.embed_refs([str(5000 + i) for i in range(24)], read, local=True)
    assert out.ok == list(range(24))
    assert read.most == len(read.threads) == min(8, local_read_threads())
    with pytest.raises(ValueError, match="threads must be at least 1"):
        emb.embed_refs(["x"], _Readers(), threads=0)
