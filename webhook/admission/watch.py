"""`WatchCache`: RayClusters from the Kubernetes API, kept in memory by list+watch, with one bounded GET on a miss.

No API call happens per admission while the cache is warm. A miss (a RayCluster created a moment before
its pods) or a uid mismatch (deleted and re-created under the same name) costs one direct GET bounded
by `timeout_s`.

Concurrency: one watch thread per namespace scope and the fallback GET (in asyncio's thread pool) write the
cache; admissions on the event loop read it. Every write holds `_lock`; a read is one `dict.get` (atomic in
CPython) and takes no lock, so the hot path never waits for a relist.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from webhook.admission.lookup import Key, LookupFailed, matches
from webhook.core.pod import Owner
from webhook.core.raycluster import ClusterFacts, parse_raycluster

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
# The apiserver sends a bookmark about every minute; re-watch (cheaply, from the last version) every 5.
_WATCH_SECONDS = 300
_MAX_BACKOFF_S = 30.0
# Objects per list page (the apiserver's pagination keeps one consistent resourceVersion across pages).
LIST_PAGE = 500


def _describe(exc: Exception, timeout_s: float | None = None) -> str:
    """A short, specific reason for a failed API call (never the response body: it could echo anything).
    `timeout_s` is the call's own bound, named in the message when that is what ran out."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, TimeoutError

    if isinstance(exc, ApiException):
        if exc.status == 404:
            return "not found"
        if exc.status in (401, 403):
            return f"forbidden (HTTP {exc.status}): check the webhook's RBAC for rayclusters.ray.io"
        if exc.status == 410:
            return "resource version too old (HTTP 410)"
        return f"HTTP {exc.status} {exc.reason}"
    cause = exc.reason if isinstance(exc, MaxRetryError) else exc
    if isinstance(cause, NewConnectionError):  # before TimeoutError: urllib3 makes it a ConnectTimeoutError
        return "cannot connect to the Kubernetes API"
    if isinstance(cause, TimeoutError):
        return f"timed out after {timeout_s:g}s" if timeout_s else f"timed out ({type(cause).__name__})"
    if isinstance(cause, ProtocolError):
        return "connection to the Kubernetes API lost"
    return type(cause).__name__


class WatchCache:
    """RayClusters from the Kubernetes API: list+watch per namespace scope in a daemon thread each."""

    def __init__(self, api_client: Any, namespaces: Iterable[str] = (), timeout_s: float = 2.0,
                 on_get: Callable[[str], None] | None = None) -> None:
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self._scopes: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self._timeout_s = timeout_s
        self._on_get = on_get or (lambda result: None)
        self._clusters: dict[Key, ClusterFacts] = {}
        # Held by every writer (watch threads, fallback GETs); readers do one dict.get without it.
        self._lock = threading.Lock()
        self._synced: set[str | None] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __len__(self) -> int:
        return len(self._clusters)

    def start(self) -> None:
        for scope in self._scopes:
            thread = threading.Thread(target=self._run, args=(scope,), name=f"watch-{scope or 'all'}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def ready(self) -> bool:
        return len(self._synced) == len(self._scopes)

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
            obj = self._api.get_namespaced_custom_object(
                GROUP, VERSION, owner.namespace, PLURAL, owner.name, _request_timeout=self._timeout_s
            )
        except Exception as exc:
            reason = _describe(exc, self._timeout_s)
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

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED) to the cache."""
        facts = parse_raycluster(obj)
        key = (facts.namespace, facts.name)
        with self._lock:
            if event_type == "DELETED":
                current = self._clusters.get(key)
                if current is not None and current.uid == facts.uid:
                    del self._clusters[key]
            elif event_type in ("ADDED", "MODIFIED"):
                self._clusters[key] = facts

    def _replace_scope(self, scope: str | None, fresh: Mapping[Key, ClusterFacts]) -> None:
        with self._lock:
            for key in [k for k in self._clusters if scope is None or k[0] == scope]:
                if key not in fresh:
                    del self._clusters[key]
            self._clusters.update(fresh)

    def _list(self, scope: str | None) -> str:
        """List in pages, parsing each page before fetching the next: raw objects of 10,000 RayClusters at
        once would cost hundreds of MB; the parsed facts take about 1.3 KiB each."""
        fresh: dict[Key, ClusterFacts] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_PAGE, "_request_timeout": (5, 60)}
            if token:
                kwargs["_continue"] = token
            if scope is None:
                page = self._api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
            else:
                page = self._api.list_namespaced_custom_object(GROUP, VERSION, scope, PLURAL, **kwargs)
            result = cast(dict[str, Any], page)
            for facts in map(parse_raycluster, result.get("items") or []):
                fresh[(facts.namespace, facts.name)] = facts
            token = result["metadata"].get("continue")
            if not token:
                break
        self._replace_scope(scope, fresh)
        self._synced.add(scope)
        return str(result["metadata"]["resourceVersion"])

    def _run(self, scope: str | None) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        backoff = 1.0
        while not self._stop.is_set():
            phase = "list"
            try:
                version = self._list(scope)
                log.info("rayclusters listed", extra={"scope": scope or "*", "count": len(self._clusters)})
                phase = "watch"
                while not self._stop.is_set():
                    w = watch.Watch()
                    func: Callable[..., Any]
                    args: tuple[str, ...]
                    if scope is None:
                        func, args = self._api.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
                    else:
                        func, args = self._api.list_namespaced_custom_object, (GROUP, VERSION, scope, PLURAL)
                    for event in w.stream(func, *args, resource_version=version, timeout_seconds=_WATCH_SECONDS,
                                          allow_watch_bookmarks=True, _request_timeout=(5, _WATCH_SECONDS + 30)):
                        if event["type"] != "BOOKMARK":
                            self.apply(event["type"], event["object"])
                        if self._stop.is_set():
                            w.stop()
                    version = w.resource_version or version
                    backoff = 1.0
            except ApiException as exc:
                if exc.status == 410:  # the watch's resourceVersion expired: relist at once
                    log.info("raycluster watch expired, relisting", extra={"scope": scope or "*"})
                    continue
                self._failed(scope, phase, exc, backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            except Exception as exc:
                self._failed(scope, phase, exc, backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _failed(self, scope: str | None, phase: str, exc: Exception, backoff: float) -> None:
        """Log what failed (the list or the watch, and why), then wait `backoff` seconds or until stopped."""
        log.warning(f"raycluster {phase} failed, retrying", extra={
            "scope": scope or "*", "reason": _describe(exc), "retry_in_s": backoff})
        self._stop.wait(backoff)
