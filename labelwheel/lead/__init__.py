"""Data-lead tools: what to label next, how many labels a target needs, where the holes are.

The computations are pure functions over a :class:`~labelwheel.pool.Pool` (embeddings plus the
labels that exist so far), so the command line (:mod:`labelwheel.lead.cli`) and the dashboard
(:mod:`labelwheel.ml_backend.dashboard`) show the same numbers.
"""

from __future__ import annotations

from labelwheel.pool import Pool

__all__ = ["Pool"]
