"""The strategy registry: one decorator turns a core ranking function into a public strategy.

A *core* function has the signature ``core(pool: Pool, n: int, *, <params>) -> (indices,
utilities)``; it receives validated inputs and returns global indices of unlabelled samples, most
informative first, with the utility each one was ranked by. :func:`strategy` wraps it into the
public function with the same call shape as :func:`labelwheel.selectors.select`, validates every
input up front and enforces the output contract.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from labelwheel.selectors._validation import (
    Pool,
    as_embeddings,
    as_labeled,
    as_probabilities,
    check_n,
    check_params,
    check_seed,
)

Indices = NDArray[np.int64]
Utilities = NDArray[np.float64]
CoreResult = tuple[Indices, Utilities]
Needs = Literal["embeddings", "probabilities", "committee", "both", "optional"]


class StrategyFunction(Protocol):
    """The public call shape of every strategy."""

    __name__: str
    __doc__: str | None

    def __call__(
        self,
        n: int,
        *,
        embeddings: Any = None,
        probabilities: Any = None,
        labeled: Any = None,
        seed: int = 0,
        return_scores: bool = False,
        **params: Any,
    ) -> Any: ...


@dataclass(frozen=True)
class StrategyInfo:
    """What the registry knows about one strategy."""

    name: str
    function: StrategyFunction
    core: Callable[..., CoreResult]
    needs: Needs
    params: tuple[str, ...]


REGISTRY: dict[str, StrategyInfo] = {}


def build_pool(
    name: str,
    needs: Needs,
    embeddings: Any,
    probabilities: Any,
    labeled: Any,
    seed: Any,
    multi_label: bool = False,
) -> Pool:
    """Validate the common inputs of a strategy into a :class:`Pool`."""
    seed = check_seed(seed)
    emb = None
    if embeddings is not None or needs in ("embeddings", "both"):
        if embeddings is None:
            raise ValueError(
                f"strategy {name!r} needs embeddings: pass embeddings=(N, d) float array"
            )
        emb = as_embeddings(embeddings)
    n_samples = None if emb is None else int(emb.shape[0])
    probs = None
    if probabilities is not None or needs in ("probabilities", "committee", "both"):
        if probabilities is None:
            Pool(0, None, None, np.zeros(0, bool), seed).need_probabilities(name)
        probs = as_probabilities(
            probabilities, n_samples, committee=needs == "committee", multi_label=multi_label
        )
        if n_samples is None:
            n_samples = int(probs.shape[-2])
    if n_samples is None:
        raise ValueError(
            f"strategy {name!r} needs embeddings=(N, d) (or probabilities) to know the pool"
        )
    mask = as_labeled(labeled, n_samples)
    return Pool(n_samples, emb, probs, mask, seed)


def strategy(
    name: str, needs: Needs, *, multi_label_ok: bool = False
) -> Callable[[Callable[..., CoreResult]], StrategyFunction]:
    """Register ``core`` under ``name`` and return its public, validating wrapper."""

    def decorate(core: Callable[..., CoreResult]) -> StrategyFunction:
        sig = inspect.signature(core)
        params = tuple(
            p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
        )

        @functools.wraps(core)
        def public(
            n: int,
            *,
            embeddings: Any = None,
            probabilities: Any = None,
            labeled: Any = None,
            seed: int = 0,
            return_scores: bool = False,
            **kwargs: Any,
        ) -> Any:
            n_ = check_n(n)
            check_params(name, kwargs, params)
            multi = bool(kwargs.get("multi_label", False)) if multi_label_ok else False
            pool = build_pool(name, needs, embeddings, probabilities, labeled, seed, multi)
            if n_ == 0 or pool.n_unlabeled == 0:
                idx: Indices = np.zeros(0, dtype=np.int64)
                util: Utilities = np.zeros(0, dtype=np.float64)
            else:
                idx, util = core(pool, min(n_, pool.n_unlabeled), **kwargs)
                idx = np.asarray(idx, dtype=np.int64)
                util = np.asarray(util, dtype=np.float64)
                _check_result(name, idx, util, pool, min(n_, pool.n_unlabeled))
            return (idx, util) if return_scores else idx

        public.__name__ = name
        public.__qualname__ = name
        fn: StrategyFunction = public
        REGISTRY[name] = StrategyInfo(name, fn, core, needs, params)
        return fn

    return decorate


def _check_result(name: str, idx: Indices, util: Utilities, pool: Pool, want: int) -> None:
    """Enforce the output contract (a failure here is a bug in the strategy, not in the input)."""
    ok = (
        idx.ndim == 1
        and idx.shape == util.shape
        and idx.size == want
        and (idx.size == 0 or (idx.min() >= 0 and idx.max() < pool.n_samples))
        and np.unique(idx).size == idx.size
        and not pool.labeled[idx].any()
    )
    if not ok:  # pragma: no cover - defensive
        raise RuntimeError(f"internal error: strategy {name!r} broke the selection contract")


def top_n(utility: NDArray[np.floating], candidates: Indices, n: int) -> CoreResult:
    """The ``n`` candidates with the highest utility (ties: lower index first)."""
    u = np.asarray(utility, dtype=np.float64)
    if n < u.size // 4:
        part = np.argpartition(-u, n - 1)[:n] if n > 0 else np.zeros(0, np.int64)
        # include every tie of the n-th value so the stable order is exact
        kth = u[part].min() if part.size else np.inf
        part = np.flatnonzero(u >= kth)
        order = part[np.lexsort((part, -u[part]))][:n]
    else:
        order = np.argsort(-u, kind="stable")[:n]
    return candidates[order].astype(np.int64), u[order]


def fill_random(pool: Pool, picks: list[int], utils: list[float], n: int) -> CoreResult:
    """``picks`` (with their ``utils``) topped up to ``n`` with unlabelled samples not picked
    yet, drawn at random with utility 0: what a coverage strategy returns once nothing adds
    coverage."""
    if len(picks) < n:
        chosen = np.zeros(pool.n_samples, dtype=bool)
        chosen[picks] = True
        rest = np.flatnonzero(~pool.labeled & ~chosen)
        extra = pool.rng().permutation(rest)[: n - len(picks)]
        picks = [*picks, *(int(i) for i in extra)]
        utils = [*utils, *([0.0] * extra.size)]
    return np.asarray(picks, dtype=np.int64), np.asarray(utils, dtype=np.float64)
