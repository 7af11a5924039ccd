"""`make abuse`: what a stranger on the pod network can do to one `serve` process, measured.

Attacks, each bounded in count and time (one asyncio client process, loopback only):

    idle       3,000 TCP connections that never start TLS, then 1,000 TLS connections that never send a byte
    partial    1,000 TLS connections that send half a request head, then stop
    stalled    30 TLS connections that declare a 6 MiB body, send 5 MiB of it, then stop
    headers    one 64 MiB header; one request of 20,000 headers
    bursts     10 rounds of 1,000 concurrent keep-alive clients, one review each
    all        idle + partial + stalled + headers at once, while probing

During every attack the bench probes `/healthz` and a real `/mutate` (the quick start's head pod) on fresh
connections and reports their latency; it reports the server's RSS (VmRSS from /proc) at the start, its peak,
and ten seconds after the attack ends, plus what /metrics counted as refused.

    .venv/bin/python bench/abuse.py                     # the current tree
    .venv/bin/python bench/abuse.py --source DIR        # another checkout (e.g. a `git worktree` of an older
                                                        # commit) served by the same venv, for before/after
    .venv/bin/python bench/abuse.py --only idle,bursts

Prints a markdown table. The limits are `serve`'s defaults unless --serve-args says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "hack")]

from testkit import processes  # noqa: E402
from testkit.webhook import free_port, make_certs  # noqa: E402

EXAMPLES = REPO / "examples"
REVIEW = (EXAMPLES / "admissionreview-head.json").read_bytes()
# Every attack connection gives up after this long, so the bench ends even against a server with no limits.
ATTACK_S = 40.0
SETTLE_S = 10.0


def request(body: bytes = REVIEW, extra: bytes = b"", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {size}\r\n".encode() + extra + b"\r\n" + body)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    context: ssl.SSLContext
    rss_peak_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def rss_kib(self) -> int:
        return processes.status_kib(self.proc.pid, "VmRSS")

    def sample(self) -> None:
        """Track the RSS peak every 50 ms until stopped (a thread: the event loop may be busy)."""
        while not self._stop.wait(0.05):
            if self.proc.poll() is not None:
                return
            self.rss_peak_kib = max(self.rss_peak_kib, self.rss_kib())


async def open_tls(server: Server, timeout: float = 10) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", server.port, ssl=server.context, server_hostname="127.0.0.1"), timeout)


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"content-length: (\d+)", head, re.I)
    if match:
        await reader.readexactly(int(match.group(1)))
    return status


async def probe(server: Server, path: str) -> float | None:
    """Latency in ms of one request on a fresh connection (TLS included), or None when it failed."""
    started = time.perf_counter()
    try:
        reader, writer = await open_tls(server, timeout=5)
        if path == "/healthz":
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        else:
            writer.write(request())
        status = await asyncio.wait_for(read_response(reader), 5)
        writer.close()
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
        return None
    return (time.perf_counter() - started) * 1000 if status == 200 else None


async def hold(coroutine: Awaitable[object]) -> None:
    """Run one attack connection until the server drops it or ATTACK_S passes, whichever comes first."""
    with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
        await asyncio.wait_for(coroutine, ATTACK_S)


async def silent_tcp(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await reader.read()  # returns when the server closes
    writer.close()


async def silent_tls(server: Server, first: bytes = b"") -> None:
    reader, writer = await open_tls(server)
    writer.write(first)
    await reader.read()
    writer.close()


async def stalled_body(server: Server) -> None:
    reader, writer = await open_tls(server)
    writer.write(request(b"{" + b" " * (5 * 1024 * 1024), length=6 * 1024 * 1024))
    await reader.read()
    writer.close()


async def big_head(server: Server, extra: bytes) -> None:
    reader, writer = await open_tls(server)
    writer.write(request(extra=extra))
    await writer.drain()
    await reader.read()
    writer.close()


async def keepalive_client(server: Server) -> None:
    reader, writer = await open_tls(server)
    writer.write(request())
    await read_response(reader)
    writer.close()


def attacks(server: Server, name: str) -> list[Callable[[], Awaitable[None]]]:
    tcp = [lambda: silent_tcp(server)] * 3000
    idle = [lambda: silent_tls(server)] * 1000
    partial = [lambda: silent_tls(server, b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-")] * 1000
    stalled = [lambda: stalled_body(server)] * 30
    headers = [lambda: big_head(server, b"X-Big: " + b"a" * (64 * 1024 * 1024) + b"\r\n"),
               lambda: big_head(server, b"".join(b"X-%d: v\r\n" % i for i in range(20_000)))]
    return {"idle": tcp + idle, "partial": partial, "stalled": stalled, "headers": headers,
            "all": tcp + idle + partial + stalled + headers}[name]


async def run_attack(server: Server, name: str) -> dict[str, object]:
    probes: dict[str, list[float | None]] = {"/healthz": [], "/mutate": []}
    stop = asyncio.Event()

    async def prober() -> None:
        while not stop.is_set():
            for path in probes:
                probes[path].append(await probe(server, path))
            await asyncio.sleep(0.2)

    probing = asyncio.create_task(prober())
    started = time.monotonic()
    if name == "bursts":
        rss_rounds = []
        for _ in range(10):
            await asyncio.gather(*(hold(keepalive_client(server)) for _ in range(1000)))
            rss_rounds.append(server.rss_kib() // 1024)
        extra: dict[str, object] = {"rss_after_each_round_mb": rss_rounds}
    else:
        await asyncio.gather(*(hold(make()) for make in attacks(server, name)))
        extra = {}
    took = time.monotonic() - started
    stop.set()
    await probing
    return {"seconds": round(took, 1), **summarize(probes), **extra}


def summarize(probes: dict[str, list[float | None]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for path, values in probes.items():
        ok = sorted(v for v in values if v is not None)
        key = path.strip("/")
        out[f"{key}_probes"] = f"{len(ok)}/{len(values)}"
        out[f"{key}_p50_ms"] = round(statistics.median(ok), 1) if ok else None
        out[f"{key}_max_ms"] = round(ok[-1], 1) if ok else None
    return out


def refused(server: Server) -> dict[str, int]:
    async def fetch() -> str:
        reader, writer = await open_tls(server)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
        return data.decode(errors="replace")

    try:
        text = asyncio.run(fetch())
    except (TimeoutError, OSError, ssl.SSLError):
        return {}
    return {m.group(1): int(float(m.group(2))) for m in re.finditer(
        r'^ray_ft_webhook_connections_refused_total\{reason="([a-z_]+)"\} (\S+)$', text, re.M)}


def start(source: Path, workdir: Path, serve_args: list[str]) -> Server:
    ca = make_certs(workdir)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(source)}
    proc = processes.start([sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
                            "--tls-cert", str(workdir / "tls.crt"), "--tls-key", str(workdir / "tls.key"),
                            "--rayclusters-from", str(EXAMPLES / "rayclusters"), *serve_args],
                           log=workdir / "serve.log", env=env, cwd=source)
    server = Server(proc, port, ssl.create_default_context(cafile=str(ca)))
    processes.wait_until("serve to answer /healthz", lambda: asyncio.run(probe(server, "/healthz")) is not None,
                         timeout=30)
    return server


def main() -> int:
    # Thousands of sockets on both sides: raise the soft descriptor limit (the server inherits it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=REPO, help="checkout whose webhook package is served")
    parser.add_argument("--only", default="idle,partial,stalled,headers,bursts,all", help="attacks, comma-separated")
    parser.add_argument("--serve-args", default="", help="extra `serve` flags, space-separated")
    args = parser.parse_args()
    rows = []
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            server = start(args.source.resolve(), Path(tmp), args.serve_args.split())
            sampler = threading.Thread(target=server.sample, daemon=True)
            before = server.rss_kib() // 1024
            sampler.start()
            try:
                result = asyncio.run(run_attack(server, name))
                time.sleep(SETTLE_S)
                alive = server.proc.poll() is None
                after = server.rss_kib() // 1024 if alive else None
                counted = refused(server) if alive else {}
            finally:
                server._stop.set()
                sampler.join()
                processes.stop_process(server.proc, timeout=20)
            rows.append({"attack": name, "rss_start_mb": before, "rss_peak_mb": server.rss_peak_kib // 1024,
                         "rss_after_mb": after, "alive": alive, **result, "refused": counted})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    columns = ["attack", "seconds", "rss_start_mb", "rss_peak_mb", "rss_after_mb", "alive", "healthz_probes",
               "healthz_p50_ms", "healthz_max_ms", "mutate_probes", "mutate_p50_ms", "mutate_max_ms"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c)) for c in columns) + " |")
    for row in rows:
        extra = {k: v for k, v in row.items() if k in ("refused", "rss_after_each_round_mb")}
        print(f"- {row['attack']}: {json.dumps(extra)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
