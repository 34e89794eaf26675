"""``labelwheel select``: two-stage selection over a real embedding store, shard by shard, in this
process and as tasks on a real local Ray (one ``ray.init`` for the module).

ray is in the dev extra: if it is missing the Ray tests fail (they do not skip).
"""

from __future__ import annotations

import csv
import gc
import json
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from labelwheel.cli import cli
from labelwheel.distributed.selection import (
    STORE_STRATEGIES,
    load_shard,
    select_store,
    store_shards,
)
from labelwheel.features.store import EmbeddingStore
from labelwheel.selectors import NEEDS_PROBABILITIES, STRATEGIES, select
from labelwheel.selectors.sharded import select_two_stage

DIM = 16
SHARDS = 6
ROWS = 400


def _write_store(
    root: Path, shards: int = SHARDS, rows: int = ROWS, seed: int = 0, dim: int = DIM
) -> np.ndarray:
    """A store of clustered vectors written by the store writer; returns the whole matrix."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(25, dim))
    store = EmbeddingStore.create(root, "synthetic", 32, dim)
    parts = []
    for s in range(shards):
        x = (centres[rng.integers(0, 25, rows)] + rng.normal(size=(rows, dim))).astype(np.float32)
        store.append(
            [f"/pool/{s}/img_{i}.jpg" for i in range(rows)], [f"h{s}_{i}" for i in range(rows)], x
        )
        parts.append(x)
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("select") / "store"
    return root, _write_store(root)


def _position(p: object) -> int:
    return int(p.shard) * ROWS + int(p.row)  # type: ignore[attr-defined]


def _nearest(x: np.ndarray, picks: np.ndarray) -> np.ndarray:
    d2 = ((x[:, None, :].astype(np.float64) - x[picks][None, :, :]) ** 2).sum(-1)
    return np.sqrt(d2.min(1))


def test_in_process_equals_two_stage_over_the_matrix(store: tuple[Path, np.ndarray]) -> None:
    root, x = store
    result = select_store(root, 40, "kcenter", coverage=True, index_kind="flat")
    parts = [
        (np.arange(s * ROWS, (s + 1) * ROWS), x[s * ROWS : (s + 1) * ROWS], None)
        for s in range(SHARDS)
    ]
    expected = select_two_stage("kcenter", 40, parts)
    got = np.array([_position(p) for p in result.picks])
    assert got.tolist() == expected.tolist()
    assert [p.rank for p in result.picks] == list(range(40))
    p0 = result.picks[0]
    assert p0.ref == f"/pool/{p0.shard}/img_{p0.row}.jpg" and p0.sha == f"h{p0.shard}_{p0.row}"
    assert (result.rows, result.shards, result.candidates, result.max_shard_rows) == (
        SHARDS * ROWS,
        SHARDS,
        SHARDS * 40,
        ROWS,
    )
    # coverage over every stored vector, shard by shard, equals brute force on the matrix
    nearest = _nearest(x, got)
    assert result.radius == pytest.approx(nearest.max(), rel=1e-4)
    assert result.mean_distance == pytest.approx(nearest.mean(), rel=1e-4)
    # and the two-stage pick covers nearly as well as one stage over the whole matrix
    one = _nearest(x, select("kcenter", 40, embeddings=x))
    rand = _nearest(x, np.random.default_rng(0).choice(len(x), 40, replace=False))
    assert nearest.max() <= 1.25 * one.max() < rand.max()


def test_stage_one_holds_one_shard_at_a_time(tmp_path: Path) -> None:
    shards, rows, dim = 24, 5000, 64
    root = tmp_path / "store"
    _write_store(root, shards=shards, rows=rows, seed=3, dim=dim)
    loaded: list[tuple[int, int]] = []
    alive: list[weakref.ref[np.ndarray]] = []

    def watching_loader(path: Path, shard: int) -> tuple[np.ndarray, np.ndarray]:
        gc.collect()
        # every shard read before this one has been released
        assert all(ref() is None for ref in alive), f"shard {shard} read while another is held"
        ids, vectors = load_shard(path, shard)
        loaded.append((shard, len(vectors)))
        alive.append(weakref.ref(vectors))
        return ids, vectors

    shard_bytes = rows * dim * 4
    tracemalloc.start()
    try:
        result = select_store(root, 20, "kcenter", loader=watching_loader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded == [(s, rows) for s in range(shards)]
    assert result.max_shard_rows == rows and result.rows == shards * rows
    # traced peak (numpy buffers included): one shard, the selector's float64 copy of it and
    # its distance buffers (measured: about 6 shards' bytes), not the store's 24
    assert peak < 7 * shard_bytes < shards * shard_bytes / 3, (peak, shard_bytes)


def test_excluded_rows_are_never_picked_and_count_as_covered(
    store: tuple[Path, np.ndarray],
) -> None:
    root, x = store
    first = select_store(root, 20, "kcenter")
    done = [p.ref for p in first.picks]
    # a whole shard excluded too: nothing is picked there, its rows still count as covered
    shard0 = [f"/pool/0/img_{i}.jpg" for i in range(ROWS)]
    second = select_store(root, 20, "kcenter", exclude=[*done, *shard0])
    assert second.excluded == len(set(done) | set(shard0))
    picked = [p.ref for p in second.picks]
    assert len(picked) == 20 and not set(picked) & (set(done) | set(shard0))
    assert all(p.shard != 0 for p in second.picks)
    # the second round fills the gaps the excluded rows leave: its picks are far from them
    covered = np.concatenate([[_position(p) for p in first.picks], np.arange(ROWS)])
    gaps = _nearest(x, covered)
    new = np.array([_position(p) for p in second.picks])
    assert np.median(gaps[new]) > np.percentile(gaps, 90), (np.median(gaps[new]), gaps.mean())


def test_ray_tasks_pick_what_the_process_picks(
    local_ray: object, store: tuple[Path, np.ndarray]
) -> None:
    root, _ = store
    done = [f"/pool/{s}/img_{i}.jpg" for s in range(SHARDS) for i in range(0, ROWS, 7)]
    for strategy, seed, exclude in (("kcenter", 0, []), ("kmeans", 5, []), ("kcenter", 1, done)):
        here = select_store(
            root, 25, strategy, seed=seed, coverage=True, index_kind="flat", exclude=exclude
        )
        there = select_store(
            root,
            25,
            strategy,
            seed=seed,
            coverage=True,
            index_kind="flat",
            ray_address="local",
            exclude=exclude,
        )
        assert [p.ref for p in there.picks] == [p.ref for p in here.picks], strategy
        assert there.radius == pytest.approx(here.radius, rel=1e-6)
        assert there.mean_distance == pytest.approx(here.mean_distance, rel=1e-6)
        assert "this process" not in there.workers and len(there.workers) >= 1
    assert local_ray.is_initialized()  # type: ignore[attr-defined]  # the caller's Ray is kept


def test_cli_writes_the_picks(
    local_ray: object, store: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    root, x = store
    out = tmp_path / "picks.csv"
    args = ["select", str(root), "--n", "30", "--out", str(out), "--coverage", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["picked"], summary["rows"], summary["index"]) == (30, SHARDS * ROWS, "flat")
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["rank"]) for r in rows] == list(range(30))
    stored = {r.ref: r.sha for r in EmbeddingStore.open(root).rows()}
    assert all(stored[r["ref"]] == r["sha"] for r in rows)
    picks = np.array([int(r["shard"]) * ROWS + int(r["row"]) for r in rows])
    assert summary["radius"] == pytest.approx(_nearest(x, picks).max(), rel=1e-4)

    on_ray = tmp_path / "ray.csv"
    again = CliRunner().invoke(cli, [*args[:5], str(on_ray), "--ray", "local"])
    assert again.exit_code == 0, again.output
    assert "picked 30 of 2400 rows" in again.output
    assert on_ray.read_text() == out.read_text()

    # the next round: the earlier picks (the CSV itself) are excluded
    nxt = tmp_path / "next.csv"
    res = CliRunner().invoke(cli, [*args[:5], str(nxt), "--exclude", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["excluded"] == 30
    with nxt.open() as fh:
        again_refs = {r["ref"] for r in csv.DictReader(fh)}
    assert len(again_refs) == 30 and not again_refs & {r["ref"] for r in rows}


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = str(tmp_path / "p.csv")
    runner = CliRunner()
    res = runner.invoke(cli, ["select", str(tmp_path / "empty"), "--n", "5", "--out", out])
    assert res.exit_code == 1 and "is not an embedding store" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(
        cli, ["select", str(tmp_path), "--n", "5", "--strategy", "margin", "--out", out]
    )
    assert res.exit_code == 2 and "margin" in res.output
    EmbeddingStore.create(tmp_path / "bare", "synthetic", 32, DIM)
    res = runner.invoke(cli, ["select", str(tmp_path / "bare"), "--n", "5", "--out", out])
    assert res.exit_code == 1 and "holds no vectors" in res.output
    res = runner.invoke(
        cli, ["select", str(tmp_path / "bare"), "--n", "5", "--out", out, "--ray", "nohost"]
    )
    assert res.exit_code == 1 and "--ray 'nohost'" in res.output
    assert not Path(out).exists()


def test_store_strategies_need_embeddings_only(store: tuple[Path, np.ndarray]) -> None:
    assert set(STORE_STRATEGIES) <= set(STRATEGIES)
    assert not set(STORE_STRATEGIES) & NEEDS_PROBABILITIES
    assert store_shards(store[0]) == list(range(SHARDS))
    with pytest.raises(ValueError, match="cannot run on a store"):
        select_store(store[0], 5, "margin")


def test_ray_tasks_ask_for_their_shards_memory(store: tuple[Path, np.ndarray]) -> None:
    from labelwheel.distributed.selection import task_memory

    root, _ = store
    shard_bytes = (root / "shards" / "shard-000000.npy").stat().st_size
    assert shard_bytes >= ROWS * DIM * 4
    assert task_memory(root, 0) == 6 * shard_bytes + 256 * 2**20
