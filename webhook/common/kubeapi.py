"""A small Kubernetes REST client over urllib3 and the standard library's `ssl`: the calls the webhook makes,
on the API's own JSON, and nothing else.

Why not the `kubernetes` package: importing it loads every API and model class it has (~45 MB of RSS in a
`serve` process that makes a handful of calls on plain dicts). Here: GET, LIST in pages (`list_pages`), WATCH
as line-delimited JSON events (`watch`), and create, replace, merge-patch and delete.

Every call is bounded in time (connect and read timeouts; one number bounds the whole call) and is tried once:
the callers retry at their own pace (the watch with its backoff, the certificate sync every round), and a
bounded GET stays bounded. An HTTP error status is `ApiError(status, reason)`, whatever the call; a transport
failure is urllib3's own exception (`NewConnectionError`, `ReadTimeoutError`, `ProtocolError`...). Response
bodies are never put into an error or a log line: they could hold a Secret.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import urllib3

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
# (connect, read) seconds of a call that names no bound of its own.
DEFAULT_TIMEOUT = (5.0, 30.0)
# A watch's read timeout is its `timeoutSeconds` plus this: the apiserver ends the stream first, normally.
WATCH_READ_MARGIN_S = 30.0
# client-go re-reads a token file every minute (bound service-account tokens rotate, hourly by default).
TOKEN_REREAD_S = 60.0
# Connections kept per apiserver: one per watch, the fallback GETs, the Event sender and the certificate sync.
POOL_SIZE = 8
_READ_CHUNK = 64 * 1024


class ApiError(Exception):
    """The apiserver answered with an HTTP error status (or a watch stream ended with an ERROR event)."""

    def __init__(self, status: int, reason: str, call: str = "") -> None:
        # `call` ("GET /api/v1/..."): which request, for a log line; never the response body.
        super().__init__(f"HTTP {status} {reason}".rstrip() + (f" ({call})" if call else ""))
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class ClusterConfig:
    """How to reach one apiserver and who to be there: a kubeconfig's context or the in-cluster service account
    (`webhook.common.kubeconfig` builds it). Credentials are left out of the repr."""

    server: str  # https://host:port, possibly with a path prefix
    ca_pem: bytes | None = None  # the CAs to trust; None: the system's
    insecure: bool = False  # insecure-skip-tls-verify
    tls_server_name: str | None = None  # the name sent (SNI) and checked instead of the server's host
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None  # re-read every TOKEN_REREAD_S; wins over `token` (as in client-go)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    namespace: str | None = None  # the context's namespace, or the pod's


class TokenSource:
    """A bearer token, from a file re-read every `reread_s` (the last good read is kept when a re-read fails) or
    fixed. Thread-safe: every request thread asks it."""

    def __init__(self, token: str | None, path: Path | None, reread_s: float = TOKEN_REREAD_S,
                 clock: Any = time.monotonic) -> None:
        self._token, self._path, self._reread_s, self._clock = token, path, reread_s, clock
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def get(self) -> str | None:
        if self._path is None:
            return self._token
        with self._lock:
            now = self._clock()
            if self._token is None or now - self._read_at >= self._reread_s:
                try:
                    self._token = self._path.read_text().strip()
                    self._read_at = now
                except OSError:
                    if self._token is None:
                        raise
        return self._token


def tls_context(config: ClusterConfig) -> ssl.SSLContext:
    """The client TLS context: the CAs to trust (or none checked, when insecure) and the client certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif config.ca_pem is not None:
        ctx.load_verify_locations(cadata=config.ca_pem.decode("ascii", "replace"))
    if config.client_cert_pem is not None and config.client_key_pem is not None:
        # load_cert_chain reads files only: write both to a private folder for the moment it takes.
        with tempfile.TemporaryDirectory(prefix="ray-ft-webhook-") as folder:
            paths = []
            for name, data in (("tls.crt", config.client_cert_pem), ("tls.key", config.client_key_pem)):
                path = os.path.join(folder, name)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                paths.append(path)
            ctx.load_cert_chain(paths[0], paths[1])
    return ctx


def path(group_version: str, resource: str, namespace: str | None = None, name: str | None = None) -> str:
    """The URL path of a collection or an object: `path("v1", "namespaces", name="a")` is /api/v1/namespaces/a,
    `path("ray.io/v1", "rayclusters", "ns")` /apis/ray.io/v1/namespaces/ns/rayclusters."""
    quote = urllib.parse.quote
    parts = ["/api" if "/" not in group_version else "/apis", group_version]
    if namespace is not None:
        parts += ["namespaces", quote(namespace, safe="")]
    parts.append(resource)
    if name is not None:
        parts.append(quote(name, safe=""))
    return "/".join(parts)


def watch_events(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The events of a watch response body (one JSON object per line). An ERROR event (a `Status`: 410 when the
    resourceVersion is too old) raises ApiError with its code, like an HTTP error would."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            event = orjson.loads(line)
            if event.get("type") == "ERROR":
                status = event.get("object") or {}
                raise ApiError(int(status.get("code") or 500), str(status.get("reason") or "watch error"))
            yield event
    if buffer.strip():
        raise urllib3.exceptions.ProtocolError("watch stream ended inside an event")


Timeout = float | tuple[float, float]


def _timeout(timeout: Timeout) -> urllib3.Timeout:
    """One number bounds the whole call (connect and read together); a pair is (connect, read) per read."""
    if isinstance(timeout, tuple):
        return urllib3.Timeout(connect=timeout[0], read=timeout[1])
    return urllib3.Timeout(total=timeout)


class Client:
    """Calls to one apiserver with one identity; thread-safe (a pool of keep-alive connections)."""

    def __init__(self, config: ClusterConfig, token_reread_s: float = TOKEN_REREAD_S) -> None:
        self.config = config
        self._base = config.server.rstrip("/")
        self._token = TokenSource(config.token, config.token_file, token_reread_s)
        self._basic = None
        if config.username is not None:
            pair = f"{config.username}:{config.password or ''}".encode()
            self._basic = "Basic " + base64.b64encode(pair).decode("ascii")
        kwargs: dict[str, Any] = {}
        if config.insecure:  # asked for; urllib3 would warn on every request (a filter, set once: thread-safe)
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        if self._base.startswith("https:"):
            kwargs["ssl_context"] = tls_context(config)
            if config.tls_server_name:
                kwargs["server_hostname"] = config.tls_server_name
        # retries=False: a call is tried once and its timeout is its bound (see the module docstring).
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=POOL_SIZE, retries=False, **kwargs)

    # -- the calls --------------------------------------------------------------------------------------------

    def get(self, path: str, query: Mapping[str, Any] | None = None, timeout: Timeout = DEFAULT_TIMEOUT) -> Any:
        return self._json("GET", path, query=query, timeout=timeout)

    def create(self, path: str, body: Any, timeout: Timeout = DEFAULT_TIMEOUT) -> Any:
        return self._json("POST", path, body=body, timeout=timeout)

    def replace(self, path: str, body: Any, timeout: Timeout = DEFAULT_TIMEOUT) -> Any:
        """PUT `body`; its metadata.resourceVersion makes it conditional (409 when someone wrote first)."""
        return self._json("PUT", path, body=body, timeout=timeout)

    def patch(self, path: str, body: Any, timeout: Timeout = DEFAULT_TIMEOUT) -> Any:
        """A JSON merge patch (RFC 7386)."""
        return self._json("PATCH", path, body=body, timeout=timeout, content_type=MERGE_PATCH)

    def delete(self, path: str, timeout: Timeout = DEFAULT_TIMEOUT) -> Any:
        return self._json("DELETE", path, timeout=timeout)

    def list_pages(self, path: str, limit: int, query: Mapping[str, Any] | None = None,
                   timeout: Timeout = DEFAULT_TIMEOUT) -> Iterator[dict[str, Any]]:
        """The pages of a LIST, `limit` objects each, following `metadata.continue`: every page is of the first
        page's resourceVersion (the apiserver's pagination), and only one page is held at a time. An expired
        continue token is ApiError 410."""
        token: str | None = None
        while True:
            page = self.get(path, {**(query or {}), "limit": limit, **({"continue": token} if token else {})},
                            timeout)
            token = (page.get("metadata") or {}).get("continue")
            yield page
            del page  # not held while the next page is read
            if not token:
                return

    def watch(self, path: str, resource_version: str, timeout_s: int, query: Mapping[str, Any] | None = None,
              connect_timeout_s: float = DEFAULT_TIMEOUT[0]) -> Generator[dict[str, Any], None, None]:
        """The events of a WATCH from `resource_version` (BOOKMARK events included), until the apiserver ends it
        after `timeout_s`. Closing the iterator early closes the connection."""
        query = {**(query or {}), "watch": "true", "resourceVersion": resource_version,
                 "timeoutSeconds": timeout_s, "allowWatchBookmarks": "true"}
        response = self._request("GET", path, query=query, stream=True,
                                 timeout=(connect_timeout_s, timeout_s + WATCH_READ_MARGIN_S))
        finished = False
        try:
            yield from watch_events(response.stream(_READ_CHUNK))
            finished = True
        finally:
            if finished:
                response.release_conn()
            else:
                response.close()

    # -- the transport ----------------------------------------------------------------------------------------

    def _json(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
              timeout: Timeout, content_type: str = JSON) -> Any:
        response = self._request(method, path, query=query, body=body, timeout=timeout, content_type=content_type)
        return orjson.loads(response.data) if response.data else {}

    def _request(self, method: str, path: str, *, timeout: Timeout, query: Mapping[str, Any] | None = None,
                 body: Any = None, content_type: str = JSON, stream: bool = False) -> urllib3.BaseHTTPResponse:
        url = self._base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": JSON, "User-Agent": "ray-ft-webhook"}
        if (token := self._token.get()) is not None:
            headers["Authorization"] = f"Bearer {token}"
        elif self._basic is not None:
            headers["Authorization"] = self._basic
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)
        response = self._pool.request(method, url, body=data, headers=headers, timeout=_timeout(timeout),
                                      preload_content=not stream, redirect=False)
        if response.status >= 400:
            if stream:
                response.close()
            raise ApiError(response.status, response.reason or "", f"{method} {path}")
        return response
