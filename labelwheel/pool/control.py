"""A random control slice of the labelling queue: the honest measure of a model version.

Tasks the selector picks are, by design, the ones the model finds hard: the accuracy of its
pre-labels on them says little about its accuracy on the data as a whole. A small share of the
queue is therefore left to chance: :func:`interleave_control` draws about ``fraction`` of the
pool uniformly at random and spreads those tasks evenly through the selector's order, so that
about ``fraction`` of whatever head of the queue annotators are served is a uniform random sample
of the pool. What the annotators say about the pre-labels of these *control* tasks is an
unbiased estimate of the version's real accuracy (:mod:`labelwheel.lead.honest`).

The draw is a deterministic function of ``(seed, key)``: a task is a control task when a hash of
the seed (e.g. project and version) and its key (the task id) falls below ``fraction``. The same
task stays a control task for the same version when the pool changes (tasks added or labelled),
and every version draws a new slice. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ControlSlice", "control_seed", "control_share", "interleave_control"]


@dataclass(frozen=True)
class ControlSlice:
    """A queue with its control slice interleaved."""

    order: list[int]
    """Positions of the pool's rows in queue order (every row exactly once)."""
    control: list[int]
    """The rows drawn at random, in the order they appear in :attr:`order`."""


def control_seed(project_id: int, version: str) -> str:
    """The seed of a project's control slice under one model version."""
    return f"{int(project_id)}:{version}"


def control_share(seed: str | int, key: int | str) -> float:
    """A number in ``[0, 1)``, uniform over keys and seeds and fixed for each pair."""
    digest = hashlib.blake2b(f"{seed}|{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def interleave_control(
    order: Sequence[int],
    fraction: float,
    *,
    seed: str | int,
    keys: Sequence[int | str] | None = None,
) -> ControlSlice:
    """Interleave a random control slice into a queue.

    ``order``: the selector's queue, positions ``0..n-1`` of the pool, each once. ``keys[i]``:
    the stable identity of position ``i`` (the task id; default: ``i``). A row is a control row
    when ``control_share(seed, keys[i]) < fraction``; the control rows, in random order (by
    share), take the evenly spread queue positions ``floor(offset + j / fraction)``, where the
    offset in ``[0, 1 / fraction)`` is drawn from the seed too (with ``fraction`` 0.05: every
    20th position from a random start), while the selected rows keep their relative order in
    the others. The random start matters: the queue is ranked again after every batch, so a
    batch of 10 with a control slot fixed at position 19 would never serve one; with a random
    start each served position is a control one with probability ``fraction``.
    ``fraction`` 0 returns the queue unchanged.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the control fraction must be in [0, 1), got {fraction}")
    n = len(order)
    if keys is not None and len(keys) != n:
        raise ValueError("keys must have one entry per pool row")
    if sorted(order) != list(range(n)):
        raise ValueError("order must list every pool position exactly once")
    if fraction == 0.0 or n == 0:
        return ControlSlice(list(order), [])
    key_of = (lambda i: keys[i]) if keys is not None else (lambda i: i)
    shares = {i: control_share(seed, key_of(i)) for i in range(n)}
    control = sorted((i for i in range(n) if shares[i] < fraction), key=lambda i: (shares[i], i))
    if not control:
        return ControlSlice(list(order), [])
    chosen = set(control)
    selected = [p for p in order if p not in chosen]
    slots: set[int] = set()
    step = 1.0 / fraction
    offset = control_share(seed, "offset") * step
    for j in range(len(control)):
        slot = min(n - 1, math.floor(offset + j * step))
        while slot in slots:  # only near the end of a queue with more controls than expected
            slot = next(s for s in range(n - 1, -1, -1) if s not in slots)
        slots.add(slot)
    out: list[int] = []
    ci = si = 0
    for pos in range(n):
        if pos in slots:
            out.append(control[ci])
            ci += 1
        else:
            out.append(selected[si])
            si += 1
    return ControlSlice(out, control)
