"""Image fetches over HTTP and HTTPS: kept-alive connections vs a new connection per image.

The fetcher (:class:`labelwheel.media.ImageFetcher`) reads images from Label Studio and from
cloud storage's presigned URLs over HTTP(S). This measures what kept-alive connections
(:mod:`labelwheel.media.keepalive`) change, on the same images in the same run:

- **images/s** of 8 fetch threads (the Embedder's fetch threads; at most 4 at once per host, the
  policy's default ``max_per_host``), and
- **client CPU ms per image** (this process only: the servers run in a child process), which on
  a small machine is taken from decoding and inference,

with and without keep-alive (a fetcher whose pool is closed opens a connection per image), for
plain HTTP and HTTPS (TLS 1.3, a self-signed certificate made with ``openssl``), at simulated
round-trip times. The child process runs an HTTP/1.1 origin server and, per round-trip time, a
TCP proxy in front of it that delays every chunk by half the round trip each way, and a new
connection's first bytes by one more round trip (the TCP handshake, which a user-space proxy
cannot delay on loopback). No ``tc netem`` here: the kernel lacks it.

One more row: the fetcher talking directly (no proxy, no added delay) to a server without
``TCP_NODELAY`` (Python's ``http.server``; Django's development server, which a local Label Studio
runs, writes the same way), where kept connections need the fetcher's quick acknowledgements.

Images: natural-photo JPEG crops (~50 KB, as ``embed_throughput.py`` makes them). Rounds
alternate which mode goes first; the median round is reported with the best.

    .venv/bin/python benchmarks/fetch_keepalive.py [--n 160 --rounds 3 --rtt-ms 0,2,20]

Writes ``benchmarks/results/fetch_keepalive.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
for _path in (ROOT, Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


NAGLE = "http, server without TCP_NODELAY, no proxy"

# -- the child process: origin servers and delaying proxies ---------------------------------------


def _origin(images: Path, tls: ssl.SSLContext | None, nodelay: bool = True) -> int:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keeps connections open unless the client closes them

        def log_message(self, *args: object) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            if nodelay:
                # as production servers do (nginx's tcp_nodelay): without it, Nagle's algorithm
                # holds the body until the headers are acknowledged, which a receiver delays on
                # a kept connection (the proxy does; the fetcher asks for quick ACKs)
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            path = images / Path(self.path.partition("?")[0]).name
            body = path.read_bytes() if path.is_file() else b"not found"
            self.send_response(200 if path.is_file() else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return int(httpd.server_address[1])


class _Delayed:
    """Sends chunks to ``dst`` each at its due time, in order (one direction of a proxy)."""

    def __init__(self, dst: socket.socket) -> None:
        self.dst = dst
        self.items: queue.Queue[tuple[float, bytes]] = queue.Queue()
        threading.Thread(target=self._run, daemon=True).start()

    def send(self, due: float, data: bytes) -> None:
        self.items.put((due, data))

    def _run(self) -> None:
        while True:
            due, data = self.items.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                self.dst.sendall(data)
            except OSError:
                return


def _pump(src: socket.socket, out: _Delayed, one_way: float, first_extra: float) -> None:
    extra = first_extra
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        out.send(time.monotonic() + one_way + extra, data)
        extra = 0.0
        if not data:
            return


def _proxy(upstream: int, rtt: float) -> int:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)

    def accept() -> None:
        while True:
            client, _ = listener.accept()
            server = socket.create_connection(("127.0.0.1", upstream))
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            to_server, to_client = _Delayed(server), _Delayed(client)
            # a new connection's first bytes wait one more round trip: the TCP handshake
            threading.Thread(
                target=_pump, args=(client, to_server, rtt / 2, rtt), daemon=True
            ).start()
            threading.Thread(
                target=_pump, args=(server, to_client, rtt / 2, 0.0), daemon=True
            ).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(listener.getsockname()[1])


def serve(images: Path, cert: Path, key: Path, rtts: list[float]) -> None:
    """Child process: print {"http": {rtt: port}, "https": {rtt: port}} and serve until killed."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(cert), str(key))
    origins = {"http": _origin(images, None), "https": _origin(images, tls)}
    ports = {s: {str(r): _proxy(p, r / 1000) for r in rtts} for s, p in origins.items()}
    # no proxy: the fetcher talks to a server without TCP_NODELAY (http.server, Django's
    # development server) itself
    ports[NAGLE] = {"0.0": _origin(images, None, nodelay=False)}
    print(json.dumps(ports), flush=True)
    threading.Event().wait()


# -- the parent: the fetcher's throughput and CPU --------------------------------------------------


def _certificate(directory: Path) -> tuple[Path, Path]:
    key, crt = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return crt, key


def _fetch_all(urls: list[str], keep_alive: bool, expected: list[bytes]) -> tuple[float, float]:
    """(images/s, client CPU ms per image) of one fetcher reading ``urls`` on 8 threads."""
    from labelwheel.media import ImageFetcher, ImagePolicy

    policy = ImagePolicy(None, None, allowed_hosts=frozenset({"127.0.0.1"}), timeout=30.0)
    fetcher = ImageFetcher(policy, None)
    if not keep_alive:
        fetcher.close()  # a closed pool keeps nothing: a connection per image
    cpu, wall = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(fetcher.fetch_bytes, urls))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    fetcher.close()
    assert got == expected, "every image arrives whole"
    return len(urls) / wall, 1000 * cpu / len(urls)


def _median_best(values: list[float], higher_is_better: bool = True) -> dict[str, float]:
    best = max(values) if higher_is_better else min(values)
    return {"median": round(float(np.median(values)), 2), "best": round(float(best), 2)}


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown page."""
    lines = [
        "# Image fetches: kept-alive connections vs a connection per image",
        "",
        f"{result['n']} natural-photo JPEGs (~{result['mean_kb']} KB), 8 fetch threads, at most "
        f"4 at once per host; {result['rounds']} rounds, median (best). Simulated round trips: "
        "a proxy delays each chunk by half the round trip each way and a new connection's first "
        "bytes by one more (its TCP handshake). Client CPU: the fetching process only (the "
        f"servers run in a child process). {result['cpu']}, {result['cpu_count']} CPUs, "
        f"measured {result['measured']}; 1-minute load average {result['load_1m_at_start']} at "
        f"start, {result['load_1m_at_end']} at end.",
        "",
        "| scheme | round trip | images/s, new connection each | images/s, kept alive | "
        "speed-up | CPU ms/image, new each | CPU ms/image, kept alive |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        new, kept = row["new_connection"], row["kept_alive"]
        lines.append(
            f"| {row['scheme']} | {row['rtt_ms']} ms | {new['rate']['median']} "
            f"({new['rate']['best']}) | {kept['rate']['median']} ({kept['rate']['best']}) | "
            f"{row['speedup_median']}x | {new['cpu_ms']['median']} | {kept['cpu_ms']['median']} |"
        )
    lines += [
        "",
        "Speed-up: kept-alive over new-connection images/s, median of the per-round ratios. "
        "Images in cloud storage cost two such fetches each (Label Studio's resolve endpoint, "
        "then the presigned URL on the storage host).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark; write benchmarks/results/fetch_keepalive.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=160, help="images per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", default="0,2,20", help="simulated round-trip times")
    parser.add_argument("--out", default=str(RESULTS / "fetch_keepalive"))
    parser.add_argument(
        "--serve", nargs=3, metavar=("IMAGES", "CERT", "KEY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    rtts = [float(r) for r in args.rtt_ms.split(",")]
    if args.serve:
        serve(Path(args.serve[0]), Path(args.serve[1]), Path(args.serve[2]), rtts)
        return
    if shutil.which("openssl") is None:
        raise SystemExit("needs the openssl command (for a test certificate)")
    from _common import write_json
    from embed_throughput import _cpu_name, _load, natural_photos

    from labelwheel.media import transport

    load_start = _load()
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    (root / "images").mkdir()
    paths = natural_photos(root / "images", args.n, seed=0)
    expected = [p.read_bytes() for p in paths]
    crt, key = _certificate(root)
    # the fetcher trusts certifi's roots; here, the test certificate
    transport._TLS = ssl.create_default_context(cafile=str(crt))
    child = subprocess.Popen(
        [sys.executable, __file__, "--rtt-ms", args.rtt_ms, "--serve", str(root / "images"),
         str(crt), str(key)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        ports = json.loads(child.stdout.readline())
        rows = []
        configs = [(s, r) for s in ("http", "https") for r in rtts] + [(NAGLE, 0.0)]
        for scheme, rtt in configs:
            port = ports[scheme][str(rtt)]
            urls = [f"{scheme.split(',')[0]}://127.0.0.1:{port}/{p.name}" for p in paths]
            _fetch_all(urls[:16], True, expected[:16])  # warm up
            runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for rnd in range(args.rounds):
                for keep in (False, True) if rnd % 2 == 0 else (True, False):
                    runs[keep].append(_fetch_all(urls, keep, expected))
            ratios = [k[0] / n[0] for k, n in zip(runs[True], runs[False], strict=True)]
            row = {
                "scheme": scheme,
                "rtt_ms": rtt,
                "speedup_median": round(float(np.median(ratios)), 2),
            }
            for keep, name in ((False, "new_connection"), (True, "kept_alive")):
                row[name] = {
                    "rate": _median_best([r for r, _ in runs[keep]]),
                    "cpu_ms": _median_best([c for _, c in runs[keep]], False),
                }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        child.kill()
        child.wait()
        tmp.cleanup()
    result = {
        "n": args.n,
        "rounds": args.rounds,
        "mean_kb": round(sum(map(len, expected)) / len(expected) / 1024),
        "rows": rows,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_1m_at_start": load_start,
        "load_1m_at_end": _load(),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    out.with_suffix(".md").write_text(markdown(result))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
