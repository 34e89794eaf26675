"""Where a pool comes from: a Label Studio project or a folder of images.

* a Label Studio project (:func:`load_project_pool`): tasks through the REST API, labels from
  their (non-cancelled) annotations, images read through the media layer with the client's
  credentials (the same fetch policy as the ML backend: local-files root and host allowlist from
  the same environment variables);
* a folder of images (:func:`load_folder_pool`) for a lead who has not imported anything yet:
  labels from a ``labels.csv`` (``filename,label``) or from sub-folder names, optional.

Embeddings come from :class:`labelwheel.features.Embedder`: the backbone the ML backend uses,
cached on disk per image content, so an image is embedded once.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelwheel.features import Embedded, Embedder
from labelwheel.media import ImageError, ImageFetcher, ImagePolicy, read_file
from labelwheel.media.storage import task_image_ref
from labelwheel.pool.core import Pool

__all__ = [
    "IMAGE_EXTENSIONS",
    "default_cache_dir",
    "embed_refs",
    "get_project_or_fail",
    "list_images",
    "load_folder_pool",
    "load_project_pool",
    "project_reader",
    "task_label_sets",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
UNLABELLED_FOLDERS = frozenset({"unlabelled", "unlabeled", "_unlabelled", "_unlabeled", "pool"})
MAX_IMAGE_BYTES = 20 * 2**20

EmbedFn = Callable[[list[str]], Embedded]


def default_cache_dir() -> Path:
    """Where embeddings are cached: ``$MODEL_DIR`` (shared with the ML backend), else
    ``$LABELWHEEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/labelwheel`` or ``~/.cache/labelwheel``."""
    for name in ("MODEL_DIR", "LABELWHEEL_CACHE_DIR"):
        env = os.environ.get(name)
        if env:
            return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "labelwheel"


def embed_refs(
    refs: Sequence[str],
    read: Callable[[str], bytes],
    *,
    backbone: str,
    image_size: int,
    cache_dir: Path | None,
    progress: bool = False,
    batch_size: int = 32,
    local: bool = False,
) -> Embedded:
    """Embed references with a fresh :class:`Embedder` (the backbone loads only if something
    is not cached); ``local``: every read is from local disk (see :meth:`Embedder.embed_refs`)."""
    embedder = Embedder(backbone, image_size, batch_size, cache_root=cache_dir)
    try:
        return embedder.embed_refs(list(refs), read, progress=progress, local=local)
    finally:
        embedder.close()


def _readable(
    refs: Sequence[str], embedded: Embedded
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """(embeddings of the readable items, their positions, [(ref, reason)] for the others)."""
    positions = embedded.ok
    skipped = [
        (refs[i], _reason(embedded.errors[i]))
        for i in range(len(refs))
        if embedded.vectors[i] is None
    ]
    if not positions:
        return np.zeros((0, 0), dtype=np.float32), [], skipped
    vectors = [embedded.vectors[i] for i in positions]
    return np.stack([v for v in vectors if v is not None]).astype(np.float32), positions, skipped


def _reason(error: str | None) -> str:
    """The reason part of an :class:`Embedded` error ("image <ref>: <reason>")."""
    text = error or "unreadable"
    return text.split(": ", 1)[1] if text.startswith("image ") and ": " in text else text


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
    embedded = embed_refs(
        refs,
        lambda ref: read_file(directory / ref, MAX_IMAGE_BYTES),
        backbone=backbone,
        image_size=image_size,
        cache_dir=cache_dir,
        progress=progress,
        local=True,
    )
    emb, positions, skipped = _readable(refs, embedded)
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


def project_reader(client: Any) -> Callable[[str], bytes]:
    """Read a task's image reference the way the ML backend does: the media layer's fetcher
    with the client's credentials, the same local-files root and host allowlist (env)."""
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

    def read(ref: str) -> bytes:
        if not ref:
            raise ImageError("task has no image")
        return fetcher.fetch_bytes(ref)

    return read


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
    embed: EmbedFn | None = None,
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
        # a cloud URI (s3://, gs://, azure-blob://...) is read through Label Studio's resolve path
        refs.append(task_image_ref(str(ref), task.get("id"), project_id) if ref is not None else "")
    if embed is not None:
        embedded = embed(refs)
    else:
        embedded = embed_refs(
            refs,
            project_reader(client),
            backbone=backbone,
            image_size=image_size,
            cache_dir=cache_dir,
            progress=progress,
        )
    emb, positions, skipped = _readable(refs, embedded)
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
