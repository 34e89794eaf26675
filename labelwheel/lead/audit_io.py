"""Where an audit's labels come from and where its suspects go.

* **offline**: :func:`read_labels_csv` reads a CSV of ``file name,label`` rows for a folder of
  images (clear errors for a missing file, malformed rows, names that are no image of the folder)
  and :func:`with_labels` puts those labels on the folder's pool; :func:`read_label_table` also
  reads an optional third column, the split (``file name,label,split``; the label may be empty
  on a held-out row);
* **Label Studio**: :func:`annotator_labels` reads what each annotator chose (for the
  "annotators disagree" check) and :func:`write_audit_view` writes the suspects back.

In Label Studio (:func:`write_audit_view`) the suspects of
:func:`labelwheel.lead.audit.audit_pool` form the saved view :data:`VIEW_TITLE`, ordered by
suspicion, and carry these task data fields (removed again from tasks that are no longer suspects
when the audit is re-run):

=========================  ===============================================================
``labelwheel_audit_rank``  1 = most suspicious (the view sorts by it)
``labelwheel_suggested``   the label the model suggests ("" when it agrees with the given one)
``labelwheel_suspicion``   the suspicion score, 0–1, three decimals
``labelwheel_why``         the reasons, separated by "; "
=========================  ===============================================================

**Held-out data.** Label Studio has no notion of a test set, so the audit follows the common
convention of a task data field that names the split: by default ``split`` (imported with the
tasks, e.g. a CSV/JSON column), and a task is held out when its value is one of
:data:`DEFAULT_HOLDOUT_VALUES` (``test``, ``holdout``, ``held-out``, ``validation``, ``val``;
case-insensitive). Any other value (``train``, empty, absent) is training data.
:func:`holdout_mask` turns that (or the offline CSV's split column) into the mask
:func:`labelwheel.lead.audit.audit_pool` takes; ``labelwheel audit --holdout-field NAME
--holdout-values a,b`` changes the convention.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from labelwheel.lead.audit import VIEW_TITLE, Audit, Suspect
from labelwheel.lead.plan import write_ranked_view
from labelwheel.pool import Pool, list_images

__all__ = [
    "AUDIT_FIELDS",
    "DEFAULT_HOLDOUT_FIELD",
    "DEFAULT_HOLDOUT_VALUES",
    "RANK_FIELD",
    "VIEW_TITLE",
    "annotator_labels",
    "audit_fields",
    "holdout_mask",
    "is_held_out",
    "parse_holdout_values",
    "read_label_table",
    "read_labels_csv",
    "with_labels",
    "write_audit_view",
]

RANK_FIELD = "labelwheel_audit_rank"
SUGGESTED_FIELD = "labelwheel_suggested"
SUSPICION_FIELD = "labelwheel_suspicion"
WHY_FIELD = "labelwheel_why"
AUDIT_FIELDS = (RANK_FIELD, SUGGESTED_FIELD, SUSPICION_FIELD, WHY_FIELD)
"""The task data fields the audit writes (and removes from tasks that are no longer suspects)."""

DEFAULT_HOLDOUT_FIELD = "split"
"""The task data field that names a task's split (see the module docstring)."""
DEFAULT_HOLDOUT_VALUES = ("test", "holdout", "held-out", "validation", "val")
"""Values of :data:`DEFAULT_HOLDOUT_FIELD` that mark a held-out task (case-insensitive)."""


def parse_holdout_values(text: str) -> tuple[str, ...]:
    """``"test, holdout"`` → ``("test", "holdout")`` (lower case); ValueError when empty."""
    values = tuple(dict.fromkeys(v.strip().lower() for v in text.split(",") if v.strip()))
    if not values:
        raise ValueError("holdout values must name at least one split, e.g. 'test,holdout'")
    return values


def holdout_mask(
    pool: Pool,
    *,
    field: str = DEFAULT_HOLDOUT_FIELD,
    values: Iterable[str] = DEFAULT_HOLDOUT_VALUES,
    splits: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Per pool position, whether the item is held out.

    ``splits`` (``{ref: split}``, the offline CSV's split column) when given, else the task data
    field ``field`` of a Label Studio pool's tasks. A value is compared trimmed and lower-cased
    with ``values``.
    """
    wanted = {str(v).strip().lower() for v in values}
    if splits is not None:
        return np.array(
            [str(splits.get(ref, "")).strip().lower() in wanted for ref in pool.refs], dtype=bool
        )
    held = {int(t["id"]) for t in pool.tasks if "id" in t and is_held_out(t, field, wanted)}
    return np.array([int(t) in held for t in pool.ids], dtype=bool)


def is_held_out(
    task: Mapping[str, Any],
    field: str = DEFAULT_HOLDOUT_FIELD,
    values: Iterable[str] = DEFAULT_HOLDOUT_VALUES,
) -> bool:
    """Whether a Label Studio task's data field ``field`` is one of ``values``."""
    data = task.get("data")
    if not isinstance(data, Mapping) or data.get(field) is None:
        return False
    return str(data[field]).strip().lower() in {str(v).strip().lower() for v in values}


# --------------------------------------------------------------------------- Label Studio


def annotator_labels(pool: Pool) -> dict[int, list[str]]:
    """Per pool position of a Label Studio pool, the label of each non-cancelled annotation."""
    if not pool.tasks or not pool.label_config:
        return {}
    from labelwheel.label_config import parse_classification_config

    config = parse_classification_config(pool.label_config)
    by_id = {int(t["id"]): t for t in pool.tasks if "id" in t}
    out: dict[int, list[str]] = {}
    for pos, tid in enumerate(pool.ids):
        task = by_id.get(int(tid))
        if task is None:
            continue
        chosen = []
        for ann in task.get("annotations") or []:
            if isinstance(ann, dict) and not ann.get("was_cancelled"):
                labels = config.labels_from_result(ann.get("result") or [])
                if labels:
                    chosen.append(labels[0])
        if len(chosen) > 1:
            out[pos] = chosen
    return out


def audit_fields(suspect: Suspect) -> dict[str, Any]:
    """The task data fields of one suspect, besides its rank (see the module docstring)."""
    return {
        SUGGESTED_FIELD: suspect.suggested or "",
        SUSPICION_FIELD: round(suspect.suspicion, 3),
        WHY_FIELD: "; ".join(suspect.reasons),
    }


def write_audit_view(
    client: Any, project_id: int, audit: Audit, tasks: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """Write the suspects to Label Studio as the view :data:`VIEW_TITLE`, most suspicious first.

    Uses :func:`labelwheel.lead.plan.write_ranked_view`: the suspects get the
    :data:`AUDIT_FIELDS`, every other task of ``tasks`` loses them, the earlier view of that title
    is replaced (duplicates deleted). With no suspects the view is deleted and None returned.
    """
    return write_ranked_view(
        client,
        project_id,
        tasks,
        title=VIEW_TITLE,
        title_prefix=VIEW_TITLE,
        rank_field=RANK_FIELD,
        ranked=[s.task_id for s in audit.suspects],
        fields={s.task_id: audit_fields(s) for s in audit.suspects},
        owned_fields=AUDIT_FIELDS[1:],
    )


# ------------------------------------------------------------------------------ offline CSV

_HEADER_NAMES = frozenset({"filename", "file", "file name", "file_name", "path", "image", "name"})


def read_labels_csv(path: Path | str, directory: Path | str) -> dict[str, str]:
    """Labels from a CSV of ``file name,label`` rows for the images in ``directory``.

    A file name is the image's path relative to ``directory`` or its bare name (when no other
    image has it); a header row is optional. Returns ``{relative path: label}``. Raises
    ValueError when the file or folder is missing, a row is malformed, a name is listed twice
    with different labels, or names no image of the folder.
    """
    return read_label_table(path, directory)[0]


def read_label_table(
    path: Path | str, directory: Path | str
) -> tuple[dict[str, str], dict[str, str]]:
    """:func:`read_labels_csv` with the optional third column: ``(labels, splits)``.

    ``splits`` is ``{relative path: split}`` for the rows whose third cell is not empty; a row
    with a split may leave its label empty (a held-out image nobody labelled).
    """
    path, directory = Path(path), Path(directory)
    if not path.is_file():
        raise ValueError(f"labels file {path} does not exist")
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory")
    rel = [f.relative_to(directory).as_posix() for f in list_images(directory)]
    known = set(rel)
    bare: dict[str, list[str]] = {}
    for r in rel:
        bare.setdefault(r.rsplit("/", 1)[-1], []).append(r)
    table: dict[str, str] = {}
    splits: dict[str, str] = {}
    unknown: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"labels file {path} is not a readable CSV ({exc})") from None
    for line, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if line == 1 and cells[0].lower() in _HEADER_NAMES:
            continue
        split = cells[2] if len(cells) > 2 else ""
        if len(cells) < 2 or not cells[0] or not (cells[1] or split):
            raise ValueError(
                f"{path}, line {line}: expected 'file name,label' (or 'file name,label,split'), "
                f"got {row!r}"
            )
        name, label = cells[0], cells[1]
        if name in known:
            ref = name
        elif len(bare.get(name, [])) == 1:
            ref = bare[name][0]
        else:
            if len(bare.get(name, [])) > 1:
                raise ValueError(
                    f"{path}, line {line}: {name} is ambiguous in {directory} "
                    f"({', '.join(bare[name][:3])}); give the relative path"
                )
            unknown.append(name)
            continue
        if split:
            if splits.get(ref, split) != split:
                raise ValueError(
                    f"{path}, line {line}: {name} is listed twice with different splits "
                    f"({splits[ref]!r} and {split!r})"
                )
            splits[ref] = split
        if not label:
            continue
        if table.get(ref, label) != label:
            raise ValueError(
                f"{path}, line {line}: {name} is listed twice with different labels "
                f"({table[ref]!r} and {label!r})"
            )
        table[ref] = label
    if unknown:
        shown = ", ".join(unknown[:5]) + (", …" if len(unknown) > 5 else "")
        raise ValueError(f"{len(unknown)} name(s) in {path} are not images in {directory}: {shown}")
    if not table:
        raise ValueError(f"labels file {path} has no labels (expected rows 'file name,label')")
    return table, splits


def with_labels(pool: Pool, labels: Mapping[str, str]) -> Pool:
    """The pool with its labels replaced by ``labels`` (``{ref: label}``; others unlabelled)."""
    new = [labels.get(ref) for ref in pool.refs]
    return Pool(
        ids=pool.ids,
        refs=pool.refs,
        embeddings=pool.embeddings,
        labels=new,
        classes=tuple(sorted({lab for lab in new if lab is not None})),
        source=pool.source,
        project_id=pool.project_id,
        skipped=pool.skipped,
    )
