"""Embedder.embed_refs(deadline=...): work not started by the deadline is deferred, not done,
and every call still makes progress (the backend's /predict time budget rests on this)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from labelwheel.features import Embedder

SIZE = 64  # 49 images per backbone pass at this size


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def read(ref: str) -> bytes:
    return _png(int(ref))


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    emb = Embedder("efficientnet-lite0", SIZE, 8, cache_root=None)
    emb.embed_refs(["0"], read)  # the backbone, loaded
    return emb


def test_sequential_calls_do_the_first_chunk_and_defer_the_rest(embedder: Embedder) -> None:
    refs = [str(i) for i in range(100, 120)]
    out = embedder.embed_refs(refs, read, pipelined=False, deadline=time.monotonic() - 1)
    assert out.ok == list(range(8))  # one chunk of batch_size
    assert out.deferred == list(range(8, 20))
    assert all(out.vectors[i] is None and out.errors[i] is None for i in out.deferred)
    # asked again without a deadline: the deferred ones are done, the others come from cache
    again = embedder.embed_refs(refs, read, pipelined=False)
    assert again.ok == list(range(20)) and again.deferred == []
    for i in range(8):
        np.testing.assert_array_equal(again.vectors[i], out.vectors[i])


def test_pipelined_calls_do_one_pass_and_defer_the_rest(embedder: Embedder) -> None:
    step = embedder.forward_batch
    refs = [str(i) for i in range(200, 200 + step + 11)]
    out = embedder.embed_refs(refs, read, pipelined=True, deadline=time.monotonic() - 1)
    assert out.ok == list(range(step))
    assert out.deferred == list(range(step, step + 11))


def test_cached_images_and_errors_are_never_deferred(embedder: Embedder) -> None:
    refs = [str(i) for i in range(300, 310)]
    known = embedder.embed_refs(refs, read).new_hashes  # as the backend's store remembers them
    mixed = [*refs, None, "311", "312"]
    out = embedder.embed_refs(
        mixed, read, known=known, pipelined=False, deadline=time.monotonic() - 1
    )
    assert out.ok == [*range(10), 11, 12]  # cached, then the first (only) chunk
    assert out.errors[10] is not None and out.deferred == []


def test_a_deadline_not_reached_defers_nothing(embedder: Embedder) -> None:
    refs = [str(i) for i in range(400, 430)]
    for pipelined in (False, True):
        out = embedder.embed_refs(refs, read, pipelined=pipelined, deadline=time.monotonic() + 300)
        assert out.deferred == [] and len(out.ok) == 30
