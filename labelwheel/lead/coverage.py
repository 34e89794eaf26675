"""Where the pool has holes: a 2-D map, clusters without labels, near-duplicates and anomalies.

The pool's embeddings are grouped with k-means; a cluster that holds no label is a **hole** (the
model has never been shown that kind of image). Near-duplicate groups and anomalies come from
:mod:`labelwheel.selectors.filters`, so the lead sees what the selectors skip. Each cluster gets a
row: size, share of the pool, labels, and the cross-validated accuracy of the model on the labels
inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from labelwheel.head import Scaling, cv_predictions
from labelwheel.lead import _filters
from labelwheel.pool import Pool

PROJECTIONS = ("auto", "pca", "tsne", "umap")


@dataclass
class ClusterRow:
    """One k-means cluster of the pool."""

    cluster: int
    size: int
    share: float
    labels: int
    accuracy: float | None
    hole: bool
    top_label: str | None


@dataclass
class Coverage:
    """The coverage analysis of a pool."""

    coords: np.ndarray  # (n, 2)
    projection: str
    clusters: np.ndarray  # (n,) cluster index per item
    rows: list[ClusterRow]
    labeled: np.ndarray  # (n,) bool
    duplicate_groups: list[list[int]]  # positions in the pool, first = kept
    anomalies: list[int]  # positions, most anomalous first
    anomaly_scores: np.ndarray
    cv_correct: np.ndarray | None = (
        None  # (n,) 1 / 0 for labelled items with a CV prediction, else -1
    )
    notes: list[str] = field(default_factory=list)

    @property
    def holes(self) -> list[int]:
        """Cluster indices that hold no label."""
        return [r.cluster for r in self.rows if r.hole]

    def to_dict(self, pool: Pool | None = None) -> dict[str, Any]:
        """JSON-ready summary (no per-item coordinates)."""
        ids = (lambda ps: [int(pool.ids[p]) for p in ps]) if pool is not None else list
        return {
            "projection": self.projection,
            "n_items": int(self.clusters.size),
            "n_labeled": int(self.labeled.sum()),
            "clusters": [r.__dict__ for r in self.rows],
            "holes": self.holes,
            "hole_share": float(sum(r.share for r in self.rows if r.hole)),
            "duplicate_groups": [ids(g) for g in self.duplicate_groups],
            "anomalies": ids(self.anomalies),
            "notes": self.notes,
        }


def default_n_clusters(n: int) -> int:
    """A cluster count that grows like sqrt(n/2), between 2 and 30."""
    return int(min(30, max(2, round(math.sqrt(n / 2)))))


def project_2d(
    embeddings: np.ndarray, method: str = "auto", seed: int = 0
) -> tuple[np.ndarray, str]:
    """2-D coordinates of the embeddings; ``auto`` = UMAP if installed, else t-SNE up to 5,000
    items, else PCA. Returns ``(coords, method used)``."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; use one of {', '.join(PROJECTIONS)}")
    n = embeddings.shape[0]
    x = embeddings.astype(np.float64)
    if n < 3:
        return np.zeros((n, 2)), "none"
    reduced = x
    if x.shape[1] > 50:
        reduced = PCA(n_components=min(50, n - 1), random_state=seed).fit_transform(x)
    if method in ("auto", "umap"):
        try:
            import umap

            reducer = umap.UMAP(n_components=2, random_state=seed)
            return np.asarray(reducer.fit_transform(reduced)), "umap"
        except ImportError:
            if method == "umap":
                raise ValueError("UMAP is not installed: pip install umap-learn") from None
    if method == "tsne" or (method == "auto" and 10 <= n <= 5000):
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        return np.asarray(tsne.fit_transform(reduced)), "tsne"
    return PCA(n_components=2, random_state=seed).fit_transform(x), "pca"


def cluster_pool(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means cluster index per item (at most one cluster per item)."""
    n = embeddings.shape[0]
    k = max(1, min(n_clusters, n))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed)
    return np.asarray(km.fit_predict(embeddings.astype(np.float64)), dtype=np.int64)


def analyse_coverage(
    pool: Pool,
    *,
    n_clusters: int | None = None,
    projection: str = "auto",
    seed: int = 0,
    anomaly_fraction: float = 0.02,
    with_map: bool = True,
) -> Coverage:
    """Cluster the pool, find holes, duplicates and anomalies, and measure per-cluster accuracy."""
    n = len(pool)
    if n == 0:
        raise ValueError("the pool is empty")
    if n_clusters is not None and n_clusters < 1:
        raise ValueError("n_clusters must be at least 1")
    emb = pool.embeddings
    k = n_clusters or default_n_clusters(n)
    clusters = cluster_pool(emb, k, seed=seed)
    labeled = pool.labeled_mask
    codes = pool.codes()
    notes: list[str] = []

    correct = np.full(n, -1, dtype=np.int64)
    lab_idx = np.flatnonzero(labeled & (codes >= 0))
    if lab_idx.size:
        pred = cv_predictions(emb[lab_idx], codes[lab_idx], seed=seed, scaling=Scaling.of(emb))
        if pred is None:
            notes.append("accuracy not measured: too few labels per class for cross-validation")
        else:
            correct[lab_idx] = (pred == codes[lab_idx]).astype(np.int64)

    rows: list[ClusterRow] = []
    for c in range(int(clusters.max()) + 1):
        members = np.flatnonzero(clusters == c)
        if members.size == 0:
            continue
        lab = members[labeled[members]]
        measured = correct[members][correct[members] >= 0]
        top = None
        if lab.size:
            names, counts = np.unique([pool.labels[i] for i in lab], return_counts=True)
            top = str(names[int(np.argmax(counts))])
        rows.append(
            ClusterRow(
                cluster=c,
                size=int(members.size),
                share=float(members.size / n),
                labels=int(lab.size),
                accuracy=float(measured.mean()) if measured.size else None,
                hole=bool(lab.size == 0),
                top_label=top,
            )
        )

    groups = _filters.near_duplicate_groups(emb)
    scores = _filters.anomaly_scores(emb)
    n_anom = math.ceil(anomaly_fraction * n) if n >= 20 else 0
    order = np.argsort(-scores, kind="stable")
    anomalies = [int(i) for i in order[:n_anom]]

    if with_map:
        coords, used = project_2d(emb, projection, seed=seed)
    else:
        coords, used = np.zeros((n, 2)), "none"
    return Coverage(
        coords=coords,
        projection=used,
        clusters=clusters,
        rows=rows,
        labeled=labeled,
        duplicate_groups=groups,
        anomalies=anomalies,
        anomaly_scores=scores,
        cv_correct=correct,
        notes=notes,
    )


def render_coverage_png(cov: Coverage, out: Path | None = None, title: str = "") -> bytes:
    """Draw the coverage map (matplotlib, Agg) and return the PNG bytes (also written to ``out``).

    Grey dots: unlabelled; orange dots: unlabelled in a hole cluster (boxed number at its
    medoid); coloured dots: labelled (green = the CV prediction was right, red = wrong, blue = not
    measured); black rings: anomalies; purple crosses and lines: near-duplicates of a kept image.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    xy = cov.coords
    lab = cov.labeled
    in_hole = np.isin(cov.clusters, cov.holes)
    plain = ~lab & ~in_hole
    ax.scatter(xy[plain, 0], xy[plain, 1], s=8, c="#b0b0b0", label="unlabelled", linewidths=0)
    if in_hole.any():
        ax.scatter(
            xy[in_hole, 0],
            xy[in_hole, 1],
            s=8,
            c="#f0a030",
            label="unlabelled, in a hole",
            linewidths=0,
        )
    correct = cov.cv_correct if cov.cv_correct is not None else np.full(lab.size, -1)
    for value, colour, name in (
        (1, "#2a9d3a", "labelled, CV right"),
        (0, "#d62728", "labelled, CV wrong"),
        (-1, "#1f5fbf", "labelled"),
    ):
        m = lab & (correct == value)
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=14, c=colour, label=name, linewidths=0)
    for group in cov.duplicate_groups:
        pts = xy[group]
        ax.plot(pts[:, 0], pts[:, 1], color="#7b3fa0", linewidth=0.8, alpha=0.8)
        ax.scatter(pts[1:, 0], pts[1:, 1], s=30, marker="x", c="#7b3fa0", linewidths=1)
    if cov.duplicate_groups:
        ax.scatter([], [], s=30, marker="x", c="#7b3fa0", label="near-duplicate (skipped)")
    if cov.anomalies:
        a = xy[cov.anomalies]
        ax.scatter(a[:, 0], a[:, 1], s=60, facecolors="none", edgecolors="black", label="anomaly")
    for row in cov.rows:
        if not row.hole:
            continue
        members = xy[cov.clusters == row.cluster]
        middle = np.median(members, axis=0)
        centre = members[int(np.argmin(np.sum((members - middle) ** 2, axis=1)))]
        ax.annotate(
            f"hole {row.cluster}",
            centre,
            ha="center",
            va="center",
            fontsize=8,
            color="#8a4b00",
            bbox={"boxstyle": "round", "fc": "#ffe7b3", "ec": "#e08a00", "alpha": 0.9},
        )
    ax.set_title(title or f"Coverage map ({cov.projection})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    buf = BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if out is not None:
        Path(out).write_bytes(data)
    return data
