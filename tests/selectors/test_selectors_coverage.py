"""Nearest-pick distances (labelwheel.selectors.coverage): exact search equals brute force, IVF
gives upper bounds close to it on clustered data, shards merge into the pool's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from labelwheel.selectors.coverage import (
    Coverage,
    index_from_bytes,
    index_to_bytes,
    nearest_distances,
    pick_index,
)
from labelwheel.selectors.sharded import final_pick, select_two_stage, shard_candidates


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(50, d))
    return (centres[rng.integers(0, 50, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _brute(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d2 = ((x[:, None, :].astype(np.float64) - c[None, :, :]) ** 2).sum(-1)
    return np.sqrt(d2.min(1)), d2.argmin(1)


def test_flat_equals_brute_force_and_shards_merge() -> None:
    x = _clustered(3000, 12, 0)
    picks = x[::37]
    dist, nearest = nearest_distances(x, pick_index(picks, kind="flat"), chunk=700)
    want, want_idx = _brute(x, picks)
    np.testing.assert_allclose(dist, want, rtol=1e-4, atol=0.02)
    assert (nearest == want_idx).mean() > 0.999  # ties aside
    merged = Coverage()
    for part in np.array_split(dist, 7):
        merged = merged.merge(Coverage.of(part))
    assert merged.count == len(x)
    assert merged.radius == pytest.approx(want.max(), rel=1e-5)
    assert merged.mean == pytest.approx(want.mean(), rel=1e-5)
    assert Coverage.of([]).mean == 0.0


def test_ivf_is_an_upper_bound_close_to_exact_and_ships_as_bytes() -> None:
    x = _clustered(20000, 16, 1)
    picks = x[np.random.default_rng(2).choice(len(x), 4000, replace=False)]
    exact, exact_idx = nearest_distances(x, pick_index(picks, kind="flat"))
    ivf = pick_index(picks, kind="ivf", seed=0)
    assert ivf.nlist == min(int(4 * np.sqrt(4000)), 4000 // 39) and ivf.nprobe == 4
    approx, approx_idx = nearest_distances(x, ivf)
    # never closer than the true nearest pick (up to float32 cancellation in exact search)
    assert np.all(approx >= exact - 0.02)
    assert (approx_idx == exact_idx).mean() > 0.9
    assert approx.mean() < 1.05 * exact.mean()
    shipped = index_from_bytes(index_to_bytes(ivf))
    assert shipped.nprobe == ivf.nprobe
    np.testing.assert_array_equal(nearest_distances(x, shipped)[1], approx_idx)
    # auto: exact below IVF_MIN_PICKS picks
    assert not hasattr(pick_index(picks), "nprobe")


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        pick_index(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="finite"):
        pick_index(np.full((3, 4), np.nan))
    with pytest.raises(ValueError, match="flat, ivf or auto"):
        pick_index(np.zeros((3, 4)), kind="hnsw")
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        nearest_distances(np.zeros((3, 5)), pick_index(np.zeros((3, 4))))


def test_final_pick_is_stage_two_of_select_two_stage() -> None:
    x = _clustered(2000, 8, 3)
    ids = np.arange(len(x))
    shards = [(p, x[p], None) for p in np.array_split(ids, 4)]
    parts = [shard_candidates("kcenter", 30, s) for s in shards]
    assert final_pick("kcenter", 30, parts).tolist() == (
        select_two_stage("kcenter", 30, shards).tolist()
    )
    assert len(final_pick("kcenter", 0, parts)) == 0
    assert len(final_pick("kcenter", 5, [])) == 0
