"""Two-stage selection over shards against one-stage selection on the whole pool."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from labelwheel.selectors import select
from labelwheel.selectors.sharded import select_two_stage


def _pool(n: int = 6000, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(40, d))
    return (centres[rng.integers(0, 40, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _shards(x: np.ndarray, k: int, proba: np.ndarray | None = None) -> list:
    ids = np.arange(len(x))
    return [
        (part, x[part], None if proba is None else proba[part]) for part in np.array_split(ids, k)
    ]


def _covering_radius(x: np.ndarray, picks: np.ndarray) -> float:
    centres = x[picks]
    d2 = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return float(np.sqrt(d2.min(1).max()))


def test_uncertainty_is_exact_over_shards() -> None:
    rng = np.random.default_rng(1)
    x = _pool()
    logits = rng.normal(size=(len(x), 5))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    one = select("margin", 50, embeddings=x, probabilities=proba)
    two = select_two_stage("margin", 50, _shards(x, 7, proba))
    assert set(two.tolist()) == set(one.tolist())


def test_kcenter_covers_nearly_as_well_and_picks_distinct_ids() -> None:
    x = _pool()
    one = select("kcenter", 60, embeddings=x)
    with ThreadPoolExecutor(2) as pool:
        two = select_two_stage("kcenter", 60, _shards(x, 6), map_fn=pool.map)
    assert len(two) == 60 == len(set(two.tolist()))
    assert two.min() >= 0 and two.max() < len(x)
    random = np.random.default_rng(0).choice(len(x), 60, replace=False)
    r_one, r_two, r_rand = (_covering_radius(x, p) for p in (one, two, random))
    assert r_two <= 1.25 * r_one < r_rand


def test_edges() -> None:
    x = _pool(50)
    assert len(select_two_stage("kcenter", 0, _shards(x, 3))) == 0
    assert sorted(select_two_stage("kcenter", 80, _shards(x, 3)).tolist()) == list(range(50))
    with pytest.raises(ValueError, match="candidates"):
        select_two_stage("kcenter", 5, _shards(x, 3), candidates=0)
    with pytest.raises(ValueError, match="unknown strategy"):
        select_two_stage("nope", 5, _shards(x, 3))


def test_stage_two_turns_density_filters_off_unless_asked() -> None:
    import inspect

    from labelwheel.selectors import STRATEGIES
    from labelwheel.selectors.sharded import stage_two_params

    has_filter = "outlier_fraction" in inspect.signature(STRATEGIES["kcenter"]).parameters
    assert stage_two_params("kcenter", {}) == ({"outlier_fraction": 0.0} if has_filter else {})
    assert stage_two_params("kcenter", {"outlier_fraction": 0.2}) == {"outlier_fraction": 0.2}
    assert stage_two_params("margin", {"seed_like": 1}) == {"seed_like": 1}
    assert stage_two_params("no-such-strategy", {}) == {}


def test_kcenter_keeps_lone_clusters_over_shards() -> None:
    # 25 clusters, some small: stage two must not drop the candidates that stand alone
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5.0, size=(25, 16))
    x = (centres[rng.integers(0, 25, 2400)] + rng.normal(size=(2400, 16))).astype(np.float32)
    one = select("kcenter", 40, embeddings=x)
    two = select_two_stage("kcenter", 40, _shards(x, 6))
    assert _covering_radius(x, two) <= 1.25 * _covering_radius(x, one)
