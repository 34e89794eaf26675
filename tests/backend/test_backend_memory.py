"""Peak memory of /predict on 25-megapixel images stays within a fixed bound (issue 10).

A real ``labelwheel serve`` process with the default backbone and input size (224 px) gets 8
distinct 6000x4200 PNGs (about 100 MB each once decoded) in one /predict request. Before the
fix the process grew by about 1.8 GiB (every image decoded at full size at once, the memory kept
by the decoding threads); now images decode one at a time, are shrunk at once and their memory is
given back. The full measurement at batch sizes 1, 8 and 64 is benchmarks/predict_memory.py.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import requests
from backend_helpers import CONFIG_SINGLE
from backend_procs import Backend, serve_env
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 6000, 4200
GROWTH_BOUND_MIB = 256
"""Most the process may grow (peak RSS over its peak once the backbone is loaded)."""


def big_pngs(count: int) -> list[bytes]:
    """``count`` distinct 25-megapixel PNGs (gradients and a numbered block: small files)."""
    x = np.arange(WIDTH, dtype=np.int32)[None, :]
    y = np.arange(HEIGHT, dtype=np.int32)[:, None]
    base = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    base[..., 0] = (x // 24) % 256
    base[..., 1] = (y // 17) % 256
    base[..., 2] = ((x + y) // 40) % 256
    out = []
    for i in range(count):
        image = Image.fromarray(base)
        ImageDraw.Draw(image).rectangle(
            (300 * i, 200 * i, 300 * i + 900, 200 * i + 700), fill=(40 * i % 256, 200, 90)
        )
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def body(images: list[bytes], first_id: int) -> dict[str, object]:
    tasks = [
        {
            "id": first_id + i,
            "data": {"image": "data:image/png;base64," + base64.b64encode(b).decode()},
        }
        for i, b in enumerate(images)
    ]
    return {"tasks": tasks, "project": "1.1700000000", "label_config": CONFIG_SINGLE}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_predict_on_25_megapixel_images_stays_within_the_bound(tmp_path: Path) -> None:
    images = big_pngs(8)
    small = io.BytesIO()
    Image.new("RGB", (320, 240), (10, 120, 200)).save(small, format="PNG")
    log_path = tmp_path / "serve.log"
    backend = Backend(
        serve_env(tmp_path / "state", LABELWHEEL_RETRAIN_EVERY="0"), log_path, start_timeout=120
    )
    url, pid = backend.url, backend.proc.pid
    try:
        warm = requests.post(url + "/predict", json=body([small.getvalue()], 1000), timeout=300)
        assert warm.status_code == 200, warm.text
        baseline = vm_kib(pid, "VmHWM")
        resp = requests.post(url + "/predict", json=body(images, 1), timeout=600)
        assert resp.status_code == 200, resp.text
        results = resp.json()["results"]
        peak = vm_kib(pid, "VmHWM")
        after = vm_kib(pid, "VmRSS")
    finally:
        backend.stop()
    assert len(results) == 8
    assert all(isinstance(r["score"], float) for r in results)
    failures = log_path.read_text()
    assert "no prediction" not in failures, failures[-2000:]  # every image was embedded
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < GROWTH_BOUND_MIB, (
        f"/predict of 8 x 25 MP grew the process by {growth_mib:.0f} MiB "
        f"(peak {peak / 1024:.0f} MiB, baseline {baseline / 1024:.0f} MiB)"
    )
    assert (after - baseline) / 1024 < GROWTH_BOUND_MIB  # and gave the memory back


# --------------------------------------------------------------------------- decoding, in-process


def _png(image: Image.Image, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **params)
    return buf.getvalue()


def _photo(width: int, height: int) -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.BICUBIC)


def test_large_images_are_shrunk_at_decode_keeping_the_exif_orientation() -> None:
    from labelwheel.media.decode import decode_image

    photo = _photo(3000, 1200)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: displayed 1200 wide, 3000 high
    data = _png(photo, exif=exif.tobytes())
    full = decode_image(data, 40_000_000)
    small = decode_image(data, 40_000_000, min_size=64)
    assert full.size == (1200, 3000)
    assert small.mode == "RGB" and 128 <= min(small.size) < 256
    assert small.size[1] > small.size[0]  # turned like the full decode
    a = np.asarray(full.resize((48, 120), Image.BILINEAR), dtype=np.float32)
    b = np.asarray(small.resize((48, 120), Image.BILINEAR), dtype=np.float32)
    assert np.abs(a - b).mean() < 4.0  # same picture, same orientation


def test_palette_and_16_bit_images_shrink_by_colour_not_by_index() -> None:
    from labelwheel.media.decode import decode_image

    pal = Image.new("P", (1024, 1024))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, 1 blue
    pal.paste(1, (0, 0, 1024, 1024))
    pal.paste(0, (0, 0, 1024, 512))  # top half red, bottom half blue
    small = decode_image(_png(pal), 40_000_000, min_size=64)
    assert min(small.size) < 1024
    top, bottom = small.getpixel((5, 5)), small.getpixel((5, small.size[1] - 5))
    assert top == (255, 0, 0) and bottom == (0, 0, 255)
    ramp = np.tile(np.linspace(0, 65535, 1024).astype(np.uint16), (1024, 1))
    grey = decode_image(_png(Image.fromarray(ramp)), 40_000_000, min_size=64)
    row = np.asarray(grey)[10, :, 0].astype(int)
    assert min(grey.size) < 1024 and row[0] < 10 and row[-1] > 245


def test_the_pixel_budget_bounds_decodes_running_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from labelwheel.media.decode import PixelBudget, decode_image

    budget = PixelBudget(1_000_000)
    images = [_png(_photo(600, 600).rotate(i)) for i in range(8)]  # 360,000 pixels each
    with ThreadPoolExecutor(8) as pool:
        out = list(pool.map(lambda d: decode_image(d, 10**8, 32, budget), images))
    assert all(min(im.size) >= 64 for im in out)
    assert 360_000 <= budget.peak_in_use <= 1_000_000 and budget.in_use == 0
    huge = PixelBudget(100_000)  # an image larger than the budget decodes alone
    assert decode_image(images[0], 10**8, 32, huge).size[0] >= 64
    assert huge.peak_in_use == 100_000 and huge.in_use == 0


def test_embedding_a_shrunk_image_matches_the_full_size_path(backbone: object) -> None:
    from labelwheel.media.decode import decode_image

    data = _png(_photo(2400, 1800))
    full = backbone.prepare(decode_image(data, 40_000_000))  # type: ignore[attr-defined]
    small = backbone.prepare(decode_image(data, 40_000_000, min_size=64))  # type: ignore[attr-defined]
    vec = backbone.forward(np.stack([full, small]))  # type: ignore[attr-defined]
    cos = float(vec[0] @ vec[1] / (np.linalg.norm(vec[0]) * np.linalg.norm(vec[1])))
    assert cos > 0.99, cos
