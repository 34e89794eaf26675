"""A project's pool: its items, their embeddings and the labels that exist so far."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Pool"]


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

    @property
    def unlabeled_positions(self) -> np.ndarray:
        """Positions of the items without a label."""
        return np.flatnonzero(~self.labeled_mask)

    def codes(self) -> np.ndarray:
        """Class index per item in ``classes`` order; -1 for unlabelled items."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array(
            [index.get(lab, -1) if lab is not None else -1 for lab in self.labels], dtype=np.int64
        )
