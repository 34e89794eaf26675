"""The fetch path cannot be turned against its user: a fake Label Studio on 127.0.0.1 and a
canary host on 127.0.0.2 that records every request; no URL trick or redirect makes Label
Studio's token reach the canary, and the token goes only to Label Studio's media paths."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator

import pytest
from media_servers import TOKEN, Recorder, png_bytes

from labelwheel.media import ImageError, ImageFetcher, ImagePolicy
from labelwheel.media.urls import parse_http_url

PNG = png_bytes()
FILEURI = base64.urlsafe_b64encode(b"s3://bucket/cats/1.png").decode()


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder]]:
    """Label Studio on 127.0.0.1 and a canary on 127.0.0.2 with the same port number, so a URL
    read with the wrong host (same port) would land on the canary. The port is chosen where
    both addresses are free: another process listening on that port number on every address
    would make the canary's bind fail (seen once in a full run)."""
    for _ in range(20):
        ls = Recorder("127.0.0.1")
        try:
            canary = Recorder("127.0.0.2", ls.port)
        except OSError:
            ls.close()
            continue
        yield ls, canary
        canary.close()
        ls.close()
        return
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2 in 20 tries")


@pytest.fixture
def ls(servers: tuple[Recorder, Recorder]) -> Recorder:
    return servers[0]


@pytest.fixture
def canary(servers: tuple[Recorder, Recorder]) -> Recorder:
    return servers[1]


@pytest.fixture
def canary80() -> Iterator[Recorder | None]:
    """127.0.0.2:80, where ``http://127.0.0.2\\@...`` (no port before the backslash) would
    connect; None where port 80 cannot be bound."""
    try:
        server = Recorder("127.0.0.2", 80)
    except OSError:
        yield None
        return
    yield server
    server.close()


def make(ls: Recorder, allowed: frozenset[str] = frozenset(), base: str = "") -> ImageFetcher:
    policy = ImagePolicy(ls.url + base, None, allowed_hosts=allowed, timeout=5.0)
    return ImageFetcher(policy, lambda: {"Authorization": TOKEN})


# -- one parser: what is checked is what is sent ---------------------------------------------------


def url_tricks(ls: Recorder, canary: Recorder) -> list[str]:
    p, c = ls.port, canary.port
    media = "/data/upload/1/x.png"
    return [
        f"http://127.0.0.2\\@127.0.0.1:{p}{media}",  # requests/urllib3 read 127.0.0.2:80
        f"http://127.0.0.2:{c}\\@127.0.0.1:{p}{media}",
        f"http://127.0.0.2:{c}\\\\@127.0.0.1:{p}{media}",
        f"http://127.0.0.1:{p}\\@127.0.0.2:{c}{media}",
        f"http://127.0.0.1:{p}@127.0.0.2:{c}{media}",  # userinfo: the host is 127.0.0.2
        f"http://user:pass@127.0.0.1:{p}{media}",
        f"http://127.0.0.2:{c}#@127.0.0.1:{p}{media}",
        f"http://127.0.0.2:{c}?@127.0.0.1:{p}{media}",
        f"http://127.0.0.2:{c}/\\@127.0.0.1:{p}{media}",
        f"http://127.0.0.1:{p}\t{media}",
        f"http://127.0.0.1\t:{p}{media}",
        f"http://127.0.0.1 :{p}{media}",
        f"http://127.0.0.1:{p}{media}\r\nHost: 127.0.0.2:{c}",
        f"http://127.0.0.1:{p}{media}\x00",
        f"http://127.0.0.1%2e:{p}{media}",
        f"http://127%2e0%2e0%2e2:{c}{media}",
        f"http://127\u30020\u30020\u30022:{c}{media}",  # ideographic full stops
        f"http://127.0.0.1:{p}:{c}{media}",
        f"http://127.0.0.1:+{p}{media}",
        f"http://127.0.0.1:0{p}0{media}",
        f"http://[::ffff:127.0.0.2]:{c}{media}",
        f"http://127.0.0.2:{c}{media}",
        f"HTTP://127.0.0.2:{c}{media}",
        f"http:/127.0.0.2:{c}{media}",
        f"http:127.0.0.2:{c}{media}",
        f"//127.0.0.2:{c}{media}",
        f"\\\\127.0.0.2:{c}{media}",
        f"/\\127.0.0.2:{c}{media}",
    ]


def test_no_url_trick_reaches_the_canary(
    ls: Recorder, canary: Recorder, canary80: Recorder | None
) -> None:
    ls.routes["/data/upload/1/x.png"] = (200, {}, PNG)
    fetcher = make(ls)
    for ref in url_tricks(ls, canary):
        try:
            data = fetcher.fetch_bytes(ref)
        except ImageError:
            continue
        # the only acceptable success is the real image from Label Studio itself
        assert data == PNG, ref
    assert canary.requests == []
    if canary80 is not None:
        assert canary80.requests == []
    # whatever reached Label Studio went to its media path, nothing else
    assert set(ls.paths()) <= {"/data/upload/1/x.png"}


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("http://a\\@b/x", "backslash"),
        ("http://u@b/x", "credentials"),
        ("http://b:1:2/x", "malformed"),
        ("http://b:99999/x", "port"),
        ("http://b:/x", "malformed"),
        ("http:///x", "no host"),
        ("http://b\u3002c/x", "non-ASCII"),
        ("http://b%2ec/x", "malformed host"),
        ("http://b\r\n/x", "control"),
        ("http://[::1%25lo]/x", "malformed"),
    ],
)
def test_parser_refusals_say_why(ref: str, why: str) -> None:
    with pytest.raises(ImageError) as e:
        parse_http_url(ref)
    assert e.value.reason == "unsupported URL"
    assert why in (e.value.detail or "")


def test_the_checked_url_is_exactly_what_is_sent(ls: Recorder) -> None:
    sent = "/data/upload/1/a%20b%25zz/%C3%BC.png"
    ls.routes[sent] = (200, {}, PNG)
    fetcher = make(ls)
    assert fetcher.fetch_bytes(f"{ls.url}/data/upload/1/a b%zz/ü.png#frag") == PNG
    method, target, headers = ls.requests[-1]
    assert (method, target) == ("GET", sent)
    assert headers["Host"] == f"127.0.0.1:{ls.port}"
    assert headers["Authorization"] == TOKEN
    url = parse_http_url(f"HTTP://LocalHost:{ls.port}/p?q=1 2#f")
    assert (url.scheme, url.host, url.port, url.target) == (
        "http",
        "localhost",
        ls.port,
        "/p?q=1%202",
    )
    assert parse_http_url("https://[::1]/x").netloc == "[::1]"
    assert parse_http_url("http://h:80/x").netloc == "h"


# -- credentials only on Label Studio's media paths ------------------------------------------------

MEDIA_REFS = [
    "/data/upload/3/ab12-cat.png",
    "/storage-data/uploaded/?filepath=upload/3/cat.png",
    f"/tasks/12/resolve/?fileuri={FILEURI}",
    f"/tasks/12/presign/?fileuri={FILEURI}",
    f"/projects/3/resolve/?fileuri={FILEURI}",
    "/projects/3/file-proxy/?url=https%3A%2F%2Fexample.com%2Fa.png",
]

NOT_MEDIA_REFS = [
    "/api/projects",
    "/api/projects/1/export?exportType=JSON",
    "/user/account",
    "/",
    "/data/upload/",
    "/data/upload/../../api/projects",
    "/data/upload/%2e%2e/%2e%2e/api/projects",
    "/data/upload/..%2f..%2fapi%2fprojects",
    "/data/upload/x/./../../../api/projects",
    "/tasks/12/resolve/",
    "/tasks/12/resolve/?other=1",
    "/tasks/x/resolve/?fileuri=abc",
    "/tasks/12/annotations/?fileuri=abc",
    "/storage-data/uploaded/",
    "/data/uploadx/1.png",
    "/static/x.png",
]


def test_media_paths_get_the_token(ls: Recorder) -> None:
    for ref in MEDIA_REFS:
        ls.routes[ref.partition("?")[0]] = (200, {}, PNG)
    fetcher = make(ls)
    for ref in MEDIA_REFS:
        assert fetcher.fetch_bytes(ref) == PNG, ref
        assert fetcher.fetch_bytes(ls.url + ref) == PNG, ref
    assert len(ls.authorized()) == 2 * len(MEDIA_REFS)


@pytest.mark.parametrize("ref", NOT_MEDIA_REFS)
def test_other_paths_on_label_studio_are_refused(ls: Recorder, ref: str) -> None:
    ls.routes[ref.partition("?")[0]] = (200, {}, PNG)
    fetcher = make(ls)
    for form in (ref, ls.url + ref):
        with pytest.raises(ImageError) as e:
            fetcher.fetch_bytes(form)
        assert e.value.reason in ("not a Label Studio media path", "unsupported URL"), form
    assert ls.requests == []


def test_base_path_of_label_studio(ls: Recorder) -> None:
    ls.routes["/ls/data/upload/1/a.png"] = (200, {}, PNG)
    ls.routes["/data/upload/1/a.png"] = (200, {}, PNG)
    fetcher = make(ls, base="/ls")
    assert fetcher.fetch_bytes("/data/upload/1/a.png") == PNG
    assert fetcher.fetch_bytes(f"{ls.url}/ls/data/upload/1/a.png") == PNG
    with pytest.raises(ImageError, match="not a Label Studio media path"):
        fetcher.fetch_bytes(f"{ls.url}/data/upload/1/a.png")  # outside Label Studio's path
    assert ls.paths() == ["/ls/data/upload/1/a.png"] * 2


def test_allowed_host_never_gets_the_token(ls: Recorder, canary: Recorder) -> None:
    canary.routes["/img/a.png"] = (200, {}, PNG)
    fetcher = make(ls, allowed=frozenset({"127.0.0.2"}))
    assert fetcher.fetch_bytes(f"{canary.url}/img/a.png") == PNG
    assert canary.paths() == ["/img/a.png"] and canary.authorized() == []


# -- redirects -------------------------------------------------------------------------------------


def test_resolve_redirect_is_followed_without_the_token(ls: Recorder, canary: Recorder) -> None:
    storage = canary  # not on the allowlist: Label Studio's presigned URL may be on any host
    storage.routes["/bucket/cats/1.png"] = (200, {}, PNG)
    presigned = f"{storage.url}/bucket/cats/1.png?X-Amz-Signature=abc&X-Amz-Expires=60"
    for kind in ("resolve", "presign"):
        ls.routes[f"/tasks/12/{kind}/"] = (303, {"Location": presigned}, b"")
        assert make(ls).fetch_bytes(f"/tasks/12/{kind}/?fileuri={FILEURI}") == PNG
    assert storage.paths() == ["/bucket/cats/1.png?X-Amz-Signature=abc&X-Amz-Expires=60"] * 2
    assert storage.authorized() == []
    assert len(ls.authorized()) == 2


def test_storage_redirects_can_be_limited_to_allowed_hosts(ls: Recorder, canary: Recorder) -> None:
    canary.routes["/bucket/1.png"] = (200, {}, PNG)
    ls.routes["/tasks/12/resolve/"] = (303, {"Location": f"{canary.url}/bucket/1.png"}, b"")
    ref = f"/tasks/12/resolve/?fileuri={FILEURI}"

    def closed(allowed: frozenset[str]) -> ImageFetcher:
        policy = ImagePolicy(ls.url, None, allowed_hosts=allowed, storage_redirects=False)
        return ImageFetcher(policy, lambda: {"Authorization": TOKEN})

    with pytest.raises(ImageError) as e:
        closed(frozenset()).fetch_bytes(ref)
    assert e.value.reason == "redirect to a host not allowed"
    assert "configured Label Studio URL" in (e.value.detail or "")
    assert canary.requests == []
    assert closed(frozenset({"127.0.0.2"})).fetch_bytes(ref) == PNG
    assert canary.authorized() == []


def test_other_label_studio_redirects_go_only_to_allowed_hosts(
    ls: Recorder, canary: Recorder
) -> None:
    canary.routes["/x.png"] = (200, {}, PNG)
    ls.routes["/data/upload/1/a.png"] = (302, {"Location": f"{canary.url}/x.png"}, b"")
    with pytest.raises(ImageError) as e:
        make(ls).fetch_bytes("/data/upload/1/a.png")
    assert e.value.reason == "redirect to a host not allowed"
    assert canary.requests == []
    # allowed: followed, without the token
    assert make(ls, allowed=frozenset({"127.0.0.2"})).fetch_bytes("/data/upload/1/a.png") == PNG
    assert canary.paths() == ["/x.png"] and canary.authorized() == []


def test_redirect_to_a_non_media_path_of_label_studio_is_refused(ls: Recorder) -> None:
    ls.routes["/data/upload/1/a.png"] = (302, {"Location": "/api/projects"}, b"")
    ls.routes["/api/projects"] = (200, {}, PNG)
    with pytest.raises(ImageError, match="redirect not to media"):
        make(ls).fetch_bytes("/data/upload/1/a.png")
    assert ls.paths() == ["/data/upload/1/a.png"]


def test_no_token_once_the_chain_left_label_studio(ls: Recorder, canary: Recorder) -> None:
    ls.routes["/data/upload/1/a.png"] = (200, {}, PNG)
    back = f"{ls.url}/data/upload/1/a.png"
    # an allowed foreign host redirects back to Label Studio's media path
    canary.routes["/back"] = (302, {"Location": back}, b"")
    with pytest.raises(ImageError) as e:
        make(ls, allowed=frozenset({"127.0.0.2"})).fetch_bytes(f"{canary.url}/back")
    assert e.value.reason == "redirect to a host not allowed"
    # Label Studio -> presigned storage URL -> back to Label Studio
    ls.routes["/tasks/12/resolve/"] = (303, {"Location": f"{canary.url}/back"}, b"")
    with pytest.raises(ImageError) as e:
        make(ls).fetch_bytes(f"/tasks/12/resolve/?fileuri={FILEURI}")
    assert e.value.reason == "redirect to a host not allowed"
    assert ls.paths() == [f"/tasks/12/resolve/?fileuri={FILEURI}"]  # never fetched back
    assert canary.authorized() == []


def test_only_the_hop_after_the_resolver_is_open(ls: Recorder, canary: Recorder) -> None:
    third = Recorder("127.0.0.3")
    try:
        third.routes["/y.png"] = (200, {}, PNG)
        canary.routes["/hop"] = (302, {"Location": f"{third.url}/y.png"}, b"")
        ls.routes["/tasks/12/resolve/"] = (303, {"Location": f"{canary.url}/hop"}, b"")
        with pytest.raises(ImageError, match="redirect to a host not allowed"):
            make(ls).fetch_bytes(f"/tasks/12/resolve/?fileuri={FILEURI}")
        assert third.requests == []
        assert canary.authorized() == []
    finally:
        third.close()


def test_redirect_location_tricks(ls: Recorder, canary: Recorder) -> None:
    tricks = [
        f"http://127.0.0.2:{canary.port}\\@127.0.0.1:{ls.port}/data/upload/2.png",
        f"http://127.0.0.1:{ls.port}@127.0.0.2:{canary.port}/data/upload/2.png",
        f"//127.0.0.2:{canary.port}/data/upload/2.png",
        "/\\127.0.0.2/data/upload/2.png",
        f"http://127.0.0.2:{canary.port}/data/upload/2.png",
        "",
    ]
    ls.routes["/data/upload/2.png"] = (200, {}, PNG)
    fetcher = make(ls)
    for location in tricks:
        ls.routes["/data/upload/1.png"] = (302, {"Location": location}, b"")
        with pytest.raises(ImageError) as e:
            fetcher.fetch_bytes("/data/upload/1.png")
        assert e.value.reason in ("bad redirect", "redirect to a host not allowed"), location
    assert canary.requests == []
    assert "/data/upload/2.png" not in ls.paths()


def test_at_most_three_redirects(ls: Recorder) -> None:
    ls.routes["/data/upload/4.png"] = (200, {}, PNG)
    for i in range(4):
        ls.routes[f"/data/upload/{i}.png"] = (302, {"Location": f"/data/upload/{i + 1}.png"}, b"")
    fetcher = make(ls)
    assert fetcher.fetch_bytes("/data/upload/1.png") == PNG  # 3 redirects
    with pytest.raises(ImageError, match="too many redirects"):
        fetcher.fetch_bytes("/data/upload/0.png")  # 4


def test_unreachable_and_refused_ports() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fetcher = ImageFetcher(ImagePolicy(f"http://127.0.0.1:{port}", None), None)
    with pytest.raises(ImageError, match="unreachable"):
        fetcher.fetch_bytes("/data/upload/1/a.png")
    bad = ImageFetcher(ImagePolicy("http://a\\@b", None), None)
    with pytest.raises(ImageError, match="Label Studio URL is not usable"):
        bad.fetch_bytes("/data/upload/1/a.png")
