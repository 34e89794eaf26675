"""Import the picked images into Label Studio, each task carrying its scores, exactly once.

Files are uploaded with :meth:`labelwheel.ls_api.LabelStudioClient.import_files` (multipart, one
form field per file), in small batches. For each batch the ledger first records ``uploading``;
after the upload each new task's data gets the funnel's fields (merged into the data Label Studio
wrote, ``PATCH /api/tasks/<id>``) and the ledger records ``imported`` with the task id. If a run
dies between the upload and that record, the next run finds the content among the project's
images (by hash) and records it as imported instead of uploading it again.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelwheel.ingest.sources import Source, SourceItem
from labelwheel.ingest.state import Ledger, LedgerItem, sha_of
from labelwheel.media import ImageError

__all__ = ["ImportPick", "Imported", "complete_landed", "import_picks"]

IMPORT_BATCH = 20


@dataclass
class ImportPick:
    """One image to import and the fields its task carries."""

    item: SourceItem
    sha: str
    fields: dict[str, Any]


@dataclass
class Imported:
    """Outcome of one pick."""

    key: str
    sha: str
    task_id: int | None
    error: str | None = None


def import_picks(
    client: Any,
    project_id: int,
    source: Source,
    picks: Sequence[ImportPick],
    ledger: Ledger,
    *,
    batch_size: int = IMPORT_BATCH,
    progress: bool = False,
    after_batch: Callable[[int], None] | None = None,
) -> list[Imported]:
    """Upload ``picks`` in order (see the module doc); returns one outcome per pick."""
    out: list[Imported] = []
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(picks), desc="import", unit="img", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="labelwheel-ingest-") as scratch_dir:
            scratch = Path(scratch_dir)
            for start in range(0, len(picks), max(1, batch_size)):
                batch = list(picks[start : start + batch_size])
                out.extend(_import_batch(client, project_id, source, batch, ledger, scratch))
                if bar is not None:
                    bar.update(len(batch))
                if after_batch is not None:
                    after_batch(len(out))
    finally:
        if bar is not None:
            bar.close()
    return out


def _import_batch(
    client: Any,
    project_id: int,
    source: Source,
    batch: list[ImportPick],
    ledger: Ledger,
    scratch: Path,
) -> list[Imported]:
    results: list[Imported] = []
    ready: list[tuple[ImportPick, Path]] = []
    for pick in batch:
        try:
            path = source.local_path(pick.item, scratch)
            if sha_of(path.read_bytes()) != pick.sha:
                raise ImageError("changed since it was read")
        except ImageError as exc:  # vanished or changed since it was read
            results.append(Imported(pick.item.key, pick.sha, None, exc.reason))
            continue
        except OSError:
            results.append(Imported(pick.item.key, pick.sha, None, "not readable"))
            continue
        ready.append((pick, path))
    if not ready:
        return results
    ledger.record(
        [LedgerItem(p.sha, p.item.key, "uploading", fields=json.dumps(p.fields)) for p, _ in ready]
    )
    ids = client.import_files(project_id, [path for _, path in ready])
    if len(ids) != len(ready):
        raise RuntimeError(f"Label Studio created {len(ids)} tasks for {len(ready)} uploaded files")
    done: list[LedgerItem] = []
    for (pick, _), task_id in zip(ready, ids, strict=True):
        _add_fields(client, task_id, pick.fields)
        done.append(LedgerItem(pick.sha, pick.item.key, "imported", task_id=int(task_id)))
        results.append(Imported(pick.item.key, pick.sha, int(task_id)))
    ledger.record(done)
    return results


def _add_fields(client: Any, task_id: int, fields: dict[str, Any]) -> None:
    """Merge ``fields`` into a task's data (Label Studio replaces data as a whole on PATCH)."""
    task = client.get_task(task_id)
    data = dict(task.get("data") or {})
    data.update(fields)
    client.request("PATCH", f"/api/tasks/{int(task_id)}", json={"data": data})


def complete_landed(client: Any, ledger: Ledger, landed: Sequence[tuple[str, int]]) -> int:
    """Finish uploads that an interrupted run made but did not record: give each task the
    fields stored with its ``uploading`` record, then record it as imported. Returns how many."""
    done = 0
    for sha, task_id in landed:
        item = ledger.get(sha)
        if item is None or item.status != "uploading":
            continue
        fields = json.loads(item.fields) if item.fields else {}
        if fields:
            _add_fields(client, task_id, fields)
        ledger.record([LedgerItem(sha, item.key, "imported", task_id=int(task_id))])
        done += 1
    return done
