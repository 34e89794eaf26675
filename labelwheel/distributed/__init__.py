"""Embedding pools too big for one process: ``labelwheel embed`` into an embedding store,
in-process or as a Ray Data job on a cluster (:mod:`labelwheel.distributed.job`), from a folder,
an S3-compatible prefix or a Label Studio project (:mod:`labelwheel.distributed.sources`).

Importing this package imports neither torch nor ray.
"""

from __future__ import annotations

from labelwheel.distributed.job import BatchEmbedder, EmbedResult, run_embed
from labelwheel.distributed.sources import EmbedSource

__all__ = ["BatchEmbedder", "EmbedResult", "EmbedSource", "run_embed"]
