"""List+watch caches of the Kubernetes API: `WatchCache` (RayClusters) and `NamespaceCache` (the Namespaces whose
annotations give their RayClusters defaults), each with one bounded GET on a miss.

No API call happens per admission while a cache is warm. A miss (a RayCluster created a moment before
its pods) or a uid mismatch (deleted and re-created under the same name) costs one direct GET bounded
by `timeout_s`.

Concurrency: one watch thread per scope and the fallback GET (in asyncio's thread pool) write a cache;
admissions on the event loop read it. Every write holds `_lock`; a read is one `dict.get` (atomic in
CPython) and takes no lock, so the hot path never waits for a relist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from urllib3.exceptions import NewConnectionError, ProtocolError, TimeoutError

from webhook.admission.lookup import Key, LookupFailed, matches
from webhook.common import kubeapi
from webhook.common.kubeapi import ApiError, Client
from webhook.core.namespace import NamespaceFacts, parse_namespace
from webhook.core.pod import Owner
from webhook.core.raycluster import ClusterFacts, parse_raycluster

log = logging.getLogger(__name__)

GROUP_VERSION, PLURAL = "ray.io/v1", "rayclusters"
# The apiserver sends a bookmark about every minute; re-watch (cheaply, from the last version) every 5.
_WATCH_SECONDS = 300
_MAX_BACKOFF_S = 30.0
# Objects per list page (the apiserver's pagination keeps one consistent resourceVersion across pages). A page
# is held raw, then parsed, while the next is read: CPython keeps the peak. With 10,000 quick-start RayClusters
# a serve process's RSS was 89 MB with pages of 500 (client-go's), 85 with 200, 84 with 100 (bench/watch_memory.py);
# larger RayClusters (full pod templates) make the difference larger. 100 a page is 100 requests for 10,000.
LIST_PAGE = 100
# (connect, read) seconds of one list page.
_LIST_TIMEOUT = (5.0, 60.0)


def _describe(exc: Exception, timeout_s: float | None = None, resource: str = "rayclusters.ray.io") -> str:
    """A short, specific reason for a failed API call (never the response body: it could echo anything).
    `timeout_s` is the call's own bound, named in the message when that is what ran out."""
    if isinstance(exc, ApiError):
        if exc.status == 404:
            return "not found"
        if exc.status in (401, 403):
            return f"forbidden (HTTP {exc.status}): check the webhook's RBAC for {resource}"
        if exc.status == 410:
            return "resource version too old (HTTP 410)"
        return f"HTTP {exc.status} {exc.reason}"
    # The client tries once (no retries), so urllib3 raises the failure itself, never a MaxRetryError around it.
    if isinstance(exc, NewConnectionError):  # before TimeoutError: urllib3 makes it a ConnectTimeoutError
        return "cannot connect to the Kubernetes API"
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s:g}s" if timeout_s else f"timed out ({type(exc).__name__})"
    if isinstance(exc, ProtocolError):
        return "connection to the Kubernetes API lost"
    return type(exc).__name__


class _ListWatch:
    """A dict of parsed objects kept by list+watch, one daemon thread per scope (a namespace, or None: all)."""

    kind = "object"
    resource = "objects"

    def __init__(self, client: Client | None, scopes: tuple[str | None, ...], timeout_s: float,
                 on_get: Callable[[str], None] | None = None) -> None:
        self._client = cast(Client, client)  # None: only `apply` and the cache itself are used (unit tests)
        self._scopes = scopes
        self._timeout_s = timeout_s
        self._on_get = on_get or (lambda result: None)
        self._items: dict[Any, Any] = {}
        # Held by every writer (watch threads, fallback GETs); readers do one dict.get without it.
        self._lock = threading.Lock()
        self._synced: set[str | None] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # What a subclass says about its resource.
    def _collection(self, scope: str | None) -> str:
        """The URL path of the objects of `scope`."""
        raise NotImplementedError

    def _parse(self, obj: Mapping[str, Any]) -> tuple[Any, Any]:
        """(key, facts) of one object."""
        raise NotImplementedError

    def _in_scope(self, key: Any, scope: str | None) -> bool:
        return scope is None

    def __len__(self) -> int:
        return len(self._items)

    def start(self) -> None:
        for scope in self._scopes:
            thread = threading.Thread(target=self._run, args=(scope,), name=f"watch-{self.kind}-{scope or 'all'}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def ready(self) -> bool:
        return len(self._synced) == len(self._scopes)

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED) to the cache."""
        key, facts = self._parse(obj)
        with self._lock:
            if event_type == "DELETED":
                current = self._items.get(key)
                if current is not None and getattr(current, "uid", None) == getattr(facts, "uid", None):
                    del self._items[key]
            elif event_type in ("ADDED", "MODIFIED"):
                self._items[key] = facts

    def _replace_scope(self, scope: str | None, fresh: Mapping[Any, Any]) -> None:
        with self._lock:
            for key in [k for k in self._items if self._in_scope(k, scope)]:
                if key not in fresh:
                    del self._items[key]
            self._items.update(fresh)

    def _list(self, scope: str | None) -> str:
        """List in pages, parsing each page before fetching the next: raw objects of 10,000 RayClusters at
        once would cost hundreds of MB; the parsed facts take about 1.3 KiB each."""
        fresh: dict[Any, Any] = {}
        version = ""
        for page in self._client.list_pages(self._collection(scope), LIST_PAGE, timeout=_LIST_TIMEOUT):
            for obj in page.get("items") or []:
                key, facts = self._parse(obj)
                fresh[key] = facts
            version = str(page["metadata"]["resourceVersion"])
            del page  # let the page go before the next one is read
        self._replace_scope(scope, fresh)
        self._synced.add(scope)
        return version

    def _watch(self, scope: str | None, version: str) -> str:
        """One watch request from `version` until the apiserver ends it (or `stop`); the version to go on from:
        the last event's, a BOOKMARK's included. An ERROR event or an HTTP error raises ApiError."""
        with contextlib.closing(self._client.watch(self._collection(scope), version, _WATCH_SECONDS)) as events:
            for event in events:
                obj = event["object"]
                if event["type"] != "BOOKMARK":
                    self.apply(event["type"], obj)
                version = str(obj["metadata"]["resourceVersion"])
                if self._stop.is_set():
                    break
        return version

    def _run(self, scope: str | None) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            phase = "list"
            try:
                version = self._list(scope)
                log.info(f"{self.kind}s listed", extra={"scope": scope or "*", "count": len(self._items)})
                phase = "watch"
                while not self._stop.is_set():
                    version = self._watch(scope, version)
                    backoff = 1.0
            except ApiError as exc:
                if exc.status == 410:  # the watch's resourceVersion expired: relist at once
                    log.info(f"{self.kind} watch expired, relisting", extra={"scope": scope or "*"})
                    continue
                self._failed(scope, phase, exc, backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            except Exception as exc:
                self._failed(scope, phase, exc, backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _failed(self, scope: str | None, phase: str, exc: Exception, backoff: float) -> None:
        """Log what failed (the list or the watch, and why), then wait `backoff` seconds or until stopped."""
        log.warning(f"{self.kind} {phase} failed, retrying", extra={
            "scope": scope or "*", "reason": _describe(exc, resource=self.resource), "retry_in_s": backoff})
        self._stop.wait(backoff)


class WatchCache(_ListWatch):
    """RayClusters from the Kubernetes API: list+watch per namespace scope in a daemon thread each."""

    kind = "raycluster"
    resource = "rayclusters.ray.io"

    def __init__(self, client: Client | None, namespaces: Iterable[str] = (), timeout_s: float = 2.0,
                 on_get: Callable[[str], None] | None = None) -> None:
        super().__init__(client, tuple(namespaces) or (None,), timeout_s, on_get)
        self._clusters: dict[Key, ClusterFacts] = self._items

    def _collection(self, scope: str | None) -> str:
        return kubeapi.path(GROUP_VERSION, PLURAL, scope)

    def _parse(self, obj: Mapping[str, Any]) -> tuple[Key, ClusterFacts]:
        facts = parse_raycluster(obj)
        return (facts.namespace, facts.name), facts

    def _in_scope(self, key: Key, scope: str | None) -> bool:
        return scope is None or key[0] == scope

    def clusters(self) -> list[ClusterFacts]:
        with self._lock:
            return list(self._clusters.values())

    def cached(self, owner: Owner) -> ClusterFacts | None:
        facts = self._clusters.get((owner.namespace, owner.name))
        return facts if facts is not None and matches(facts, owner) else None

    async def fetch(self, owner: Owner) -> ClusterFacts:
        return await asyncio.to_thread(self._get, owner)

    def _get(self, owner: Owner) -> ClusterFacts:
        where = f"RayCluster {owner.namespace}/{owner.name}"
        try:
            obj = self._client.get(kubeapi.path(GROUP_VERSION, PLURAL, owner.namespace, owner.name),
                                   timeout=self._timeout_s)
        except Exception as exc:
            reason = _describe(exc, self._timeout_s, self.resource)
            self._on_get("not_found" if reason == "not found" else "error")
            raise LookupFailed(f"cannot read {where}: {reason}") from None
        facts = parse_raycluster(cast(dict[str, Any], obj))
        if not matches(facts, owner):
            self._on_get("uid_mismatch")
            raise LookupFailed(
                f"cannot read {where}: it has uid {facts.uid}, the pod's owner is {owner.uid} (deleted?)"
            )
        self._on_get("found")
        key = (facts.namespace, facts.name)
        with self._lock:
            current = self._clusters.get(key)
            # Fill the gap until the watch delivers the object; never replace a matching entry with an older read.
            if current is None or current.uid != facts.uid:
                self._clusters[key] = facts
        return facts


class NamespaceCache(_ListWatch):
    """The Namespaces' defaults for their RayClusters: one list+watch of all Namespaces (few, small objects), a
    bounded GET for one not seen yet (a Namespace that cannot be read fails the lookup like a RayCluster would;
    nothing can be created in one that does not exist)."""

    kind = "namespace"
    resource = "namespaces"

    def __init__(self, client: Client | None, timeout_s: float = 2.0,
                 on_get: Callable[[str], None] | None = None) -> None:
        super().__init__(client, (None,), timeout_s, on_get)
        self._namespaces: dict[str, NamespaceFacts] = self._items

    def _collection(self, scope: str | None) -> str:
        return kubeapi.path("v1", "namespaces")

    def _parse(self, obj: Mapping[str, Any]) -> tuple[str, NamespaceFacts]:
        facts = parse_namespace(obj)
        return facts.name, facts

    def cached(self, name: str) -> NamespaceFacts | None:
        return self._namespaces.get(name)

    async def fetch(self, name: str) -> NamespaceFacts:
        return await asyncio.to_thread(self._get, name)

    def _get(self, name: str) -> NamespaceFacts:
        try:
            obj = self._client.get(kubeapi.path("v1", "namespaces", name=name), timeout=self._timeout_s)
        except Exception as exc:
            reason = _describe(exc, self._timeout_s, self.resource)
            self._on_get("not_found" if reason == "not found" else "error")
            raise LookupFailed(f"cannot read Namespace {name}: {reason}") from None
        self._on_get("found")
        facts = parse_namespace(obj)
        with self._lock:
            self._namespaces.setdefault(name, facts)
        return facts


class ApiLookup:
    """The `RayClusterLookup` of `serve` with the Kubernetes API: the RayCluster cache and the Namespace cache."""

    def __init__(self, rayclusters: WatchCache, namespaces: NamespaceCache) -> None:
        self.rayclusters, self.namespaces = rayclusters, namespaces

    def start(self) -> None:
        self.rayclusters.start()
        self.namespaces.start()

    def stop(self) -> None:
        self.rayclusters.stop()
        self.namespaces.stop()

    def ready(self) -> bool:
        return self.rayclusters.ready() and self.namespaces.ready()

    def cached(self, owner: Owner) -> ClusterFacts | None:
        return self.rayclusters.cached(owner)

    async def fetch(self, owner: Owner) -> ClusterFacts:
        return await self.rayclusters.fetch(owner)

    def clusters(self) -> list[ClusterFacts]:
        return self.rayclusters.clusters()

    def namespace(self, name: str) -> NamespaceFacts | None:
        return self.namespaces.cached(name)

    async def fetch_namespace(self, name: str) -> NamespaceFacts:
        return await self.namespaces.fetch(name)
