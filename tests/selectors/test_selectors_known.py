"""Known-answer tests: each strategy and filter does what its paper says on constructed data."""

from __future__ import annotations

import numpy as np
import pytest

from labelwheel.selectors import adaptive_phase, select
from labelwheel.selectors.filters import (
    anomaly_scores,
    exact_duplicates,
    information_bits,
    near_duplicate_groups,
    near_duplicate_mask,
)
from labelwheel.selectors.uncertainty import (
    bald_uncertainty,
    entropy_uncertainty,
    least_confidence_uncertainty,
    margin_uncertainty,
    top2_margin,
)

P = np.array(
    [
        [0.90, 0.05, 0.05],  # confident
        [0.50, 0.45, 0.05],  # smallest top-2 gap (0.05)
        [0.40, 0.30, 0.30],  # least confident (max 0.40)
        [0.34, 0.33, 0.33],  # flattest: highest entropy, also max < others? 0.34
        [0.70, 0.20, 0.10],
    ]
)


def test_margin_picks_smallest_top2_gap():
    idx, util = select("margin", 2, embeddings=None, probabilities=P, return_scores=True)
    # row 3 gap 0.01, row 1 gap 0.05
    assert idx.tolist() == [3, 1]
    np.testing.assert_allclose(util, [0.99, 0.95])
    np.testing.assert_allclose(top2_margin(P), [0.85, 0.05, 0.10, 0.01, 0.50])
    np.testing.assert_allclose(margin_uncertainty(P), 1 - top2_margin(P))


def test_least_confidence_picks_lowest_max_probability():
    idx = select("least_confidence", 2, embeddings=None, probabilities=P)
    assert idx.tolist() == [3, 2]  # max 0.34, then 0.40
    np.testing.assert_allclose(least_confidence_uncertainty(P), 1 - P.max(axis=1))


def test_entropy_picks_flattest_distribution():
    idx, util = select("entropy", 1, embeddings=None, probabilities=P, return_scores=True)
    assert idx.tolist() == [3]
    expected = -(P[3] * np.log(P[3])).sum()
    assert util[0] == pytest.approx(expected)
    assert entropy_uncertainty(np.array([[1.0, 0.0]]))[0] == pytest.approx(0.0)


def test_labelled_samples_are_skipped():
    labeled = np.array([False, False, False, True, False])
    idx = select("margin", 5, embeddings=None, probabilities=P, labeled=labeled)
    assert idx.tolist() == [1, 2, 4, 0]


def test_multi_label_margin_uses_label_closest_to_half():
    p = np.array([[0.9, 0.1, 0.95], [0.6, 0.05, 0.9], [0.99, 0.02, 0.51]])
    idx = select("margin", 3, embeddings=None, probabilities=p, multi_label=True)
    assert idx.tolist() == [2, 1, 0]


def test_bald_on_constructed_committee():
    # sample 0: members agree and are confident -> 0
    # sample 1: members agree on a uniform prediction (aleatoric) -> 0
    # sample 2: members confidently disagree -> ln 2
    committee = np.array(
        [
            [[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]],
            [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]],
        ]
    )
    mi = bald_uncertainty(committee)
    np.testing.assert_allclose(mi, [0.0, 0.0, np.log(2)], atol=1e-9)
    idx, util = select("bald", 1, embeddings=None, probabilities=committee, return_scores=True)
    assert idx.tolist() == [2] and util[0] == pytest.approx(np.log(2))


# k-center's textbook geometry (Euclidean, every point a candidate); its defaults normalise the
# rows and skip outliers (tests/selectors/test_selectors_covering.py)
TEXTBOOK = {"normalize": False, "outlier_fraction": 0.0}


def test_kcenter_second_pick_is_farthest_from_first():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    idx, util = select("kcenter", 3, embeddings=x, seed=5, return_scores=True, **TEXTBOOK)
    d_first = np.linalg.norm(x - x[idx[0]], axis=1)
    assert idx[1] == int(np.argmax(d_first))
    assert util[1] == pytest.approx(d_first.max())
    d_two = np.minimum(d_first, np.linalg.norm(x - x[idx[1]], axis=1))
    assert idx[2] == int(np.argmax(d_two))


def test_kcenter_first_pick_is_farthest_from_labelled():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    labeled = np.zeros(300, bool)
    labeled[[3, 50, 120]] = True
    idx, util = select("kcenter", 1, embeddings=x, labeled=labeled, return_scores=True, **TEXTBOOK)
    d = np.min(np.linalg.norm(x[:, None, :] - x[labeled][None], axis=2), axis=1)
    assert idx[0] == int(np.argmax(d)) and util[0] == pytest.approx(d.max())


def test_kcenter_batched_exact_equals_textbook_greedy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 8))
    labeled = np.zeros(2000, bool)
    labeled[:5] = True
    idx = select("kcenter", 150, embeddings=x, labeled=labeled, exact=True, **TEXTBOOK)
    mind = np.min(np.linalg.norm(x[:, None] - x[None, :5], axis=2), axis=1)
    mind[:5] = -1
    ref = []
    for _ in range(150):
        j = int(np.argmax(mind))
        ref.append(j)
        mind = np.minimum(mind, np.linalg.norm(x - x[j], axis=1))
        mind[j] = -1
    assert idx.tolist() == ref


def test_kcenter_approximation_covers_within_ten_percent():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(30, 96)) * 3
    x = (centers[rng.integers(0, 30, 3000)] + rng.normal(size=(3000, 96))).astype(np.float64)
    sq = (x**2).sum(axis=1)

    def radius(idx):
        d2 = sq[:, None] - 2 * x @ x[idx].T + sq[idx][None, :]
        return float(np.sqrt(np.maximum(d2, 0).min(axis=1).max()))

    exact = select("kcenter", 100, embeddings=x, exact=True)
    approx = select("kcenter", 100, embeddings=x, exact=False, projection_dim=32)
    assert radius(approx) <= 1.10 * radius(exact)


def _blobs(sizes, spread=0.3, seed=0, dim=2):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])[: len(sizes)]
    if dim > 2:
        centers = np.hstack([centers, np.zeros((len(sizes), dim - 2))])
    x = np.vstack(
        [c + rng.normal(scale=spread, size=(s, dim)) for c, s in zip(centers, sizes, strict=True)]
    )
    blob = np.repeat(np.arange(len(sizes)), sizes)
    return x, blob, centers


def test_typiclust_picks_typical_point_of_each_uncovered_cluster():
    x, blob, centers = _blobs([200, 120, 80])
    idx = select("typiclust", 3, embeddings=x, seed=0)
    assert sorted(blob[idx].tolist()) == [0, 1, 2]
    assert blob[idx[0]] == 0  # largest cluster first
    for i in idx:  # typical = near the dense centre, not on the rim
        dist = np.linalg.norm(x[i] - centers[blob[i]])
        assert dist < np.quantile(np.linalg.norm(x - centers[blob], axis=1), 0.3)


def test_typiclust_prefers_clusters_without_labels():
    x, blob, _ = _blobs([200, 120, 80])
    labeled = np.zeros(len(x), bool)
    labeled[np.flatnonzero(blob == 0)[:3]] = True
    idx = select("typiclust", 2, embeddings=x, labeled=labeled, seed=0)
    assert sorted(blob[idx].tolist()) == [1, 2]


def test_kmeans_picks_nearest_to_centroid_of_uncovered_cluster_first():
    x, blob, _ = _blobs([150, 150])
    labeled = np.zeros(len(x), bool)
    labeled[0] = True  # blob 0 is covered
    idx, util = select("kmeans", 2, embeddings=x, labeled=labeled, return_scores=True)
    assert blob[idx[0]] == 1 and blob[idx[1]] == 0
    assert util[0] > util[1]
    member = np.flatnonzero(blob == 1)
    centroid = x[member].mean(axis=0)
    assert idx[0] == member[np.argmin(np.linalg.norm(x[member] - centroid, axis=1))]


def test_probcover_covers_each_blob_once():
    x, blob, _ = _blobs([100, 100, 100, 100], spread=0.5)
    idx, util = select("probcover", 4, embeddings=x, seed=0, return_scores=True, delta=3.0)
    assert sorted(blob[idx].tolist()) == [0, 1, 2, 3]
    assert np.all(util >= 50)
    idx2 = select("probcover", 4, embeddings=x, seed=0, n_clusters=4)  # delta by purity
    assert sorted(blob[idx2].tolist()) == [0, 1, 2, 3]


def test_cluster_margin_round_robins_over_clusters():
    x, blob, _ = _blobs([100, 100, 100])
    p = np.tile([0.99, 0.01], (len(x), 1))
    p[np.flatnonzero(blob == 0)[:10]] = [0.5, 0.5]  # ten maximally uncertain points in blob 0
    p[np.flatnonzero(blob == 1)[:5]] = [0.55, 0.45]  # five fairly uncertain points in blob 1
    idx = select(
        "cluster_margin", 4, embeddings=x, probabilities=p, cluster_labels=blob, candidate_factor=5
    )
    # 20 candidates: 15 in blob 0, 5 in blob 1; the cluster with fewer candidates goes first
    assert blob[idx].tolist() == [1, 0, 1, 0]
    plain_margin = select("margin", 4, embeddings=x, probabilities=p)
    assert set(blob[plain_margin].tolist()) == {0}


def test_adaptive_phase_rule():
    ph = adaptive_phase(0, None, None)
    assert ph.phase == "coverage" and ph.strategy == "maxherding"  # the default cold start
    ph = adaptive_phase(0, None, None, early="typiclust")
    assert ph.phase == "typicality" and ph.strategy == "typiclust"
    ph = adaptive_phase(39, 10, 0.9)
    assert ph.phase == "coverage" and "39 labels < 4 per class" in ph.reason
    assert ph.uncertain_fraction == 0.0
    ph = adaptive_phase(40, 10, 0.9)
    assert ph.phase == "transition" and ph.strategy == "margin" and ph.uncertain_fraction == 0.0
    ph = adaptive_phase(70, 10, 0.9)
    assert ph.phase == "transition" and ph.uncertain_fraction == pytest.approx(0.5)
    ph = adaptive_phase(100, 10, 0.9)
    assert ph.phase == "uncertainty" and ph.uncertain_fraction == 1.0
    abrupt = adaptive_phase(30, 10, 0.9, min_labels_per_class=3, full_labels_per_class=None)
    assert abrupt.phase == "uncertainty"
    assert adaptive_phase(29, 10, 0.9, min_labels_per_class=3).phase == "coverage"
    ph = adaptive_phase(100, 10, 0.3, min_confidence=0.5)
    assert ph.phase == "coverage" and "0.300 < 0.5" in ph.reason
    assert adaptive_phase(100, 10, 0.9, late="badge").strategy == "badge"


def test_adaptive_delegates_by_phase():
    x, _, _ = _blobs([100, 100, 100])
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=len(x))
    few = np.zeros(len(x), bool)
    few[:2] = True
    np.testing.assert_array_equal(
        select("adaptive", 5, embeddings=x, probabilities=p, labeled=few),
        select("maxherding", 5, embeddings=x, probabilities=p, labeled=few),
    )
    np.testing.assert_array_equal(
        select("adaptive", 5, embeddings=x, probabilities=p, labeled=few, early="typiclust"),
        select("typiclust", 5, embeddings=x, probabilities=p, labeled=few),
    )
    many = np.zeros(len(x), bool)
    many[::10] = True  # 30 labels >= 10 per class x 3 classes
    np.testing.assert_array_equal(
        select("adaptive", 5, embeddings=x, probabilities=p, labeled=many),
        select("margin", 5, embeddings=x, probabilities=p, labeled=many),
    )
    mid = np.zeros(len(x), bool)
    mid[::15] = True  # 20 labels: 4 <= 6.7 per class < 10 -> about 45% margin picks
    idx = select("adaptive", 10, embeddings=x, probabilities=p, labeled=mid)
    marg = set(select("margin", 10, embeddings=x, probabilities=p, labeled=mid).tolist())
    typ = set(select("maxherding", 10, embeddings=x, probabilities=p, labeled=mid).tolist())
    from_margin = [i for i in idx.tolist() if i in marg and i not in typ]
    assert len(set(idx.tolist())) == 10 and set(idx.tolist()) <= marg | typ
    assert 3 <= len(from_margin) <= 5


# ---------------------------------------------------------------------------- filters


def test_exact_duplicates_by_content():
    items = [b"abc", b"xyz", b"abc", np.zeros(3), np.zeros(3), np.zeros(3, np.float32), "abc"]
    groups = exact_duplicates(items)
    assert [g.tolist() for g in groups] == [[0, 2], [3, 4]]  # float32 zeros and str differ
    rows = np.array([[1, 2], [3, 4], [1, 2], [1, 2]])
    assert [g.tolist() for g in exact_duplicates(rows)] == [[0, 2, 3]]


def test_near_duplicate_groups_keep_one_representative():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16))
    x[10] = x[3] + 1e-3
    x[42] = x[3] - 1e-3
    x[400] = x[7] + 2e-3
    groups = near_duplicate_groups(x, threshold=0.05)
    assert [g.tolist() for g in groups] == [[3, 10, 42], [7, 400]]
    mask = near_duplicate_mask(x, threshold=0.05)
    assert np.flatnonzero(mask).tolist() == [10, 42, 400]
    assert near_duplicate_groups(x, threshold=0.0) == []
    # the default threshold (5% of the median pairwise distance) finds the same groups
    assert [g.tolist() for g in near_duplicate_groups(x)] == [[3, 10, 42], [7, 400]]


def test_near_duplicates_do_not_chain():
    x = np.array([[0.0], [0.9], [1.8], [2.7], [10.0]])
    groups = near_duplicate_groups(x, threshold=1.0)
    assert [g.tolist() for g in groups] == [[0, 1], [2, 3]]  # each member near its leader


def test_anomaly_score_ranks_outlier_highest():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    x[123] += 25.0
    s = anomaly_scores(x, k=5)
    assert s.shape == (400,) and int(np.argmax(s)) == 123
    assert s[123] > 3 * np.median(s)


def test_information_bits():
    bits = information_bits([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(bits, [1.0, 0.0, 1.0])
    four = information_bits(np.full((1, 4), 0.25))
    assert four[0] == pytest.approx(2.0)
