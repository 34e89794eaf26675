"""Which certificates image fetches over HTTPS trust: the ones requests trusts.

A Label Studio or a storage behind a company's own certificate authority is trusted by setting
``REQUESTS_CA_BUNDLE`` (or ``CURL_CA_BUNDLE``) to a PEM file of its certificates, or to a folder
prepared with ``openssl rehash``. The Label Studio API client (requests) reads the same variables,
so both see the same servers as valid. Without them, certifi's bundle is used (the system's if
certifi is missing). boto3 has its own, ``AWS_CA_BUNDLE``.

Contexts are made once per bundle and shared (an ``ssl.SSLContext`` is safe across threads);
the variables are read for each new connection, so a change needs no restart of the fetcher.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Mapping

__all__ = ["BUNDLE_VARIABLES", "check_trust", "tls_context", "trust_bundle"]

BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
"""The variables naming a certificate bundle, first set wins (as in requests)."""

_CONTEXTS: dict[str | None, ssl.SSLContext] = {}
_LOCK = threading.Lock()


def trust_bundle(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(variable, path) of the certificate bundle the environment names, or None."""
    env = os.environ if environ is None else environ
    for name in BUNDLE_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _make(path: str | None) -> ssl.SSLContext:
    if path is not None:
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


def tls_context(environ: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """The client context for an HTTPS image fetch. Raises ``ValueError`` naming the variable
    when its bundle cannot be read."""
    named = trust_bundle(environ)
    path = named[1] if named else None
    context = _CONTEXTS.get(path)
    if context is not None:
        return context
    with _LOCK:
        context = _CONTEXTS.get(path)
        if context is None:
            try:
                context = _make(path)
            except (OSError, ssl.SSLError) as exc:
                assert named is not None  # certifi's and the system's bundles load
                raise ValueError(
                    f"{named[0]}={path!r}: cannot read certificates from it ({exc}); set it to "
                    "a PEM file of the certificate authorities to trust, or unset it"
                ) from None
            _CONTEXTS[path] = context
    return context


def check_trust(environ: Mapping[str, str] | None = None) -> None:
    """Raise ``ValueError`` naming the variable if the environment's certificate bundle cannot
    be read (for a service to refuse to start rather than fail every HTTPS fetch)."""
    tls_context(environ)
