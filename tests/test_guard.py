"""The connection guard of the real `serve`, as a stranger on the pod network meets it: every limit answers
as the README says (408, 431, 503, closed at accept or in the handshake), is counted in /metrics, and the
webhook keeps answering real reviews meanwhile. Small limits make each case quick; each socket read is
bounded, so a limit that does not fire fails the test instead of hanging it."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit import processes
from testkit.webhook import WebhookProcess, start_webhook

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
REVIEW = (EXAMPLES / "admissionreview-head.json").read_bytes()
# Bound on waiting for the server to act: several times the limits below, so only a missing limit trips it.
WAIT_S = 15

SHORT = ["--tls-handshake-timeout-s", "1", "--request-head-timeout-s", "1", "--request-body-timeout-s", "1",
         "--max-header-bytes", "4096", "--max-headers", "20"]


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    process = start_webhook(tmp_path_factory.mktemp("guard"), [*SHORT, "--rayclusters-from",
                                                                 str(EXAMPLES / "rayclusters")])
    yield process
    assert process.stop() == 0, process.logs()


def tls(hook: WebhookProcess) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(hook.ca))
    raw = socket.create_connection(("127.0.0.1", hook.port), timeout=WAIT_S)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError):
            return data
        if not chunk:
            return data
        data += chunk


def response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP response on a kept-alive connection: its head and its body (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    header, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", header, re.I).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return header, body


def refused(hook: WebhookProcess, reason: str) -> float:
    with hook.client() as client:
        text = client.get("/metrics").text
    match = re.search(rf'^ray_ft_webhook_connections_refused_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def mutate_works(hook: WebhookProcess) -> None:
    with hook.client() as client:
        answer = client.post("/mutate", content=REVIEW, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json()["response"]["patchType"] == "JSONPatch"


def head(extra: str = "", length: int = len(REVIEW)) -> bytes:
    return (f"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
            f"{extra}\r\n").encode()


def test_silent_tcp_connection_is_dropped_in_the_handshake(hook: WebhookProcess) -> None:
    before = refused(hook, "tls_handshake_timeout")
    with socket.create_connection(("127.0.0.1", hook.port), timeout=WAIT_S) as raw:
        assert read_all(raw) == b""
    assert refused(hook, "tls_handshake_timeout") == before + 1


def test_plain_http_fails_the_handshake(hook: WebhookProcess) -> None:
    before = refused(hook, "tls_handshake_failed")
    with socket.create_connection(("127.0.0.1", hook.port), timeout=WAIT_S) as raw:
        raw.sendall(head() + REVIEW)
        assert b"200" not in read_all(raw)
    assert refused(hook, "tls_handshake_failed") == before + 1


@pytest.mark.parametrize("sent", [b"", b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-"], ids=["nothing", "half-a-head"])
def test_a_head_not_sent_in_time_gets_408(hook: WebhookProcess, sent: bytes) -> None:
    before = refused(hook, "head_timeout")
    with tls(hook) as sock:
        sock.sendall(sent)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"head timeout" in answer
    assert refused(hook, "head_timeout") == before + 1


def test_a_stalled_body_gets_408(hook: WebhookProcess) -> None:
    before = refused(hook, "body_timeout")
    with tls(hook) as sock:
        sock.sendall(head() + REVIEW[:100])
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"body timeout" in answer
    assert refused(hook, "body_timeout") == before + 1


@pytest.mark.parametrize(("extra", "reason"), [
    ("X-Big: " + "a" * 8000 + "\r\n", "header_bytes"),
    ("".join(f"X-{i}: v\r\n" for i in range(30)), "header_count"),
    ("X-Huge: " + "b" * 2_000_000 + "\r\n", "header_bytes"),
], ids=["one-8k-header", "30-headers", "one-2MB-header"])
def test_oversized_heads_get_431(hook: WebhookProcess, extra: str, reason: str) -> None:
    before = refused(hook, reason)
    with tls(hook) as sock:
        # The server may close while the rest of a huge head is still being sent.
        with contextlib.suppress(ssl.SSLError, ConnectionResetError, BrokenPipeError):
            sock.sendall(head(extra) + REVIEW)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert refused(hook, reason) == before + 1


def test_requests_within_the_limits_are_served_on_one_connection(hook: WebhookProcess) -> None:
    with tls(hook) as sock:
        for _ in range(3):
            sock.sendall(head("X-Ok: " + "c" * 1000 + "\r\n") + REVIEW)
            header, body = response(sock)
            assert header.startswith(b"HTTP/1.1 200 ") and json.loads(body)["response"]["allowed"] is True


def test_at_the_cap_unused_connections_make_room_and_busy_ones_refuse(tmp_path: Path) -> None:
    """Four slots. Connections that send nothing hold them: a new one takes the oldest silent one's place.
    Connections idle after a request hold them: a new one takes the longest-idle one's place. So the apiserver
    is never locked out by connections that do nothing. Four with a request in progress (stalled bodies) hold
    them: a fifth is closed at accept."""
    hook = start_webhook(tmp_path, ["--max-connections", "4", "--request-head-timeout-s", "30",
                                    "--request-body-timeout-s", "30", "--rayclusters-from",
                                    str(EXAMPLES / "rayclusters")])
    try:
        silent = [tls(hook) for _ in range(4)]
        time.sleep(1.2)  # only connections quiet for over a second are shed (younger ones are a burst)
        mutate_works(hook)  # took the place of silent[0]
        assert read_all(silent[0]) == b""
        for sock in silent:
            sock.close()
        idle = [tls(hook) for _ in range(4)]
        for sock in idle:
            sock.sendall(head() + REVIEW)
            assert response(sock)[0].startswith(b"HTTP/1.1 200 ")
        mutate_works(hook)  # took the place of idle[0]
        assert read_all(idle[0]) == b""
        for sock in idle:
            sock.close()
        stalled = [tls(hook) for _ in range(4)]
        for sock in stalled:
            # "100 Continue" comes when the app starts reading the body: the request is then in progress.
            sock.sendall(head("Expect: 100-continue\r\n"))
            assert sock.recv(1024).startswith(b"HTTP/1.1 100 ")
            sock.sendall(REVIEW[:10])
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            tls(hook).sendall(head())
        for sock in stalled:
            sock.close()
        # The server learns of the closes a moment later; until then a new connection may still be refused.
        processes.wait_until("a slot after closing the stalled connections", lambda: mutate_works(hook) or True,
                             timeout=WAIT_S, ignore=(httpx.TransportError,))
        assert refused(hook, "evicted") >= 2 and refused(hook, "connection_limit") >= 1
    finally:
        assert hook.stop() == 0, hook.logs()


def test_bodies_over_the_process_budget_get_503(tmp_path: Path) -> None:
    """One client holds most of a 1 MiB budget with a stalled body; a second body that does not fit is refused
    with 503 at once, and fits again once the first is done."""
    hook = start_webhook(tmp_path, ["--max-buffered-body-mib", "1", "--request-body-timeout-s", "30",
                                    "--rayclusters-from", str(EXAMPLES / "rayclusters")])
    try:
        big = 900 * 1024
        with tls(hook) as staller:
            staller.sendall(head(length=big) + b"{")
            with tls(hook) as second:
                second.sendall(head(length=200 * 1024))
                header, body = response(second)
            assert header.startswith(b"HTTP/1.1 503 ") and b"budget" in body
            mutate_works(hook)  # a 9 KB review still fits beside the stalled one
            staller.sendall(b" " * (big - 1))
            assert staller.recv(65536).startswith(b"HTTP/1.1 400 ")  # the whole body was read: not JSON
        with tls(hook) as again:
            again.sendall(head(length=200 * 1024) + b" " * (200 * 1024))
            assert again.recv(65536).startswith(b"HTTP/1.1 400 ")
        assert refused(hook, "body_budget") == 1
    finally:
        assert hook.stop() == 0, hook.logs()


def test_serves_while_attacked(hook: WebhookProcess) -> None:
    """Held connections of every kind at once do not stop /healthz and a real /mutate from answering."""
    attackers = [socket.create_connection(("127.0.0.1", hook.port), timeout=WAIT_S) for _ in range(20)]
    partial = [tls(hook) for _ in range(20)]
    for sock in partial:
        sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\n")
    try:
        with hook.client() as client:
            assert client.get("/healthz").status_code == 200
        mutate_works(hook)
    finally:
        for sock in attackers + partial:
            sock.close()
