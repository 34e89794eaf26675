"""HTTP proxies for image fetches, read from the environment the way requests and curl read it.

A team behind a corporate proxy sets ``HTTPS_PROXY`` (and often ``HTTP_PROXY``) and lists the
hosts reached directly in ``NO_PROXY``; Label Studio's SDK, boto3 and pip then all go through
it, and so must the media layer's own HTTP client (:mod:`labelwheel.media.transport`):

- ``http_proxy`` / ``HTTP_PROXY`` for ``http://`` images, ``https_proxy`` / ``HTTPS_PROXY`` for
  ``https://`` ones, ``all_proxy`` / ``ALL_PROXY`` for either when its own is unset (lower case
  first, as curl and Python's ``urllib`` do);
- the proxy itself is spoken to in plain HTTP (``http://[user:password@]host[:port]``, port 80
  when none is given, as requests does); ``https://`` images go through a ``CONNECT`` tunnel, so
  TLS still runs end to end with the image host. Credentials in the proxy URL are sent as Basic
  ``Proxy-Authorization``, and never printed;
- ``no_proxy`` / ``NO_PROXY``: comma-separated host names (a name covers its sub-domains; a
  leading dot is allowed), ``host:port``, IP addresses, CIDR blocks (``10.0.0.0/8``), or ``*``.

A proxy URL that cannot be used (another scheme, such as ``socks5://`` or ``https://``, or no
host) is refused when the fetcher is made, with an error that names the variable.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import urllib.parse
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

from labelwheel.media.urls import HttpURL, host_port

__all__ = ["LOOPBACK", "Proxies", "Proxy", "direct_to_loopback"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""Names of this machine that :func:`direct_to_loopback` keeps off any proxy."""

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


@dataclass(frozen=True)
class Proxy:
    """One HTTP proxy: where it listens, and the Basic credentials it is sent (if any)."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"http://{host_port(self.host, self.port)}"  # never the credentials

    def refusal(self, status: int, what: str) -> str:
        """Why a request through this proxy failed, for an error message."""
        hint = ""
        if status == 407:
            hint = (
                " (it wants credentials: give them in the proxy URL, "
                "http://user:password@host:port)"
                if self.authorization is None
                else " (it refused the credentials in the proxy URL)"
            )
        return f"proxy {self} answered {status} to {what}{hint}"

    @classmethod
    def parse(cls, text: str, name: str = "proxy") -> Proxy:
        """A proxy from its URL (``http://[user:password@]host[:port]``; the scheme may be left
        out). Raises ``ValueError`` naming ``name`` when the URL cannot be used."""
        raw = text.strip()
        if "://" not in raw:
            raw = "http://" + raw
        try:
            split = urllib.parse.urlsplit(raw)
            port = split.port
        except ValueError as exc:
            raise ValueError(f"{name}: {exc} in {_redacted(text)!r}") from None
        if split.scheme.lower() != "http":
            raise ValueError(
                f"{name}={_redacted(text)!r}: only http:// proxies are supported (an https:// "
                "image still goes through them over TLS, in a CONNECT tunnel)"
            )
        if not split.hostname:
            raise ValueError(f"{name}={_redacted(text)!r} has no host")
        authorization = None
        if split.username is not None:
            user = urllib.parse.unquote(split.username)
            password = urllib.parse.unquote(split.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            authorization = f"Basic {token}"
        return cls(split.hostname.lower(), port or 80, authorization)


def _redacted(text: str) -> str:
    """A proxy URL with its password replaced, for error messages."""
    scheme, sep, rest = text.strip().rpartition("://")
    userinfo, at, hostport = rest.rpartition("@")
    if not at:
        return text.strip()
    user = userinfo.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{hostport}"


@dataclass(frozen=True)
class _Bypass:
    """One ``NO_PROXY`` entry."""

    name: str | None = None  # a host name (matches its sub-domains too) or an IP address
    port: int | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    def matches(self, host: str, port: int) -> bool:
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        if self.port is not None and self.port != port:
            return False
        return host == self.name or host.endswith("." + str(self.name))


def _bypass_entry(entry: str) -> _Bypass | None:
    entry = entry.strip().lower()
    if not entry:
        return None
    if "/" in entry:
        try:
            return _Bypass(network=ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            return None  # not a network: curl and requests ignore it too
    entry = entry.lstrip(".")
    if entry.startswith("["):  # [IPv6] or [IPv6]:port
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        host, port = entry, ""  # a name, an IPv4 address or a bare IPv6 address
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    return _Bypass(name=host, port=int(port) if port.isdigit() else None)


class Proxies:
    """Which proxy, if any, each URL goes through."""

    def __init__(self, by_scheme: Mapping[str, Proxy] | None = None, no_proxy: str = "") -> None:
        self.by_scheme = dict(by_scheme or {})
        unknown = set(self.by_scheme) - {"http", "https"}
        if unknown:
            raise ValueError(f"proxies are chosen by URL scheme (http, https), not {unknown}")
        self.no_proxy = no_proxy
        entries = _entries(no_proxy)
        self._everywhere_direct = "*" in entries
        self._bypass = [b for b in map(_bypass_entry, entries) if b is not None]

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Proxies:
        """The proxies the environment sets (``os.environ`` unless given)."""
        env = os.environ if environ is None else environ
        fallback = _variable(env, "all_proxy")
        by_scheme = {}
        for scheme in ("http", "https"):
            found = _variable(env, f"{scheme}_proxy") or fallback
            if found is not None:
                by_scheme[scheme] = Proxy.parse(found[1], found[0])
        no_proxy = _variable(env, "no_proxy")
        return cls(by_scheme, no_proxy[1] if no_proxy else "")

    def __bool__(self) -> bool:
        return bool(self.by_scheme)

    def __repr__(self) -> str:
        shown = ", ".join(f"{s}={p}" for s, p in sorted(self.by_scheme.items()))
        return f"Proxies({shown or 'none'}; no_proxy={self.no_proxy!r})"

    def for_url(self, url: HttpURL) -> Proxy | None:
        """The proxy ``url`` goes through, or None when it is reached directly."""
        proxy = self.by_scheme.get(url.scheme)
        if proxy is None or self._everywhere_direct:
            return None
        if any(b.matches(url.host, url.port) for b in self._bypass):
            return None
        return proxy


def _variable(environ: Mapping[str, str], var: str) -> tuple[str, str] | None:
    """(name, value) of a proxy variable set in ``environ``, lower case first (as curl reads
    it), or None when neither spelling is set to something."""
    for name in (var.lower(), var.upper()):
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def _entries(no_proxy: str) -> list[str]:
    """A ``NO_PROXY`` value's entries (separated by commas or spaces)."""
    return [e for e in no_proxy.replace(" ", ",").split(",") if e]


def direct_to_loopback(environ: MutableMapping[str, str]) -> None:
    """Add this machine's loopback names to ``NO_PROXY`` (both spellings) when ``environ`` sets
    a proxy, for processes that talk to each other on 127.0.0.1 (``labelwheel up``'s Label Studio
    and backend): requests, curl and Label Studio itself would otherwise send those calls to a
    company proxy, which cannot reach this machine's loopback. Nothing changes without a proxy.
    """
    if not any(_variable(environ, v) for v in _PROXY_VARIABLES):
        return
    current = _variable(environ, "no_proxy")
    entries = _entries(current[1] if current else "")
    missing = [name for name in LOOPBACK if name not in entries]
    merged = ",".join(entries + missing)
    environ["no_proxy"] = environ["NO_PROXY"] = merged
