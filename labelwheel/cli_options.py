"""Command-line options that several commands share, so each is spelled and documented once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["label_studio_options"]

F = TypeVar("F", bound=Callable[..., Any])


def label_studio_options(func: F) -> F:
    """``--url`` (``LABEL_STUDIO_URL``) and ``--api-key`` (``LABEL_STUDIO_API_KEY``): where Label
    Studio is and the key to use (legacy token or personal access token)."""
    func = click.option(
        "--api-key",
        envvar="LABEL_STUDIO_API_KEY",
        show_envvar=True,
        help="Label Studio legacy API token or personal access token.",
    )(func)
    func = click.option(
        "--url",
        envvar="LABEL_STUDIO_URL",
        show_envvar=True,
        help="Label Studio URL, e.g. http://127.0.0.1:8080.",
    )(func)
    return func
