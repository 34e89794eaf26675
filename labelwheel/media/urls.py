"""The one parser of an http(s) URL the media layer fetches.

:func:`parse_http_url` refuses what two parsers could read differently: backslashes, control
characters, whitespace or ``%`` in the authority, userinfo (``user@``), empty or odd ports,
non-ASCII host names; and it checks that ``urllib.parse`` and ``urllib3`` read the same scheme,
host and port as it does. The :class:`HttpURL` it returns is what the fetcher's policy checks
*and* what :func:`labelwheel.media.transport.http_get` sends: the socket is opened to
``host:port`` of that object and the request line carries its ``target``. :func:`join_url`
resolves a redirect's ``Location`` against it, through the same parser.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

import urllib3.util

from labelwheel.media.errors import ImageError

__all__ = ["HttpURL", "host_port", "join_url", "parse_http_url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"(?i)(https?)://")
_AUTHORITY = re.compile(r"(\[[^\]]*\]|[^:\[\]]*)(?::(\d{1,5}))?")
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = "/?%:@!$&'()*+,;=-._~"


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class HttpURL:
    """A checked http(s) URL: exactly what is connected to and sent."""

    scheme: str
    host: str  # lower case; an IPv6 address without brackets
    port: int  # the effective port
    path: str  # percent-encoded, starts with "/"
    query: str | None  # percent-encoded, without "?"; None when the URL has no "?"

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port)."""
        return (self.scheme, self.host, self.port)

    @property
    def netloc(self) -> str:
        """The Host header: host, bracketed if IPv6, with the port unless it is the default."""
        if self.port != _DEFAULT_PORTS[self.scheme]:
            return self.netloc_with_port
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def netloc_with_port(self) -> str:
        """host:port, the port always given (a CONNECT request's target)."""
        return host_port(self.host, self.port)

    @property
    def target(self) -> str:
        """The request target: path and query."""
        return self.path if self.query is None else f"{self.path}?{self.query}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.target}"


def _bad(detail: str) -> ImageError:
    return ImageError("unsupported URL", detail)


def _quote(part: str, safe: str) -> str:
    return urllib.parse.quote(_STRAY_PERCENT.sub("%25", part), safe=safe)


def _host_of(authority: str) -> tuple[str, int | None]:
    if "@" in authority:
        raise _bad("credentials (user@) in the URL")
    if "%" in authority or any(c.isspace() for c in authority):
        raise _bad("malformed host")
    m = _AUTHORITY.fullmatch(authority)
    if m is None:
        raise _bad("malformed host or port")
    raw_host, raw_port = m.group(1), m.group(2)
    port = int(raw_port) if raw_port is not None else None
    if port is not None and not 0 < port < 65536:
        raise _bad(f"port {port}")
    if raw_host.startswith("["):
        try:
            return ipaddress.IPv6Address(raw_host[1:-1]).compressed, port
        except ValueError:
            raise _bad("malformed IPv6 address") from None
    if not raw_host.isascii():
        raise _bad("non-ASCII host name (use its punycode form)")
    host = raw_host.lower()
    if not _HOST_NAME.fullmatch(host):
        raise _bad("malformed host")
    return host, port


def _same_host(other: str | None, host: str) -> bool:
    if other is None:
        return False
    other = other.lower().strip("[]")
    if ":" in other:
        try:
            other = ipaddress.IPv6Address(other).compressed
        except ValueError:
            return False
    return other == host


def _cross_check(text: str, scheme: str, host: str, port: int) -> None:
    """The URL's scheme, host and port as urllib.parse and urllib3 (requests) read them."""
    try:
        split = urllib.parse.urlsplit(text)
        split_port = split.port
        u3 = urllib3.util.parse_url(text)
    except ValueError:
        raise _bad("ambiguous URL") from None
    default = _DEFAULT_PORTS[scheme]
    if (
        split.scheme.lower() != scheme
        or not _same_host(split.hostname, host)
        or (split_port or default) != port
        or (u3.scheme or "").lower() != scheme
        or not _same_host(u3.host, host)
        or (u3.port or default) != port
    ):
        raise _bad("ambiguous host")


def parse_http_url(text: str) -> HttpURL:
    """Parse an absolute http(s) URL strictly; ImageError("unsupported URL", why) otherwise.

    The fragment is dropped; spaces and non-ASCII characters in the path and query are
    percent-encoded (as browsers and requests do).
    """
    if not isinstance(text, str):
        raise _bad("not a string")
    if "\\" in text:
        raise _bad("backslash in the URL")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise _bad("control character in the URL")
    m = _SCHEME.match(text)
    if m is None:
        raise ImageError("unsupported URL scheme", text.partition(":")[0][:20])
    scheme = m.group(1).lower()
    rest = text[m.end() :]
    end = len(rest)
    for sep in "/?#":
        pos = rest.find(sep)
        if pos != -1:
            end = min(end, pos)
    authority, remainder = rest[:end], rest[end:]
    if not authority:
        raise _bad("no host")
    host, explicit_port = _host_of(authority)
    port = explicit_port if explicit_port is not None else _DEFAULT_PORTS[scheme]
    remainder = remainder.partition("#")[0]
    path, qmark, query = remainder.partition("?")
    url = HttpURL(
        scheme=scheme,
        host=host,
        port=port,
        path=_quote(path or "/", _PATH_SAFE),
        query=_quote(query, _QUERY_SAFE) if qmark else None,
    )
    _cross_check(text, scheme, host, port)
    _cross_check(str(url), scheme, host, port)
    return url


def join_url(base: HttpURL, location: str) -> HttpURL:
    """A redirect's ``Location`` resolved against ``base``, parsed strictly."""
    location = location.strip()
    if not location:
        raise ImageError("bad redirect", "empty Location")
    if "\\" in location or any(ord(c) < 0x20 or ord(c) == 0x7F for c in location):
        raise ImageError("bad redirect", "malformed Location")
    try:
        return parse_http_url(urllib.parse.urljoin(str(base), location))
    except ImageError as exc:
        raise ImageError("bad redirect", exc.detail or exc.reason) from None
