"""ONNX Runtime's pass as one-thread runs at once (:class:`labelwheel.features.runtime.Lanes`):
rows split in order, the parts really concurrent, errors raised to the caller after every part
ended, and the real backbone's embeddings the same bits as one run with intra-op threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from labelwheel.features import load_backbone
from labelwheel.features.runtime import (
    INFERENCE_ENV,
    Lanes,
    inference_threads,
    make_runtime,
    model_cache_dirs,
    onnx_model_name,
    onnx_session,
    weights_digest,
)


def _rows(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, size, size)).astype(np.float32)


def test_rows_are_split_in_order_and_the_parts_run_at_once() -> None:
    calls: list[tuple[str, list[float]]] = []
    lock = threading.Lock()
    meet = threading.Barrier(3, timeout=10)  # three parts must be running together to pass

    def run(batch: np.ndarray) -> np.ndarray:
        meet.wait()
        with lock:
            calls.append((threading.current_thread().name, [float(r[0, 0, 0]) for r in batch]))
        return batch[:, 0, 0, :2] * 2.0

    lanes = Lanes(run, 3)
    x = _rows(8)
    out = lanes(x)
    np.testing.assert_array_equal(out, x[:, 0, 0, :2] * 2.0)  # every row, in the input's order
    sizes = sorted(len(rows) for _, rows in calls)
    assert sizes == [2, 3, 3]  # contiguous, as even as the rows allow
    mine = [rows for name, rows in calls if name == threading.current_thread().name]
    assert mine == [[float(r[0, 0, 0]) for r in x[:2]]]  # the caller runs the first part
    me = threading.current_thread().name
    assert all(name.startswith("lw-onnx") for name, _ in calls if name != me)


def test_fewer_rows_than_lanes_use_fewer_runs() -> None:
    names: list[str] = []

    def run(batch: np.ndarray) -> np.ndarray:
        names.append(threading.current_thread().name)
        return batch.reshape(len(batch), -1)[:, :3]

    lanes = Lanes(run, 4)
    x = _rows(1)
    np.testing.assert_array_equal(lanes(x), x.reshape(1, -1)[:, :3])
    assert names == [threading.current_thread().name]  # one row: one run, no helper
    names.clear()
    assert lanes(_rows(2)).shape == (2, 3) and len(names) == 2
    with pytest.raises(ValueError, match="at least 1"):
        Lanes(run, 0)


def test_a_failing_part_is_raised_after_every_part_ended() -> None:
    ended: list[int] = []

    def run(batch: np.ndarray) -> np.ndarray:
        first = float(batch[0, 0, 0, 0])
        if first == 0.0:
            raise RuntimeError("part 0 failed")
        time.sleep(0.2)  # the helper is still working when the caller's part fails
        ended.append(len(batch))
        return batch[:, 0, 0, :1]

    x = _rows(4)
    x[0, 0, 0, 0] = 0.0
    with pytest.raises(RuntimeError, match="part 0 failed"):
        Lanes(run, 2)(x)
    assert ended == [2]  # the call returned only after the helper's part ended


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LABELWHEEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MODEL_DIR", raising=False)
    monkeypatch.delenv(INFERENCE_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return tmp_path / "cache" / "models"


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(11)
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu6(self.conv(x)).mean((2, 3))


def test_the_onnx_runtime_runs_a_pass_as_lanes(tmp_cache: Path) -> None:
    net = TinyNet()
    runtime = make_runtime("tiny", net, 16, inference="onnx")
    assert isinstance(runtime.forward, Lanes)
    assert runtime.forward.count == inference_threads()
    assert f"{inference_threads()} one-thread runs per pass" in runtime.detail
    x = _rows(7, 16)
    path = tmp_cache / onnx_model_name("tiny", 16, weights_digest(net))
    whole = onnx_session(path, threads=inference_threads()).run(None, {"input": x})[0]
    np.testing.assert_array_equal(runtime.forward(x), whole)


def test_real_backbone_embeddings_are_the_same_bits_as_one_intra_op_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EfficientNet-Lite0 at 112 px (exported once per machine, in the user's model cache):
    a pass split over lanes gives exactly what one run of the whole pass on every core gives."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    net = load_backbone("efficientnet-lite0", 112, 8, inference="onnx")
    assert isinstance(net._forward, Lanes)
    name = onnx_model_name("efficientnet-lite0", 112, weights_digest(net._net))
    path = next(d / name for d in model_cache_dirs() if (d / name).is_file())
    x = _rows(5, 112, seed=3)
    for threads in sorted({1, 2, inference_threads()}):
        whole = onnx_session(path, threads=threads).run(None, {"input": x})[0]
        np.testing.assert_array_equal(net.forward(x), whole)
    lanes_of_4 = Lanes(net._forward.run, 4)  # more lanes than cores: still the same bits
    np.testing.assert_array_equal(lanes_of_4(x), net.forward(x))
