"""Media: reading and decoding the images that tasks point at, with the safety rules.

The lowest floor that touches the outside world: it knows Label Studio's URL forms but no web
server. The ML backend, the data-lead tools and the simulator's loaders all read images here.

- :class:`ImageFetcher` under an :class:`ImagePolicy`: Label Studio uploads, local files, ``data:``
  URIs and allow-listed hosts (see :mod:`labelwheel.media.fetch`);
- :func:`decode_image`: a safe decode to RGB (see :mod:`labelwheel.media.decode`);
- :func:`read_file`: a local file, size-capped (folders of images);
- :class:`Proxies`: the HTTP proxies fetches go through (from the environment by default);
- :class:`ImageError`: every failure, with a short loggable ``reason``.
"""

from __future__ import annotations

from labelwheel.media.decode import decode_image, exif_transpose
from labelwheel.media.errors import ImageError
from labelwheel.media.fetch import ImageFetcher, ImagePolicy
from labelwheel.media.files import read_file
from labelwheel.media.proxies import Proxies

__all__ = [
    "ImageError",
    "ImageFetcher",
    "ImagePolicy",
    "Proxies",
    "decode_image",
    "exif_transpose",
    "read_file",
]
