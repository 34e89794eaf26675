"""Helpers shared by the data-lead tests (importable: pytest puts this folder on sys.path)."""

from __future__ import annotations

from typing import Any


def choice_result(label: str) -> list[dict[str, Any]]:
    """A Choices annotation result for the image classification config."""
    return [
        {
            "from_name": "choice",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]
