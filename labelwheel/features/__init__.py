"""Features: the pretrained backbone, the embedding cache and the one path from image to vector.

- :func:`load_backbone` / :class:`Backbone` (:mod:`labelwheel.features.backbone`): the one
  backbone loader, whose forward pass runs where :mod:`labelwheel.features.runtime` puts it
  (ONNX Runtime on a CPU, exported once per machine; torch on a GPU, or as the logged fallback);
- :class:`EmbeddingCache` / :func:`content_hash` (:mod:`labelwheel.features.cache`): the one
  embedding cache, by image content;
- :class:`Embedder` (:mod:`labelwheel.features.embed`): references in, vectors out, with the
  media layer's safety rules and bounded memory.

Importing this package does not import torch (the backbone is loaded on first use).
"""

from __future__ import annotations

from labelwheel.features.backbone import (
    DEFAULT_BACKBONE,
    DEFAULT_IMAGE_SIZE,
    Backbone,
    available_backbones,
    load_backbone,
)
from labelwheel.features.cache import EmbeddingCache, content_hash
from labelwheel.features.embed import Embedded, Embedder, local_read_threads, short_ref

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_IMAGE_SIZE",
    "Backbone",
    "Embedded",
    "Embedder",
    "EmbeddingCache",
    "available_backbones",
    "content_hash",
    "load_backbone",
    "local_read_threads",
    "short_ref",
]
