"""Pools: a project's items, their embeddings and labels, where they come from, and their queue.

- :class:`Pool` (:mod:`labelwheel.pool.core`): one object for the backend, the lead tools and
  the simulator;
- :func:`load_project_pool` / :func:`load_folder_pool` (:mod:`labelwheel.pool.sources`);
- :func:`queue_order` (:mod:`labelwheel.pool.queue`): the labelling queue of a pool.
"""

from __future__ import annotations

from labelwheel.pool.core import Pool
from labelwheel.pool.queue import COLD_START_STRATEGY, QueueOrder, queue_order, queue_order_stacked
from labelwheel.pool.sources import (
    IMAGE_EXTENSIONS,
    default_cache_dir,
    embed_refs,
    get_project_or_fail,
    list_images,
    load_folder_pool,
    load_project_pool,
    project_reader,
    task_label_sets,
)

__all__ = [
    "COLD_START_STRATEGY",
    "IMAGE_EXTENSIONS",
    "Pool",
    "QueueOrder",
    "default_cache_dir",
    "embed_refs",
    "get_project_or_fail",
    "list_images",
    "load_folder_pool",
    "load_project_pool",
    "project_reader",
    "queue_order",
    "queue_order_stacked",
    "task_label_sets",
]
