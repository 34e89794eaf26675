"""Fixtures of the ingest tests: a folder of real images with injected faults, an S3 server.

- ``make_source(dir)``: writes 17 scikit-image photos and 20 MNIST digits, then (named to sort
  after them) exact copies, near duplicates (JPEG re-encode, resize, resize + JPEG) and corrupt
  files (truncated PNG, random bytes named .jpg, an empty file); returns what each file is.
- ``moto_s3``: moto's standalone S3 server on a free loopback port for the session (a real
  process, reached over HTTP by boto3). Kept local to the ingest tests.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "moon",
    "page",
    "rocket",
    "text",
    "clock",
    "hubble_deep_field",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "cell",
    "colorwheel",
)
N_DIGITS = 20
TEST_IMAGE_SIZE = (
    "64"  # backbone input size in these tests (the funnel's checks don't depend on it)
)


@dataclass(frozen=True)
class SourceTruth:
    """What the test source holds: file name → (reason, duplicate_of) for what must be dropped."""

    root: Path
    kept: tuple[str, ...]
    dropped: dict[str, tuple[str, str | None]]

    @property
    def files(self) -> list[str]:
        """Every image file name."""
        return sorted([*self.kept, *self.dropped])


def _photo(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    im = Image.fromarray(arr)
    im.thumbnail((256, 256))
    return im.convert("RGB")


def _digits() -> list[np.ndarray]:
    from labelwheel.datasets import load_dataset

    return list(load_dataset("mnist5k").images[:N_DIGITS])


def _save(im: Image.Image, path: Path, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def write_source(root: Path) -> SourceTruth:
    """Write the test source into ``root`` (see the module doc)."""
    root.mkdir(parents=True, exist_ok=True)
    kept: list[str] = []
    images: dict[str, Image.Image] = {}
    for name in PHOTOS:
        fname = f"a_photo_{name}.png"
        images[fname] = _photo(name)
        _save(images[fname], root / fname)
        kept.append(fname)
    for i, arr in enumerate(_digits()):
        fname = f"b_digit_{i:02d}.png"
        images[fname] = Image.fromarray(arr).resize((56, 56), Image.Resampling.BILINEAR)
        _save(images[fname], root / fname)
        kept.append(fname)
    dropped: dict[str, tuple[str, str | None]] = {}
    shutil.copyfile(root / "a_photo_astronaut.png", root / "z_exact_astronaut.png")
    dropped["z_exact_astronaut.png"] = ("exact_duplicate", "a_photo_astronaut.png")
    shutil.copyfile(root / "b_digit_03.png", root / "z_exact_digit03.png")
    dropped["z_exact_digit03.png"] = ("exact_duplicate", "b_digit_03.png")
    _save(images["a_photo_chelsea.png"], root / "z_near_chelsea_q70.jpg", "JPEG", quality=70)
    dropped["z_near_chelsea_q70.jpg"] = ("near_duplicate", "a_photo_chelsea.png")
    coffee = images["a_photo_coffee.png"]
    _save(coffee.resize((coffee.width // 2, coffee.height // 2)), root / "z_near_coffee_half.png")
    dropped["z_near_coffee_half.png"] = ("near_duplicate", "a_photo_coffee.png")
    _save(
        images["b_digit_05.png"].convert("RGB"), root / "z_near_digit05_q60.jpg", "JPEG", quality=60
    )
    dropped["z_near_digit05_q60.jpg"] = ("near_duplicate", "b_digit_05.png")
    rocket = images["a_photo_rocket.png"]
    big = rocket.resize((rocket.width * 3 // 2, rocket.height * 3 // 2), Image.Resampling.BICUBIC)
    _save(big, root / "z_near_rocket_big_q80.jpg", "JPEG", quality=80)
    dropped["z_near_rocket_big_q80.jpg"] = ("near_duplicate", "a_photo_rocket.png")
    data = (root / "a_photo_moon.png").read_bytes()
    (root / "z_corrupt_truncated.png").write_bytes(data[: len(data) * 2 // 5])
    dropped["z_corrupt_truncated.png"] = ("corrupt", None)
    rng = np.random.default_rng(7)
    (root / "z_corrupt_random.jpg").write_bytes(rng.bytes(4096))
    dropped["z_corrupt_random.jpg"] = ("corrupt", None)
    (root / "z_empty.png").write_bytes(b"")
    dropped["z_empty.png"] = ("unreadable", None)
    (root / "notes.txt").write_text("not an image, not listed\n")
    return SourceTruth(root, tuple(kept), dropped)


@pytest.fixture(scope="session")
def source_template(tmp_path_factory: pytest.TempPathFactory) -> SourceTruth:
    """The test source, written once per session (copy it before changing it)."""
    return write_source(tmp_path_factory.mktemp("ingest-source") / "incoming")


@pytest.fixture
def make_source(source_template: SourceTruth) -> Callable[[Path], SourceTruth]:
    """``make_source(dir)``: a copy of the test source in ``dir``."""

    def make(root: Path) -> SourceTruth:
        shutil.copytree(source_template.root, root)
        return SourceTruth(root, source_template.kept, dict(source_template.dropped))

    return make


# ------------------------------------------------------------------------------ S3 (moto)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible endpoint and the credentials it accepts."""

    endpoint_url: str
    env: dict[str, str]

    def client(self) -> object:
        """A boto3 S3 client for it."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=self.endpoint_url)


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's standalone S3 server (``moto_server -H 127.0.0.1 -p PORT``) for the session."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.fail("moto_server is not installed: pip install 'moto[server]'", pytrace=False)
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield S3Server(
            f"http://127.0.0.1:{port}",
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
