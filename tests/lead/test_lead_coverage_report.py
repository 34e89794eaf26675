"""Coverage map and report on real digits: holes, duplicates, anomalies, re-weighted accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from labelwheel.lead.coverage import ClusterRow, Coverage, analyse_coverage, render_coverage_png
from labelwheel.lead.report import (
    acceptance_from_tasks,
    build_report,
    class_balance,
    estimate_real_accuracy,
)
from labelwheel.pool import Pool


def _half_labelled(digits, per_class: int = 15) -> tuple[Pool, np.ndarray]:
    """Digits pool where only classes 0-4 have labels (per_class each)."""
    x, y = digits
    labels: list[str | None] = [None] * len(y)
    for c in range(5):
        for i in np.flatnonzero(y == c)[:per_class]:
            labels[i] = str(c)
    return Pool.from_arrays(x, labels, classes=[str(c) for c in range(10)]), y


@pytest.fixture(scope="module")
def half(digits) -> tuple[Pool, np.ndarray, Coverage]:
    pool, y = _half_labelled(digits)
    return pool, y, analyse_coverage(pool, n_clusters=20, projection="pca")


def test_holes_are_the_unlabelled_classes(half) -> None:
    pool, y, cov = half
    assert cov.holes, "classes 5-9 have no labels: some clusters must be holes"
    in_holes = np.isin(cov.clusters, cov.holes)
    # Items in hole clusters are overwhelmingly of the classes nobody labelled.
    assert np.mean(y[in_holes] >= 5) > 0.9
    hole_share = sum(r.share for r in cov.rows if r.hole)
    assert 0.3 < hole_share < 0.7
    # Every labelled item sits in a non-hole cluster; row sizes add up.
    assert not np.any(in_holes & pool.labeled_mask)
    assert sum(r.size for r in cov.rows) == len(pool)
    for r in cov.rows:
        assert (r.accuracy is None) == (r.labels == 0) or r.accuracy is None


def test_per_cluster_accuracy_is_cross_validated(half) -> None:
    _, _, cov = half
    measured = [r for r in cov.rows if r.accuracy is not None]
    assert measured
    assert all(0.0 <= r.accuracy <= 1.0 for r in measured)
    assert cov.cv_correct is not None and set(np.unique(cov.cv_correct)) <= {-1, 0, 1}


def test_duplicates_and_anomalies_are_found(digits) -> None:
    x, y = digits
    x = x[:300].copy()
    dup_src = [3, 50, 120]
    odd = np.random.default_rng(0).uniform(0, 16, size=(3, x.shape[1])).astype(np.float32) * 4
    pool_x = np.vstack([x, x[dup_src], odd])
    labels = [str(v) if i % 10 == 0 else None for i, v in enumerate(y[:300])] + [None] * 6
    pool = Pool.from_arrays(pool_x, labels)
    cov = analyse_coverage(pool, n_clusters=8, projection="pca", anomaly_fraction=0.02)
    groups = [set(g) for g in cov.duplicate_groups]
    for k, src in enumerate(dup_src):
        assert any({src, 300 + k} <= g for g in groups), (src, groups)
    assert {303, 304, 305} <= set(cov.anomalies)


def test_coverage_png(half, tmp_path) -> None:
    _, _, cov = half
    out = tmp_path / "map.png"
    data = render_coverage_png(cov, out)
    assert out.read_bytes() == data and data[:4] == b"\x89PNG"
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (800, 650)


def test_tsne_projection_runs(digits) -> None:
    x, y = digits
    pool = Pool.from_arrays(x[:150], [str(v) if i < 40 else None for i, v in enumerate(y[:150])])
    cov = analyse_coverage(pool, projection="tsne", n_clusters=5)
    assert cov.projection == "tsne" and cov.coords.shape == (150, 2)
    with pytest.raises(ValueError, match="projection"):
        analyse_coverage(pool, projection="isomap")


def test_report_on_half_labelled_digits(half) -> None:
    pool, _, cov = half
    rep = build_report(pool, coverage=cov, cost_per_label=0.5)
    assert rep.class_balance == {
        **{str(c): 15 for c in range(5)},
        **{str(c): 0 for c in range(5, 10)},
    }
    assert rep.labeled == 75 and rep.pool_size == len(pool)
    assert rep.measured_accuracy is not None and rep.measured_accuracy > 0.85
    assert rep.unknown_share > 0.3
    lo, hi = rep.estimated_bounds
    assert lo < rep.estimated_accuracy < hi or rep.estimated_accuracy == pytest.approx(hi)
    assert hi - lo == pytest.approx(rep.unknown_share)
    assert rep.duplicate_cost_saved is not None
    assert any("unknown" in n for n in rep.notes)


def test_estimated_accuracy_reweights_by_pool_share() -> None:
    rows = [
        ClusterRow(0, size=100, share=0.5, labels=50, accuracy=0.6, hole=False, top_label="a"),
        ClusterRow(1, size=60, share=0.3, labels=5, accuracy=1.0, hole=False, top_label="b"),
        ClusterRow(2, size=40, share=0.2, labels=0, accuracy=None, hole=True, top_label=None),
    ]
    cov = Coverage(
        coords=np.zeros((200, 2)),
        projection="none",
        clusters=np.zeros(200, dtype=int),
        rows=rows,
        labeled=np.zeros(200, dtype=bool),
        duplicate_groups=[],
        anomalies=[],
        anomaly_scores=np.zeros(200),
    )
    est, bounds, unknown = estimate_real_accuracy(cov)
    assert unknown == pytest.approx(0.2)
    assert est == pytest.approx((0.5 * 0.6 + 0.3 * 1.0) / 0.8)
    assert bounds == pytest.approx((0.6, 0.8))


class _Config:
    """The two methods of ClassificationConfig the acceptance count uses."""

    labels = ("cat", "dog")

    @staticmethod
    def labels_from_result(result: list[dict]) -> list[str]:
        return [c for r in result for c in r.get("value", {}).get("choices", [])]


def _res(label: str) -> list[dict]:
    return [
        {
            "from_name": "choice",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def test_acceptance_from_label_studio_tasks() -> None:
    # Shapes as GET /api/tasks?fields=all returns them (measured on Label Studio 1.23.2).
    tasks = [
        {  # approval via parent_prediction
            "id": 1,
            "predictions": [
                {
                    "id": 10,
                    "result": _res("cat"),
                    "model_version": "v1",
                    "created_at": "2026-01-01T00:00:00Z",
                }
            ],
            "annotations": [
                {
                    "id": 1,
                    "result": _res("cat"),
                    "parent_prediction": 10,
                    "was_cancelled": False,
                    "created_at": "2026-01-01T00:01:00Z",
                }
            ],
        },
        {  # correction, prediction found by time
            "id": 2,
            "predictions": [
                {
                    "id": 11,
                    "result": _res("cat"),
                    "model_version": "v1",
                    "created_at": "2026-01-01T00:00:00Z",
                }
            ],
            "annotations": [
                {
                    "id": 2,
                    "result": _res("dog"),
                    "parent_prediction": None,
                    "was_cancelled": False,
                    "created_at": "2026-01-01T00:02:00Z",
                }
            ],
        },
        {  # v2 approval; cancelled annotation ignored
            "id": 3,
            "predictions": [
                {
                    "id": 12,
                    "result": _res("dog"),
                    "model_version": "v2",
                    "created_at": "2026-01-02T00:00:00Z",
                }
            ],
            "annotations": [
                {
                    "id": 3,
                    "result": _res("dog"),
                    "parent_prediction": 12,
                    "was_cancelled": False,
                    "created_at": "2026-01-02T00:01:00Z",
                },
                {
                    "id": 4,
                    "result": [],
                    "was_cancelled": True,
                    "created_at": "2026-01-02T00:02:00Z",
                },
            ],
        },
        {  # empty pre-label (cold start) does not count
            "id": 4,
            "predictions": [
                {
                    "id": 13,
                    "result": [],
                    "model_version": "v2",
                    "created_at": "2026-01-02T00:00:00Z",
                }
            ],
            "annotations": [
                {
                    "id": 5,
                    "result": _res("cat"),
                    "parent_prediction": 13,
                    "created_at": "2026-01-02T00:03:00Z",
                }
            ],
        },
        {  # annotated before any prediction existed
            "id": 5,
            "predictions": [
                {
                    "id": 14,
                    "result": _res("cat"),
                    "model_version": "v2",
                    "created_at": "2026-01-03T00:00:00Z",
                }
            ],
            "annotations": [{"id": 6, "result": _res("cat"), "created_at": "2026-01-02T00:00:00Z"}],
        },
    ]
    rows = acceptance_from_tasks(tasks, _Config())
    assert [(r.version, r.approvals, r.corrections) for r in rows] == [("v1", 1, 1), ("v2", 1, 0)]
    assert rows[0].rate == pytest.approx(0.5) and rows[1].rate == 1.0


def test_class_balance_lists_every_class() -> None:
    pool = Pool.from_arrays(np.zeros((4, 2)), ["a", "a", None, "b"], classes=["a", "b", "c"])
    assert class_balance(pool) == {"a": 2, "b": 1, "c": 0}
