"""Two-stage selection for pools that do not fit one process: candidates per shard, then the
final pick over their union.

Stage one runs :func:`labelwheel.selectors.select` on each shard alone (each shard could be a
memory-mapped shard of an embedding store, a Ray task, another machine) and keeps
``candidates`` picks per shard; stage two runs the same strategy over the union of the
candidates, which is ``shards x candidates`` rows instead of the whole pool. A shard's picks are
the ones its own strategy ranks first, so with ``candidates >= n`` the final pick can take all
``n`` from one shard if that is where the informative samples are.

The approximation: a diversity strategy (k-center, k-means) judges coverage within a shard in
stage one, and over the candidates, not the pool, in stage two; an uncertainty strategy
(margin, entropy) is exact, since its score of a sample does not depend on the other samples
(its top ``n`` over the pool is inside the union of every shard's top ``n``).
``benchmarks/sharded_selection.py`` reports the quality against one-stage selection.

A strategy that judges density over the set it is given (k-center's ``outlier_fraction``: the
sparsest rows are never picked) runs that filter in stage one only, where a shard is a sample
of the pool; stage two turns it off unless the caller sets it (measured: candidates are spread
out by construction, so a density filter over them drops exactly the lone clusters, and the
two-stage covering radius came out 3x one-stage's on a 25-cluster pool).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Shard", "final_pick", "select_two_stage", "shard_candidates", "stage_two_params"]

#: Strategy options that filter by density over the rows given: set to this in stage two.
_STAGE_ONE_ONLY = {"outlier_fraction": 0.0}

Shard = tuple[Any, Any, Any]
"""(global ids (k,), embeddings (k, d), probabilities (k, C) or None) of one shard."""


def shard_candidates(
    strategy: str, candidates: int, shard: Shard, *, seed: int = 0, **params: Any
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float64] | None]:
    """Stage one on one shard: (global ids, embeddings, probabilities) of its candidates, in
    the strategy's order."""
    from labelwheel.selectors import select

    ids, emb, proba = shard
    ids = np.asarray(ids, dtype=np.int64)
    emb = np.asarray(emb, dtype=np.float32)
    if ids.ndim != 1 or emb.ndim != 2 or len(ids) != len(emb):
        raise ValueError(
            f"a shard needs ids (k,) and embeddings (k, d), got {ids.shape}, {emb.shape}"
        )
    prob = None if proba is None else np.asarray(proba, dtype=np.float64)
    if len(ids) == 0:
        return ids, emb, prob
    kwargs: dict[str, Any] = dict(params)
    if prob is not None:
        kwargs["probabilities"] = prob
    picks = select(strategy, min(candidates, len(ids)), embeddings=emb, seed=seed, **kwargs)
    return ids[picks], np.ascontiguousarray(emb[picks]), None if prob is None else prob[picks]


def select_two_stage(
    strategy: str,
    n: int,
    shards: Iterable[Shard],
    *,
    candidates: int | None = None,
    seed: int = 0,
    map_fn: Callable[[Callable[[Shard], Any], Iterable[Shard]], Iterable[Any]] = map,
    **params: Any,
) -> NDArray[np.int64]:
    """Pick ``n`` global ids with ``strategy`` in two stages (see the module doc).

    ``candidates`` per shard defaults to ``n``; ``map_fn`` runs stage one (``map`` here, or a
    thread pool's / a Ray-backed map: shards are processed independently). Labelled samples
    are left out of the shards by the caller. Raises ValueError as :func:`select` does.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    per_shard = n if candidates is None else int(candidates)
    if per_shard < 1:
        raise ValueError(f"candidates must be at least 1, got {candidates}")

    def stage_one(shard: Shard) -> Any:
        return shard_candidates(strategy, per_shard, shard, seed=seed, **params)

    return final_pick(strategy, n, list(map_fn(stage_one, shards)), seed=seed, **params)


def final_pick(
    strategy: str,
    n: int,
    parts: Sequence[Any],
    *,
    seed: int = 0,
    labeled_embeddings: Any = None,
    **params: Any,
) -> NDArray[np.int64]:
    """Stage two: pick ``n`` global ids with ``strategy`` over the union of the shards'
    candidates, ``parts`` as :func:`shard_candidates` returns them (in shard order, so the
    result does not depend on which shard finished first), with :func:`stage_two_params`.

    ``labeled_embeddings`` (m, d): samples already labelled anywhere in the pool; a diversity
    strategy counts them as covered (they join stage two as ``labeled`` rows, never picked).
    In stage one the caller passes each shard's own labelled rows as ``labeled``."""
    parts = [p for p in parts if len(p[0])]
    if n <= 0 or not parts:
        return np.zeros(0, dtype=np.int64)
    ids = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])
    emb = np.concatenate([np.asarray(p[1], dtype=np.float32) for p in parts])
    with_proba = [p[2] is not None for p in parts]
    if any(with_proba) and not all(with_proba):
        raise ValueError("probabilities must be given for every shard or for none")
    kwargs = stage_two_params(strategy, params)
    if all(with_proba):
        kwargs["probabilities"] = np.concatenate([p[2] for p in parts])
    if labeled_embeddings is not None and len(labeled_embeddings):
        lab = np.asarray(labeled_embeddings, dtype=np.float32)
        if lab.ndim != 2 or lab.shape[1] != emb.shape[1]:
            raise ValueError(f"labeled embeddings must be (m, {emb.shape[1]}), got {lab.shape}")
        if "probabilities" in kwargs:
            raise ValueError("labeled embeddings are for strategies without probabilities")
        emb = np.concatenate([emb, lab])
        kwargs["labeled"] = np.arange(len(emb)) >= len(ids)
    from labelwheel.selectors import select

    picks = select(strategy, min(n, len(ids)), embeddings=emb, seed=seed, **kwargs)
    return ids[picks]


def stage_two_params(strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` for stage two: density filters the strategy has (see the module doc) off,
    unless ``params`` sets them."""
    from labelwheel.selectors import STRATEGIES

    out = dict(params)
    fn = STRATEGIES.get(strategy)
    if fn is None:
        return out  # select() raises its own error for an unknown strategy
    accepted = inspect.signature(fn).parameters
    for name, value in _STAGE_ONE_ONLY.items():
        if name in accepted and name not in out:
            out[name] = value
    return out
