"""Decoding overlapped with inference (the Embedder's pipelined path) and reduced-size JPEG
decoding, on real photographs with the real backbone.

- the pipelined path gives the sequential path's embeddings (cosine >= 0.999), in the input's
  order even when images arrive out of order, and the same per-image errors;
- it reads only a bounded window ahead of the backbone (memory does not grow with the list);
- JPEGs are decoded at reduced size (Pillow's ``draft``) when a small input is wanted, with
  embeddings within cosine 0.99 of the full decode; the backbone's input is float32 throughout.
"""

from __future__ import annotations

import io
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from labelwheel.features import Embedder, load_backbone
from labelwheel.features.backbone import Backbone
from labelwheel.features.pipeline import ordered_map
from labelwheel.media.decode import PixelBudget, decode_image

SIZE = 64  # the pipeline's behaviour does not depend on the input size; 224 px is measured below
BIG = 224


def _photos() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [getattr(skimage.data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")]
    photos += list(load_sample_images().images)  # china.jpg, flower.jpg
    return [np.ascontiguousarray(p[..., :3]) for p in photos]


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def photo_set(count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct crops of real photos, JPEG and PNG alternately, 120-300 px."""
    photos = _photos()
    rng = np.random.default_rng(seed)
    out = []
    for n in range(count):
        p = photos[n % len(photos)]
        h, w = p.shape[:2]
        side = int(rng.integers(120, 300))
        y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        tile = Image.fromarray(np.ascontiguousarray(p[y : y + side, x : x + side]))
        out.append(_encode(tile, "JPEG", quality=90) if n % 2 else _encode(tile, "PNG"))
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(
        (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)), np.float32
    )


@pytest.fixture(scope="module")
def net() -> Backbone:
    return load_backbone("efficientnet-lite0", SIZE, 8)


@pytest.fixture(scope="module")
def net_224() -> Backbone:
    return load_backbone("efficientnet-lite0", BIG, 8)


def embedder(net: Backbone, *, pipelined: bool, batch: int = 8, threads: int = 4) -> Embedder:
    return Embedder(
        net.name,
        net.image_size,
        batch,
        cache_root=None,
        loader=lambda: net,
        fetch_threads=threads,
        pipelined=pipelined,
    )


# ------------------------------------------------------------------------------ ordered_map


def test_ordered_map_keeps_the_order_and_a_bounded_window() -> None:
    started = 0
    taken = 0
    worst = 0
    lock = threading.Lock()
    rng = random.Random(0)
    delays = [rng.uniform(0, 0.01) for _ in range(60)]

    def work(i: int) -> int:
        nonlocal started, worst
        with lock:
            started += 1
            worst = max(worst, started - taken)
        time.sleep(delays[i])  # later items often finish first
        return i * i

    got = []
    for value in ordered_map(work, range(60), workers=4, ahead=6):
        got.append(value)
        time.sleep(0.002)  # the consumer is the slow stage: the window fills up
        with lock:
            taken += 1
    assert got == [i * i for i in range(60)]
    # at most ``ahead`` items started beyond the one the caller holds
    assert 4 <= worst <= 7, worst


def test_ordered_map_raises_at_the_items_turn_and_stops_early() -> None:
    calls: list[int] = []

    def work(i: int) -> int:
        calls.append(i)
        if i == 3:
            raise RuntimeError("item 3 failed")
        return i

    got = []
    with pytest.raises(RuntimeError, match="item 3"):
        for value in ordered_map(work, range(1000), workers=2, ahead=4):
            got.append(value)
    assert got == [0, 1, 2]
    time.sleep(0.1)
    assert len(calls) < 20  # the rest of the input was never started

    gen = ordered_map(lambda i: i, iter(range(10**9)), workers=2, ahead=3)
    assert [next(gen) for _ in range(5)] == [0, 1, 2, 3, 4]
    gen.close()  # an endless input, abandoned: nothing keeps running

    with pytest.raises(ValueError):
        list(ordered_map(lambda i: i, [1], workers=0, ahead=1))


def test_calls_reuse_idle_threads_but_never_share_them() -> None:
    def names(count: int, hold: threading.Event | None = None) -> set[str]:
        def work(i: int) -> str:
            if hold is not None:
                assert hold.wait(30)
            time.sleep(0.005)
            return threading.current_thread().name

        return set(ordered_map(work, range(count), workers=3, ahead=6, thread_name_prefix="t"))

    first = names(12)
    assert len(first) == 3
    assert names(12) == first  # the same threads again: none started for the second call
    hold = threading.Event()
    stalled: list[set[str]] = []
    runner = threading.Thread(target=lambda: stalled.append(names(6, hold)))
    runner.start()
    try:
        time.sleep(0.2)  # the stalled call holds its threads
        other = names(6)
        assert len(other) == 3 and not other & first  # threads of its own, started anew
    finally:
        hold.set()
        runner.join(30)
    assert stalled and stalled[0] <= first


# ------------------------------------------------------------------- pipelined vs sequential


def test_pipelined_embeddings_equal_the_sequential_path_in_order(net: Backbone) -> None:
    blobs = photo_set(40)
    blobs[7] = blobs[2]  # the same content twice: embedded once, both positions served
    refs = [f"img/{i}" for i in range(len(blobs))]
    rng = random.Random(1)
    jitter = {ref: rng.uniform(0, 0.01) for ref in refs}

    def read(ref: str) -> bytes:
        time.sleep(jitter[ref])  # images arrive out of order
        return blobs[int(ref.split("/")[1])]

    seq_emb = embedder(net, pipelined=False)
    seq = seq_emb.embed_refs(refs, read)
    pipe_emb = embedder(net, pipelined=True)
    pipe = pipe_emb.embed_refs(refs, read)
    assert seq.ok == pipe.ok == list(range(len(refs)))
    assert pipe.hashes == seq.hashes
    a = np.stack(seq.vectors)  # type: ignore[arg-type]
    b = np.stack(pipe.vectors)  # type: ignore[arg-type]
    assert a.dtype == b.dtype == np.float32
    assert float(cosines(a, b).min()) >= 0.999
    assert pipe_emb.images_embedded == len(refs) - 1  # the duplicate content once
    assert np.array_equal(pipe.vectors[7], pipe.vectors[2])

    # Order: each position holds its own image's embedding, not a neighbour's.
    one_by_one = net.embed([decode_image(b, 10**8, min_size=SIZE) for b in blobs[:12]])
    own = cosines(b[:12], one_by_one)
    assert float(own.min()) >= 0.999
    neighbours = cosines(b[:12], np.roll(one_by_one, 1, axis=0))
    assert float(neighbours.max()) < 0.99


def test_pipelined_errors_are_per_image_as_before(net: Backbone, tmp_path: Any) -> None:
    blobs = photo_set(12)
    corrupt = blobs[3][: len(blobs[3]) // 2]  # a truncated JPEG
    files = {
        "ok/0": blobs[0],
        "ok/1": blobs[1],
        "ok/2": blobs[2],
        "bad/corrupt": corrupt,
        "bad/text": b"this is not an image",
        "ok/4": blobs[4],
        "ok/5": blobs[5],
        "ok/6": blobs[6],
    }
    refs: list[str | None] = [*files, "bad/missing", None, "ok/7"]
    files["ok/7"] = blobs[7]

    def read(ref: str) -> bytes:
        if ref == "bad/missing":
            raise FileNotFoundError(ref)
        return files[ref]

    seq = embedder(net, pipelined=False).embed_refs(refs, read)
    pipe = embedder(net, pipelined=True).embed_refs(refs, read)
    assert pipe.errors == seq.errors
    assert pipe.errors[3] == "image bad/corrupt: corrupt or truncated"
    assert pipe.errors[4] == "image bad/text: not an image"
    assert pipe.errors[8] == "image bad/missing: fetch failed (FileNotFoundError)"
    assert pipe.errors[9] is not None and "no image reference" in pipe.errors[9]
    assert pipe.ok == [0, 1, 2, 5, 6, 7, 10]
    a = np.stack([seq.vectors[i] for i in pipe.ok])  # type: ignore[misc]
    b = np.stack([pipe.vectors[i] for i in pipe.ok])  # type: ignore[misc]
    assert float(cosines(a, b).min()) >= 0.999


def test_pipelined_reads_only_a_bounded_window_ahead_of_the_backbone(net_224: Backbone) -> None:
    """At 224 px the backbone sees 4 images per pass; while the first pass is held, at most
    the pass and ``max(fetch_threads, 2 passes)`` more images have been read."""
    blobs = photo_set(8)
    release = threading.Event()
    in_first_pass = threading.Event()
    passes = 0
    dtypes: list[tuple[Any, tuple[int, ...]]] = []

    def held_forward(inputs: np.ndarray) -> np.ndarray:
        nonlocal passes
        passes += 1
        dtypes.append((inputs.dtype, inputs.shape))
        if passes == 1:
            in_first_pass.set()
            assert release.wait(60)
        return net_224._forward(inputs)

    held = Backbone(
        net_224.name,
        net_224.image_size,
        net_224.dim,
        net_224.batch_size,
        net_224._net,
        held_forward,
        net_224._mean,
        net_224._std,
        net_224.runtime,
    )
    reads = 0
    lock = threading.Lock()

    def read(ref: str) -> bytes:
        nonlocal reads
        with lock:
            reads += 1
        return blobs[int(ref) % len(blobs)]

    refs = [str(i) for i in range(64)]
    emb = embedder(held, pipelined=True, batch=32, threads=8)
    assert emb.forward_batch == 4
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(emb.embed_refs(refs, read)))
    worker.start()
    try:
        assert in_first_pass.wait(120), "the first pass starts"
        time.sleep(1.0)  # give the decoding threads every chance to run ahead
        with lock:
            read_while_held = reads
    finally:
        release.set()
        worker.join(120)
    assert 4 < read_while_held <= 4 + 8 + 1, read_while_held
    # everything embedded in the end; content repeats every 8 images, embedded once each
    assert result and result[0].ok == list(range(64))
    assert all(dtype == np.float32 for dtype, _ in dtypes)
    assert all(shape[1:] == (3, BIG, BIG) and shape[0] <= 4 for _, shape in dtypes)


# ------------------------------------------------------------------ reduced-size JPEG decode


def big_photos(fmt: str) -> Iterator[tuple[bytes, tuple[int, int]]]:
    """Real photos enlarged to about 2000 px on the long side (a camera's size class)."""
    for p in _photos():
        image = Image.fromarray(p)
        scale = 2000 / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
        yield _encode(image, fmt, quality=92) if fmt == "JPEG" else _encode(image, fmt), image.size


def test_jpegs_decode_at_reduced_size_with_the_full_decodes_embeddings(
    net_224: Backbone,
) -> None:
    full_inputs, draft_inputs = [], []
    for data, (w, h) in big_photos("JPEG"):
        budget = PixelBudget(10**8)
        small = decode_image(data, 10**8, min_size=BIG, budget=budget)
        # the decoder itself worked at 1/2 or 1/4 scale: never the full pixel count, and
        # never below twice the input size (the final resize's step stays >= 2x)
        assert budget.peak_in_use <= w * h // 3, (budget.peak_in_use, w * h)
        assert 2 * BIG <= min(small.size) < 4 * BIG and small.mode == "RGB"
        full = decode_image(data, 10**8, budget=PixelBudget(10**8))
        assert full.size == (w, h)
        draft_inputs.append(net_224.prepare(small))
        full_inputs.append(net_224.prepare(full))
    x_draft, x_full = np.stack(draft_inputs), np.stack(full_inputs)
    assert x_draft.dtype == x_full.dtype == np.float32
    cos = cosines(net_224.forward(x_draft), net_224.forward(x_full))
    # measured 0.9995 or more; drafting down to the input size itself (8x here) gave 0.983
    assert float(cos.min()) >= 0.995, cos


def test_pngs_cannot_draft_and_decode_at_full_size_first() -> None:
    data, (w, h) = next(big_photos("PNG"))
    budget = PixelBudget(10**8)
    small = decode_image(data, 10**8, min_size=BIG, budget=budget)
    assert budget.peak_in_use == w * h  # no reduced-size decoding for PNG
    assert 2 * BIG <= min(small.size) < 4 * BIG  # but shrunk right after decoding


def test_prepared_inputs_are_float32_for_every_image_mode(net: Backbone) -> None:
    photo = Image.fromarray(_photos()[0]).resize((300, 300))
    ramp = np.tile(np.linspace(0, 65535, 300).astype(np.uint16), (300, 1))
    images: dict[str, Callable[[], bytes]] = {
        "jpeg": lambda: _encode(photo, "JPEG"),
        "png-rgba": lambda: _encode(photo.convert("RGBA"), "PNG"),
        "png-palette": lambda: _encode(photo.convert("P"), "PNG"),
        "png-16bit": lambda: _encode(Image.fromarray(ramp), "PNG"),
        "grey-jpeg": lambda: _encode(photo.convert("L"), "JPEG"),
    }
    for name, make in images.items():
        arr = net.prepare(decode_image(make(), 10**8, min_size=SIZE))
        assert arr.dtype == np.float32 and arr.shape == (3, SIZE, SIZE), name
