"""The connection guard: what one stranger on the pod network can make the server hold is bounded.

uvicorn has no connection cap, no TLS-handshake, request-head or body deadline and no header limits: a client
that connects and says nothing, sends half a head, or stalls in its body holds memory for ever, and with
`failurePolicy: Fail` an out-of-memory webhook blocks every Ray pod. `GuardedProtocol` is uvicorn's httptools
protocol with those bounds added:

- **connections**: at most `max_connections` at once, counted from accept (TLS handshakes included). At the
  cap, a new connection takes the place of the oldest one that has not sent a whole request head a second
  after accept (still in its handshake, or silent), else of the one idle the longest between requests:
  connections that hold slots without using them cannot lock the apiserver out. Otherwise (a burst of new
  clients, or a request in progress on every slot) the new one is closed at accept, before any TLS state;
- **TLS**: the handshake is done here (`loop.start_tls`), so it is bounded by `tls_handshake_timeout_s`;
- **request head**: complete within `head_timeout_s` of the connection (first request) or of its first
  byte (later ones); at most `max_header_bytes` and `max_headers` -> 431 and close;
- **request body**: complete within `body_timeout_s` of the end of its head.
A deadline that passes answers 408 (when no response has started) and closes the connection. Deadlines are
times stored on the connection and checked by one sweep every `_SWEEP_S` while connections are open (so they
pass up to that much late): a loop timer armed and cancelled twice per request cost ~4.5 µs of each. Every refusal
is counted by reason (`ray_ft_webhook_connections_refused_total`). Idle keep-alive connections are closed
by uvicorn's own `timeout_keep_alive`; the body's size limits live in the app (413, and 503 over the
process-wide budget of buffered bodies).

After a burst, freed TLS buffers stay in the C heap; when the last connection of a burst closes, glibc's
`malloc_trim` gives them back to the system (skipped where there is no glibc).

uvicorn builds protocols itself, so the per-process `Guard` is `install`ed before serving (in each worker
with `--workers`), and every protocol reads it.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from webhook.admission.limits import Limits
from webhook.admission.metrics import Metrics


class Guard:
    """The per-process state every connection shares: limits, the TLS context, the open-connection count."""

    def __init__(self, limits: Limits, tls_context: ssl.SSLContext, metrics: Metrics) -> None:
        self.limits, self.tls_context, self.metrics = limits, tls_context, metrics
        self.open = 0
        self._connections: dict[GuardedProtocol, None] = {}  # every counted connection, for the deadline sweep
        self._sweeping = False
        # Open connections that have not yet sent a whole request head, oldest first (dicts keep order), and
        # those idle between requests, longest idle first: the ones a new connection may replace at the cap.
        self._unproven: dict[GuardedProtocol, None] = {}
        self._idle: dict[GuardedProtocol, None] = {}
        self._refused: dict[str, Any] = {}
        self._closed_since_trim = 0
        self._trim_scheduled = False
        metrics.connections_open.set_function(lambda: self.open)

    def refuse(self, reason: str) -> None:
        child = self._refused.get(reason)
        if child is None:
            child = self._refused[reason] = self.metrics.connections_refused.labels(reason)
        child.inc()

    def admit(self, connection: GuardedProtocol) -> bool:
        """Count `connection` in, making room at the cap by shedding the oldest unproven one; False: refuse it."""
        if self.open >= self.limits.max_connections:
            oldest = next(iter(self._unproven), None)
            if oldest is not None and time.monotonic() - oldest.opened_at < _SHED_AFTER_S:
                oldest = None  # a burst of new clients, not squatters: shedding them would only churn
            oldest = oldest or next(iter(self._idle), None)
            if oldest is None:
                self.refuse("connection_limit")
                return False
            self.refuse("evicted")
            oldest.evict()
        self.open += 1
        self._unproven[connection] = None
        self._connections[connection] = None
        if not self._sweeping:
            self._sweeping = True
            connection.loop.call_later(_SWEEP_S, self._sweep, connection.loop)
        return True

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Expire every connection whose deadline has passed; again in `_SWEEP_S` while any is open."""
        now = loop.time()
        for connection in [c for c in self._connections if 0.0 < c.deadline_at <= now]:
            connection.expire()
        if self._connections:
            loop.call_later(_SWEEP_S, self._sweep, loop)
        else:
            self._sweeping = False

    def busy(self, connection: GuardedProtocol) -> None:
        """`connection` has a request in progress: it is not to be shed."""
        self._unproven.pop(connection, None)
        self._idle.pop(connection, None)

    def idle(self, connection: GuardedProtocol) -> None:
        """`connection` answered its request and waits for the next one."""
        self._idle[connection] = None

    def closed(self, connection: GuardedProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self._connections.pop(connection, None)
        self._unproven.pop(connection, None)
        self._idle.pop(connection, None)
        self.open -= 1
        self._closed_since_trim += 1
        # After a burst (many connections closed, none left), return the freed buffers to the system once.
        if self.open == 0 and self._closed_since_trim >= _TRIM_AFTER_CLOSES and not self._trim_scheduled:
            self._trim_scheduled = True
            loop.call_later(_TRIM_DELAY_S, self._trim)

    def _trim(self) -> None:
        self._trim_scheduled = False
        self._closed_since_trim = 0
        if _malloc_trim is not None:
            _malloc_trim(0)


# How often deadlines (head, body) are checked: how late at most a passed one is acted on.
_SWEEP_S = 0.25
# A connection without a whole request head is shed at the cap only after this long: the apiserver's
# handshake and head take milliseconds, so one still quiet after a second is squatting.
_SHED_AFTER_S = 1.0
# After a close (408, 431, keep-alive expiry), how long a peer may take to answer TLS's close_notify before the
# connection is dropped (the loops' default is 30 s, which a silent peer would use to hold the memory).
_TLS_SHUTDOWN_S = 2.0
# A trim costs a few milliseconds of the event loop; only after bursts, and not more than once a second.
_TRIM_AFTER_CLOSES = 64
_TRIM_DELAY_S = 1.0


def _libc_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _libc_malloc_trim()
_installed: Guard | None = None


def install(guard: Guard) -> None:
    """Make `guard` the one every GuardedProtocol of this process uses (call before serving)."""
    global _installed
    _installed = guard


def _response(status: int, reason: str, message: str) -> bytes:
    body = message.encode("ascii")
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode("ascii") + body


class _HeadersRefused(Exception):
    """Raised in a parser callback to stop parsing a head that is over a limit (the reason is on the protocol)."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, over TLS done here, with the connection guard's limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if _installed is None:
            raise RuntimeError("guard.install() must run before the server accepts connections")
        self.guard = _installed
        self._max_headers, self._max_header_bytes = _installed.limits.max_headers, _installed.limits.max_header_bytes
        self._raw: asyncio.BaseTransport | None = None  # the TCP connection under TLS
        self._counted = False  # this connection is in guard.open
        self._ready = False  # TLS is up and uvicorn's connection_made has run
        self._lost = False
        self._evicted = False
        self.opened_at = 0.0
        self._early = bytearray()  # application data that arrived with the end of the handshake
        # When the current deadline passes (the loop's clock; 0: none) and what it bounds (head, body).
        self.deadline_at = 0.0
        self._deadline_reason = ""
        self._head_pending = True
        self._head_bytes = 0
        self._headers = 0
        self._header_size = 0  # URL and headers of the current head, as parsed
        self._refusal: tuple[str, str] | None = None  # why a head over a limit gets 431: message, metric reason

    # -- connection: cap, then TLS -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        if not guard.admit(self):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._counted = True
        self.opened_at = time.monotonic()
        self._raw = transport
        # start_tls's first step (its TLS protocol takes over the socket) must run now, inside connection_made:
        # uvloop starts reading as soon as connection_made returns, and the ClientHello must reach TLS, not us.
        self._step_tls(self.loop.start_tls(transport, self, guard.tls_context, server_side=True,  # type: ignore[arg-type]
                                           ssl_handshake_timeout=guard.limits.tls_handshake_timeout_s,
                                           ssl_shutdown_timeout=_TLS_SHUTDOWN_S))

    def _step_tls(self, coro: Coroutine[Any, Any, asyncio.BaseTransport | None]) -> None:
        """Drive start_tls like a Task would: run it to its next wait, resume it when that wait is over."""
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            self._tls_ready(done.value)
            return
        except (OSError, ssl.SSLError, EOFError, TimeoutError):
            elapsed = time.monotonic() - self.opened_at
            timed_out = elapsed >= self.guard.limits.tls_handshake_timeout_s * 0.99
            if not self._evicted:
                self.guard.refuse("tls_handshake_timeout" if timed_out else "tls_handshake_failed")
            if self._raw is not None:
                self._raw.abort()  # type: ignore[attr-defined]
            self._release()
            return
        if waiting is None:  # a bare yield: try again on the next loop iteration
            self.loop.call_soon(self._step_tls, coro)
        else:
            waiting.add_done_callback(lambda _: self._step_tls(coro))

    def _tls_ready(self, tls: asyncio.BaseTransport | None) -> None:
        if self._lost or tls is None:
            return
        super().connection_made(tls)  # type: ignore[arg-type]
        self._ready = True
        self._arm(self.guard.limits.head_timeout_s, "head_timeout")
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self.data_received(early)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:  # evict() already ran it
            return
        self._lost = True
        self._disarm()
        if self._ready:
            super().connection_lost(exc)
        self._release()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.guard.closed(self, self.loop)
        if not self._ready:
            # uvicorn's connection_lost, which never runs for a connection that did not get past TLS, is what
            # breaks the cycle through the C parser's callbacks (not collectable): break it here.
            self.parser = None  # type: ignore[assignment]
            self._raw = None
            self._early = bytearray()

    def evict(self) -> None:
        """Shed this connection to make room for a new one (the guard counted it)."""
        self._evicted = True
        transport = self.transport if self._ready else self._raw
        if transport is not None:
            transport.abort()  # type: ignore[attr-defined]
        # uvloop does not always tell the protocol of an aborted TLS transport: clean up now, once.
        self.connection_lost(None)

    # -- request head and body -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._ready:  # decrypted with the handshake's last read, before start_tls returned
            self._early += data
            if len(self._early) > self.guard.limits.max_header_bytes:
                self._refuse_head(self._head_too_large(), early=True)
            return
        if self._head_pending:
            self._head_bytes += len(data)
        super().data_received(data)
        # Checked on the raw bytes too: a head that never completes (one endless header) is buffered by the
        # parser before any callback sees it.
        if self._head_pending and self._head_bytes > self.guard.limits.max_header_bytes and self._refusal is None:
            self._refuse_head(self._head_too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers = self._header_size = 0
        if not self._head_pending:  # a later request on a kept-alive connection: its head deadline starts now
            self._head_pending, self._head_bytes = True, 0
            self._arm(self.guard.limits.head_timeout_s, "head_timeout")

    def on_url(self, url: bytes) -> None:
        self._header_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        self._header_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._headers > self._max_headers or self._header_size > self._max_header_bytes:
            limits = self.guard.limits
            if self._headers > limits.max_headers:
                self._refusal = (f"more than {limits.max_headers} request headers", "header_count")
            else:
                self._refusal = self._head_too_large()
            raise _HeadersRefused  # uvicorn answers a parser error with send_400_response: 431 from there
        super().on_header(name, value)

    def _head_too_large(self) -> tuple[str, str]:
        return f"request head over {self.guard.limits.max_header_bytes} bytes", "header_bytes"

    def on_headers_complete(self) -> None:
        self._head_pending, self._head_bytes = False, 0
        self.guard.busy(self)
        super().on_headers_complete()
        self._arm(self.guard.limits.body_timeout_s, "body_timeout")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._lost and not self.pipeline:
            self.guard.idle(self)

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers a parser error with 400; a head refused by a limit gets its own status instead."""
        if self._refusal is None:
            self.guard.refuse("bad_request")
            super().send_400_response(msg)
            return
        self._refuse_head(self._refusal)

    def _refuse_head(self, refusal: tuple[str, str], early: bool = False) -> None:
        """431 for a head over a limit, counted, and the connection closed."""
        self._refusal = refusal
        message, reason = refusal
        self.guard.refuse(reason)
        self._disarm()
        transport = self.transport
        if early or transport is None:
            self._early = bytearray()
            if self._raw is not None:
                self._raw.abort()  # type: ignore[attr-defined]
            return
        if not transport.is_closing():
            transport.write(_response(431, "Request Header Fields Too Large", message))
            transport.close()

    # -- deadlines -----------------------------------------------------------------------------------------

    def _arm(self, seconds: float, reason: str) -> None:
        self.deadline_at, self._deadline_reason = self.loop.time() + seconds, reason

    def _disarm(self) -> None:
        self.deadline_at = 0.0

    def expire(self) -> None:
        """The current deadline has passed (the guard's sweep): 408 unless a response has started, and close."""
        reason = self._deadline_reason
        self.deadline_at = 0.0
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.guard.refuse(reason)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app may be waiting for the rest of the body: it sees a disconnect and writes nothing more.
            started = cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
            if started:
                transport.close()
                return
        what = reason.replace("_", " ")
        transport.write(_response(408, "Request Timeout", f"request not received within the {what}"))
        transport.close()
