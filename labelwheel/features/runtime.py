"""Where the backbone's forward pass runs: ONNX Runtime on CPU, or torch (CPU or GPU).

:func:`make_runtime` turns a torch feature extractor (images in, pooled embeddings out) into a
``forward(inputs: (n, 3, s, s) float32) -> (n, dim) float32`` function, by the mode that
:data:`INFERENCE_ENV` (``LABELWHEEL_INFERENCE``) or the caller names:

- ``auto`` (default): torch on the GPU when ``torch.cuda.is_available()``; otherwise ONNX Runtime
  on the CPU (about 2-3x torch eager per core for EfficientNet-Lite, see
  ``benchmarks/results/embed_throughput.md``); torch on the CPU when ONNX Runtime is missing or
  the model cannot be exported, with a log line saying why;
- ``torch``: torch eager (on the GPU when there is one);
- ``onnx``: ONNX Runtime on the CPU, or an error saying why not.

The ONNX model is exported from the loaded weights (``torch.onnx.export``, the dynamo exporter,
opset :data:`OPSET`, a dynamic batch axis) the first time a backbone is used, and kept in
:func:`model_cache_dirs` under a name made of the backbone, the input size and a key that
hashes the weights, torch's and onnxscript's versions, the exporter and the opset: new weights or
a new exporter export again, and the same weights are exported once per machine. Every session
is checked against torch on a probe batch before it serves (cosine >= :data:`MIN_COSINE` per
row); a file that fails to load or to match is exported again.

ONNX Runtime runs a pass as one one-thread run per core at once, each on a contiguous part of
the pass's rows (:class:`Lanes`), not as one run whose operators are split across intra-op
threads: the rows' embeddings are the same bits either way, and independent runs do not wait
for each other at every operator (which cost the most when the Embedder's decoding threads
share the cores).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelwheel.features.pipeline import ProcessPool
from labelwheel.fsio import atomic_write_bytes

__all__ = [
    "INFERENCE_ENV",
    "INFERENCE_MODES",
    "MIN_COSINE",
    "OPSET",
    "Lanes",
    "Runtime",
    "export_onnx",
    "inference_mode",
    "inference_threads",
    "make_runtime",
    "model_cache_dirs",
    "onnx_model_name",
    "onnx_session",
    "physical_cores",
    "weights_digest",
]

log = logging.getLogger("labelwheel.features")

INFERENCE_ENV = "LABELWHEEL_INFERENCE"
INFERENCE_MODES = ("auto", "torch", "onnx")
OPSET = 18
EXPORTER = "dynamo"
MIN_COSINE = 0.999
"""Least cosine between ONNX Runtime's and torch's embedding of a probe image."""

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Runtime:
    """A forward function and what runs it (``onnxruntime-cpu``, ``torch-cpu``, ``torch-cuda``)."""

    forward: Forward
    name: str
    detail: str


def inference_mode(value: str | None = None) -> str:
    """``value`` (or ``$LABELWHEEL_INFERENCE``, default ``auto``) checked against
    :data:`INFERENCE_MODES`; raises ValueError naming the variable."""
    raw = os.environ.get(INFERENCE_ENV, "") if value is None else value
    mode = raw.strip().lower() or "auto"
    if mode not in INFERENCE_MODES:
        raise ValueError(
            f"{INFERENCE_ENV} must be one of {', '.join(INFERENCE_MODES)}, got {raw!r}"
        )
    return mode


def _cgroup_cpus() -> float | None:
    """The CPU quota of this process's cgroup in CPUs, or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def physical_cores() -> int:
    """Physical cores this process may run on: its CPU affinity counted by distinct cores
    (hyper-threads share one), capped by its cgroup's CPU quota; at least 1."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = list(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
            cores.add((package, core))
        except OSError:
            cores.add(("cpu", str(cpu)))
    count = max(1, len(cores))
    quota = _cgroup_cpus()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return count


def inference_threads() -> int:
    """Intra-op threads of an ONNX Runtime session: :func:`physical_cores`, or fewer when
    ``OMP_NUM_THREADS`` (the limit torch honours too) says so."""
    cores = physical_cores()
    try:
        limit = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        limit = 0
    return min(cores, limit) if limit > 0 else cores


def model_cache_dirs() -> list[Path]:
    """Where exported models are kept, in order of preference: ``models/`` under
    ``$LABELWHEEL_CACHE_DIR`` (else ``$XDG_CACHE_HOME/labelwheel`` or ``~/.cache/labelwheel``:
    one export per machine, shared by every backend and tool), then under ``$MODEL_DIR`` (for a
    backend whose home is not writable)."""
    env = os.environ.get("LABELWHEEL_CACHE_DIR")
    if env:
        user = Path(env).expanduser()
    else:
        user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labelwheel"
    dirs = [user / "models"]
    model_dir = os.environ.get("MODEL_DIR")
    if model_dir:
        dirs.append(Path(model_dir).expanduser() / "models")
    return dirs


def weights_digest(module: Any) -> str:
    """SHA-256 of a torch module's parameters and buffers (names, dtypes, shapes, values)."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def onnx_model_name(backbone: str, image_size: int, digest: str) -> str:
    """File name of an exported model: backbone, input size, and a key of the weights' digest,
    torch's and onnxscript's versions, the exporter and the opset."""
    import torch

    key = "|".join(
        [
            digest,
            f"torch={torch.__version__}",
            f"onnxscript={_version('onnxscript')}",
            f"exporter={EXPORTER}",
            f"opset={OPSET}",
            f"size={int(image_size)}",
        ]
    )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in backbone)
    return f"{safe}-{int(image_size)}px-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"


def export_onnx(module: Any, image_size: int) -> bytes:
    """The module exported to ONNX (dynamo exporter, opset :data:`OPSET`, input ``input``
    ``(batch, 3, s, s)`` with a dynamic batch, output ``embedding``), serialised to bytes."""
    import torch

    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    # The exporter reports its progress on stdout and its passes log at INFO: keep stdout for
    # the caller's output and the log for what matters.
    quiet = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)

    def restore() -> None:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)

    with contextlib.ExitStack() as stack:
        stack.callback(restore)
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(torch.inference_mode(False))
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["input"],
            output_names=["embedding"],
            opset_version=OPSET,
            dynamic_shapes=({0: batch},),
            optimize=True,
            verbose=False,
        )
    if program is None:  # pragma: no cover - only without dynamo
        raise RuntimeError("torch.onnx.export returned no program")
    return bytes(program.model_proto.SerializeToString())


def onnx_session(model: bytes | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for a small machine: ``threads`` intra-op threads (default
    :func:`inference_threads`) that sleep rather than spin between runs (the decoding threads need
    the cores then), one inter-op thread, every graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or inference_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _probe(image_size: int) -> np.ndarray:
    """Three deterministic inputs (a gradient, a checkerboard, noise), normalised like images."""
    s = image_size
    ramp = np.linspace(-1.0, 1.0, s, dtype=np.float32)
    gradient = np.broadcast_to(ramp[None, None, :] * ramp[None, :, None], (3, s, s))
    checks = np.indices((s, s)).sum(0) // max(1, s // 8) % 2 * 1.6 - 0.8
    noise = np.random.default_rng(0).random((3, s, s), dtype=np.float32) * 2.0 - 1.0
    return np.stack([gradient, np.broadcast_to(checks, (3, s, s)), noise]).astype(np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(num / np.maximum(den, 1e-12), dtype=np.float32)


def _torch_runtime(module: Any, device: str, why: str) -> Runtime:
    import torch

    module = module.to(device).eval()

    def forward(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            out = module(tensor.to(device, non_blocking=True))
            return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    detail = f"threads={torch.get_num_threads()}" if device == "cpu" else device
    return Runtime(forward, f"torch-{device}", f"{detail}; {why}")


def _onnx_runtime(name: str, module: Any, image_size: int) -> Runtime:
    """ONNX Runtime for ``module`` (exported or read from the cache, checked against torch)."""
    import torch

    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"onnxruntime is not installed ({exc})") from exc
    probe = _probe(image_size)
    with torch.inference_mode():
        expected = module(torch.from_numpy(probe)).float().numpy()
    file_name = onnx_model_name(name, image_size, weights_digest(module))
    threads = inference_threads()  # one-thread runs at once per pass (see Lanes)

    def checked(model: bytes | Path) -> Any:
        session = onnx_session(model, 1)
        got = session.run(None, {"input": probe})[0]
        if got.shape != expected.shape:
            raise RuntimeError(f"ONNX model gives shape {got.shape}, torch {expected.shape}")
        worst = float(_cosines(got, expected).min())
        if not worst >= MIN_COSINE:  # NaN fails too
            raise RuntimeError(f"ONNX model differs from torch (cosine {worst:.5f})")
        return session

    session: Any = None
    where = "memory"
    for directory in model_cache_dirs():
        path = directory / file_name
        if path.is_file():
            try:
                session, where = checked(path), str(path)
                break
            except Exception as exc:
                log.warning("exported model %s unusable (%s): exporting again", path, exc)
    if session is None:
        data = export_onnx(module, image_size)
        session = checked(data)
        for directory in model_cache_dirs():
            path = directory / file_name
            try:
                atomic_write_bytes(path, data)
                with contextlib.suppress(OSError):
                    path.chmod(0o644)  # a cache of public weights, not a secret
                where = str(path)
                break
            except OSError as exc:
                log.warning("cannot keep the exported model in %s (%s)", directory, exc)
        log.info("backbone %s exported to ONNX (%.1f MB) -> %s", name, len(data) / 1e6, where)

    def run(batch: np.ndarray) -> np.ndarray:
        out = session.run(None, {"input": np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float32)

    detail = f"{threads} one-thread runs per pass, model {where}"
    return Runtime(Lanes(run, threads), "onnxruntime-cpu", detail)


class Lanes:
    """A pass's rows split into ``count`` contiguous parts run at once, each by a one-thread run
    of the same session (the caller's thread runs the first part, ``count - 1`` helper threads
    the others); a pass of fewer rows than ``count`` uses fewer.

    Why not one run with ``count`` intra-op threads: every operator of such a run ends with the
    threads waiting for each other, and with decoding threads on the same cores (the Embedder's
    pipeline) one thread taken off its core stalls the other at each of the network's operators.
    Independent runs meet once per pass. The rows' embeddings are the same bit for bit (ONNX
    Runtime computes each row alone whatever the batch or the threads;
    ``tests/features/test_features_runtime.py``).
    """

    def __init__(self, run: Forward, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.run = run
        self.count = int(count)
        self._helpers = ProcessPool(self.count - 1, "lw-onnx") if self.count > 1 else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        parts = min(self.count, len(batch))
        if parts <= 1:
            return self.run(batch)
        bounds = [len(batch) * k // parts for k in range(parts + 1)]
        assert self._helpers is not None  # parts > 1 needs count > 1
        pool = self._helpers.get()
        futures = [pool.submit(self.run, batch[bounds[k] : bounds[k + 1]]) for k in range(1, parts)]
        try:
            first = self.run(batch[bounds[0] : bounds[1]])
        finally:
            outs = [f.result() for f in futures]  # never leave a helper running on ``batch``
        return np.concatenate([first, *outs])


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(exc: BaseException) -> str:
    """One readable line for a log: the error's first line and its root cause's."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 3:
        lines = _ANSI.sub("", str(seen)).strip().splitlines()
        parts.append(f"{seen.__class__.__name__}: {lines[0] if lines else ''}".strip())
        seen = seen.__cause__
    if len(parts) > 2:
        parts = [parts[0], parts[-1]]
    return " <- ".join(parts)[:400]


def make_runtime(name: str, module: Any, image_size: int, inference: str | None = None) -> Runtime:
    """The forward function of a torch feature extractor by the inference mode (see the module
    doc); logs which runtime serves and, on a fallback, why. Raises ValueError when ``onnx`` is
    forced and ONNX Runtime cannot serve."""
    import torch

    mode = inference_mode(inference)
    module = module.eval()
    if mode != "onnx" and torch.cuda.is_available():
        runtime = _torch_runtime(module, "cuda", "a GPU is present")
    elif mode == "torch":
        runtime = _torch_runtime(module, "cpu", f"{INFERENCE_ENV}=torch")
    else:
        try:
            runtime = _onnx_runtime(name, module, image_size)
        except Exception as exc:
            reason = _reason(exc)
            if mode == "onnx":
                raise ValueError(
                    f"{INFERENCE_ENV}=onnx but backbone {name!r} cannot run on ONNX Runtime "
                    f"({reason})"
                ) from exc
            log.warning("backbone %s cannot run on ONNX Runtime (%s): using torch", name, reason)
            runtime = _torch_runtime(module, "cpu", f"fallback: {reason}")
    log.info(
        "backbone %s (%d px): inference on %s (%s)", name, image_size, runtime.name, runtime.detail
    )
    return runtime
