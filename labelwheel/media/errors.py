"""The one error of the media layer."""

from __future__ import annotations


class ImageError(Exception):
    """An image could not be fetched or decoded; ``reason`` is short and safe to log."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason if not detail else f"{reason}: {detail}")
