"""A project's pool: its items, their embeddings and the labels that exist so far.

Two sources:

* a Label Studio project (:func:`load_project_pool`): tasks through the REST API, labels from
  their (non-cancelled) annotations, images fetched with the client's credentials;
* a folder of images (:func:`load_folder_pool`) for a lead who has not imported anything yet:
  labels from a ``labels.csv`` (``filename,label``) or from sub-folder names, optional.

Embeddings come from the same pretrained backbone as the ML backend and are cached on disk per
image content hash and backbone, so an image is embedded once.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
UNLABELLED_FOLDERS = frozenset({"unlabelled", "unlabeled", "_unlabelled", "_unlabeled", "pool"})
MAX_IMAGE_BYTES = 20 * 2**20
MAX_PIXELS = 40_000_000


@dataclass
class Pool:
    """Items of one project: ids, image references, embeddings and labels (None = unlabelled)."""

    ids: np.ndarray
    refs: list[str]
    embeddings: np.ndarray
    labels: list[str | None]
    classes: tuple[str, ...]
    source: str
    project_id: int | None = None
    multi_label: bool = False
    label_sets: list[tuple[str, ...]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    label_config: str | None = None

    def __post_init__(self) -> None:
        n = len(self.refs)
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
            raise ValueError("embeddings must be an (n, d) array with one row per item")
        if len(self.labels) != n or len(self.ids) != n:
            raise ValueError("ids, refs, embeddings and labels must have the same length")
        if not self.label_sets:
            self.label_sets = [(lab,) if lab is not None else () for lab in self.labels]

    @classmethod
    def from_arrays(
        cls,
        embeddings: np.ndarray,
        labels: Sequence[str | None],
        *,
        ids: Sequence[int] | None = None,
        refs: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        source: str = "arrays",
    ) -> Pool:
        """Build a pool from in-memory arrays (tests, notebooks, benchmarks)."""
        n = len(labels)
        found = sorted({lab for lab in labels if lab is not None})
        return cls(
            ids=np.asarray(ids if ids is not None else np.arange(1, n + 1), dtype=np.int64),
            refs=list(refs) if refs is not None else [str(i) for i in range(1, n + 1)],
            embeddings=np.asarray(embeddings, dtype=np.float32),
            labels=list(labels),
            classes=tuple(classes) if classes is not None else tuple(found),
            source=source,
        )

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def labeled_mask(self) -> np.ndarray:
        """Boolean mask of items that have a label."""
        return np.array([lab is not None for lab in self.labels], dtype=bool)

    @property
    def n_labeled(self) -> int:
        """Number of labelled items."""
        return int(self.labeled_mask.sum())

    def codes(self) -> np.ndarray:
        """Class index per item in ``classes`` order; -1 for unlabelled items."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array(
            [index.get(lab, -1) if lab is not None else -1 for lab in self.labels], dtype=np.int64
        )


# --------------------------------------------------------------------------- embedding cache


def default_cache_dir() -> Path:
    """Where embeddings are cached: ``$MODEL_DIR`` (shared with the ML backend), else
    ``$LABELWHEEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/labelwheel`` or ``~/.cache/labelwheel``."""
    for name in ("MODEL_DIR", "LABELWHEEL_CACHE_DIR"):
        env = os.environ.get(name)
        if env:
            return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "labelwheel"


class EmbeddingCache:
    """Embeddings on disk, one ``.npy`` per (backbone, image size, image content hash)."""

    def __init__(self, directory: Path | None, backbone: str, image_size: int) -> None:
        # Same layout as the ML backend's cache: a MODEL_DIR can be shared.
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in backbone)
        self.directory = (
            Path(directory) / "embeddings" / f"{safe}-{image_size}" if directory else None
        )

    def get(self, digest: str) -> np.ndarray | None:
        """The cached embedding for an image hash, or None."""
        if self.directory is None:
            return None
        path = self.directory / digest[:2] / f"{digest}.npy"
        try:
            return np.load(path)
        except (OSError, ValueError):
            return None

    def put(self, digest: str, vector: np.ndarray) -> None:
        """Store one embedding (atomically: write then rename)."""
        if self.directory is None:
            return
        folder = self.directory / digest[:2]
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{digest}.{os.getpid()}.tmp.npy"
        np.save(tmp, np.asarray(vector, dtype=np.float32))
        os.replace(tmp, folder / f"{digest}.npy")


def _decode(data: bytes) -> Image.Image:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        image = Image.open(BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise ValueError("image too large")
        image.load()
    except Exception as exc:  # PIL raises many kinds
        raise ValueError(f"not a readable image ({type(exc).__name__})") from exc
    return image.convert("RGB")


def embed_items(
    refs: Sequence[str],
    read: Callable[[str], bytes],
    *,
    backbone: str,
    image_size: int,
    cache_dir: Path | None,
    progress: bool = False,
    batch_size: int = 32,
    decode: Callable[[bytes], Image.Image] = _decode,
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Embed every reference, reusing cached embeddings.

    Returns ``(embeddings of the readable items, their positions in refs, [(ref, reason)] for
    the unreadable ones)``. The backbone is loaded only if something is not cached.
    """
    from tqdm import tqdm

    cache = EmbeddingCache(cache_dir, backbone, image_size)
    vectors: dict[int, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    todo: list[tuple[int, str, Image.Image]] = []
    net: Any = None

    def flush() -> None:
        nonlocal net
        if not todo:
            return
        if net is None:
            from labelwheel.backbone import load_backbone

            # The weights package prints a line on stdout: keep stdout clean for --json.
            with contextlib.redirect_stdout(sys.stderr):
                net = load_backbone(backbone, image_size=image_size, batch_size=batch_size)
        out = net.embed([im for _, _, im in todo])
        for (pos, digest, _), vec in zip(todo, out, strict=True):
            vectors[pos] = vec
            cache.put(digest, vec)
        todo.clear()

    bar = tqdm(total=len(refs), desc="embedding", unit="img", disable=not progress, file=sys.stderr)
    with bar:
        for pos, ref in enumerate(refs):
            try:
                data = read(ref)
                digest = hashlib.sha256(data).hexdigest()
                cached = cache.get(digest)
                if cached is not None:
                    vectors[pos] = cached
                else:
                    todo.append((pos, digest, decode(data)))
            except Exception as exc:  # one bad image must not stop the pool
                reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
                skipped.append((ref, str(reason)))
            if len(todo) >= batch_size:
                flush()
            bar.update(1)
        flush()
    positions = sorted(vectors)
    if not positions:
        return np.zeros((0, 0), dtype=np.float32), [], skipped
    emb = np.stack([vectors[p] for p in positions]).astype(np.float32)
    return emb, positions, skipped


# --------------------------------------------------------------------------- folder of images


def _folder_labels(directory: Path, files: Sequence[Path]) -> list[str | None]:
    csv_path = directory / "labels.csv"
    if csv_path.is_file():
        table: dict[str, str] = {}
        with csv_path.open(newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                if len(row) < 2 or row[0].strip().lower() in {"filename", "file", "path", "image"}:
                    continue
                if row[1].strip():
                    table[row[0].strip()] = row[1].strip()
        out: list[str | None] = []
        for f in files:
            rel = f.relative_to(directory).as_posix()
            out.append(table.get(rel, table.get(f.name)))
        return out
    labels: list[str | None] = []
    for f in files:
        parts = f.relative_to(directory).parts
        if len(parts) >= 2 and parts[0].lower() not in UNLABELLED_FOLDERS:
            labels.append(parts[0])
        else:
            labels.append(None)
    return labels


def list_images(directory: Path) -> list[Path]:
    """Image files under ``directory`` (recursive, sorted, hidden files skipped)."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def load_folder_pool(
    directory: Path | str,
    *,
    backbone: str = "efficientnet-lite0",
    image_size: int = 224,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> Pool:
    """Load a folder of images as a pool.

    Labels: ``labels.csv`` at the top (``filename,label``; relative path or bare name) if present,
    else the name of the top-level sub-folder an image is in (images at the top, or in a folder
    named ``unlabelled``/``pool``, are unlabelled). Raises ValueError when the folder is missing
    or holds no readable image.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory")
    files = list_images(directory)
    if not files:
        raise ValueError(
            f"no images in {directory} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    labels = _folder_labels(directory, files)
    refs = [f.relative_to(directory).as_posix() for f in files]
    emb, positions, skipped = embed_items(
        refs,
        lambda ref: _read_local(directory / ref),
        backbone=backbone,
        image_size=image_size,
        cache_dir=cache_dir,
        progress=progress,
    )
    if not positions:
        raise ValueError(f"no readable images in {directory} ({len(skipped)} unreadable)")
    kept_labels = [labels[p] for p in positions]
    return Pool(
        ids=np.array([p + 1 for p in positions], dtype=np.int64),
        refs=[refs[p] for p in positions],
        embeddings=emb,
        labels=kept_labels,
        classes=tuple(sorted({lab for lab in kept_labels if lab is not None})),
        source=f"images in {directory}",
        skipped=skipped,
    )


def _read_local(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"too large ({size} bytes)")
    return path.read_bytes()


# --------------------------------------------------------------------------- Label Studio


def task_label_sets(task: dict[str, Any], config: Any) -> tuple[str, ...] | None:
    """The labels of a task's latest non-cancelled annotation, or None if it has none."""
    annotations = [
        a
        for a in task.get("annotations") or []
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    if not annotations:
        return None
    latest = max(annotations, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0))
    chosen = config.labels_from_result(latest.get("result") or [])
    allowed = set(config.labels)
    picked = tuple(lab for lab in chosen if lab in allowed)
    return picked or None


def _ls_reader(client: Any) -> Callable[[str], bytes]:
    """Read a task's image reference the way the ML backend does: its image fetcher, with the
    client's credentials, the same local-files root and host allowlist (env variables)."""
    from labelwheel.ml_backend.images import ImageFetcher, ImagePolicy

    root = os.environ.get("LABELWHEEL_LOCAL_FILES_ROOT") or os.environ.get(
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
    )
    hosts = os.environ.get("LABELWHEEL_ALLOWED_HOSTS", "")
    policy = ImagePolicy(
        ls_url=client.url,
        local_files_root=Path(root) if root else None,
        allowed_hosts=frozenset(h.strip() for h in hosts.split(",") if h.strip()),
        max_bytes=MAX_IMAGE_BYTES,
        timeout=30.0,
    )
    fetcher = ImageFetcher(policy, client.auth_headers)
    return fetcher.fetch_bytes


def load_project_pool(
    client: Any,
    project_id: int,
    *,
    backbone: str = "efficientnet-lite0",
    image_size: int = 224,
    cache_dir: Path | None = None,
    progress: bool = False,
    tasks: Iterable[dict[str, Any]] | None = None,
    labeled_only: bool = False,
    embed: Callable[[list[str]], tuple[np.ndarray, list[int], list[tuple[str, str]]]] | None = None,
) -> Pool:
    """Load a Label Studio project's tasks, labels and embeddings.

    ``pool.tasks`` holds all the project's tasks as loaded (annotations and predictions
    included); the pool's items are the tasks whose image could be read (only the labelled ones
    with ``labeled_only``). ``embed`` replaces the built-in fetch-and-embed (the dashboard
    passes the running backend's, which shares its fetch policy and cache). Raises ValueError
    for an unknown project, a config that is not image classification, a project without tasks,
    or one whose images cannot be read. Nothing is written to Label Studio.
    """
    from labelwheel.label_config import parse_classification_config

    project = get_project_or_fail(client, project_id)
    config = parse_classification_config(project.get("label_config") or "")
    all_tasks = (
        list(tasks) if tasks is not None else list(client.iter_tasks(project_id, fields="all"))
    )
    if not all_tasks:
        raise ValueError(f"project {project_id} has no tasks: import images first")
    candidates = all_tasks
    if labeled_only:
        candidates = [t for t in all_tasks if task_label_sets(t, config)]
        if not candidates:
            raise ValueError(f"project {project_id} has no labelled tasks yet")
    refs: list[str] = []
    for task in candidates:
        ref = (task.get("data") or {}).get(config.data_key)
        refs.append(str(ref) if ref is not None else "")
    if embed is not None:
        emb, positions, skipped = embed(refs)
    else:
        emb, positions, skipped = embed_items(
            refs,
            _missing_or(_ls_reader(client)),
            backbone=backbone,
            image_size=image_size,
            cache_dir=cache_dir,
            progress=progress,
        )
    if not positions:
        reasons = "; ".join(sorted({r for _, r in skipped}))[:300]
        raise ValueError(f"no readable images in project {project_id} ({reasons})")
    kept = [candidates[p] for p in positions]
    sets = [task_label_sets(t, config) for t in kept]
    return Pool(
        ids=np.array([int(t["id"]) for t in kept], dtype=np.int64),
        refs=[refs[p] for p in positions],
        embeddings=emb,
        labels=[s[0] if s else None for s in sets],
        label_sets=[s or () for s in sets],
        classes=tuple(config.labels),
        source=f"Label Studio project {project_id} ({project.get('title', '')})",
        project_id=project_id,
        multi_label=bool(config.multi_label),
        tasks=all_tasks,
        skipped=skipped,
        label_config=project.get("label_config"),
    )


def _missing_or(read: Callable[[str], bytes]) -> Callable[[str], bytes]:
    def wrapped(ref: str) -> bytes:
        if not ref:
            raise ValueError("task has no image")
        return read(ref)

    return wrapped


def get_project_or_fail(client: Any, project_id: int) -> dict[str, Any]:
    """``client.get_project`` with a clear ValueError for a project that does not exist."""
    try:
        project = client.get_project(project_id)
    except Exception as exc:
        status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
        text = str(exc)
        if status == 404 or " 404" in text or "not found" in text.lower():
            raise ValueError(f"project {project_id} not found in Label Studio") from exc
        raise
    if not isinstance(project, dict) or "id" not in project:
        raise ValueError(f"project {project_id} not found in Label Studio")
    return project
