"""Command-line options that several commands share, so each is spelled and documented once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["backbone_options", "basic_auth_options", "label_studio_options"]

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


def backbone_options(func: F) -> F:
    """``--backbone`` (``LABELWHEEL_BACKBONE``) and ``--image-size`` (``LABELWHEEL_IMAGE_SIZE``):
    what embeds the images; the same defaults as the backend's, so vectors are shared."""
    func = click.option(
        "--image-size",
        envvar="LABELWHEEL_IMAGE_SIZE",
        show_envvar=True,
        type=click.IntRange(16, 1024),
        default=224,
        show_default=True,
        help="Backbone input size in pixels.",
    )(func)
    func = click.option(
        "--backbone",
        envvar="LABELWHEEL_BACKBONE",
        show_envvar=True,
        default="efficientnet-lite0",
        show_default=True,
        help="Backbone that embeds the images (same as the backend's).",
    )(func)
    return func


def basic_auth_options(
    user_help: str = "Basic-auth user the backend was started with.",
) -> Callable[[F], F]:
    """``--basic-auth-user`` / ``--basic-auth-pass`` (``BASIC_AUTH_USER`` / ``BASIC_AUTH_PASS``):
    the credentials the backend was started with."""

    def decorate(func: F) -> F:
        func = click.option(
            "--basic-auth-pass",
            envvar="BASIC_AUTH_PASS",
            show_envvar=True,
            default=None,
            help="Its password (prefer the environment variable to the flag).",
        )(func)
        func = click.option(
            "--basic-auth-user",
            envvar="BASIC_AUTH_USER",
            show_envvar=True,
            default=None,
            help=user_help,
        )(func)
        return func

    return decorate
