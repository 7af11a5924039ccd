"""Finding the RayCluster that owns a pod: a watch-fed in-memory cache with one bounded fallback GET.

No API call happens per admission while the cache is warm. A miss (a RayCluster created a moment before
its pods) or a uid mismatch (deleted and re-created under the same name) costs one direct GET bounded
by `timeout_s`. The cache stores parsed ClusterFacts, not raw objects, so parsing happens once per change.
`StaticLookup` serves a folder of manifests for trying the webhook without a cluster.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from webhook.files import InputError, load_objects
from webhook.pod import Owner
from webhook.raycluster import ClusterFacts, parse_raycluster

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
# The apiserver sends a bookmark about every minute; re-watch (cheaply, from the last version) every 5.
_WATCH_SECONDS = 300
_MAX_BACKOFF_S = 30.0
# Objects per list page (the apiserver's pagination keeps one consistent resourceVersion across pages).
LIST_PAGE = 500

Key = tuple[str, str]


class LookupFailed(Exception):
    """The RayCluster cannot be read; the message says why (not found, forbidden, timed out...)."""


class RayClusterLookup(Protocol):
    """What the admission handler needs; a dict-backed fake implements it in unit tests."""

    def cached(self, owner: Owner) -> ClusterFacts | None:
        """The cached facts for `owner`, or None on a miss or uid mismatch. Never does I/O."""

    async def fetch(self, owner: Owner) -> ClusterFacts:
        """A fresh read, bounded in time; raises LookupFailed."""

    def ready(self) -> bool:
        """True once the cache holds a complete first listing."""


def _matches(facts: ClusterFacts, owner: Owner) -> bool:
    return owner.uid is None or not facts.uid or facts.uid == owner.uid


class StaticLookup:
    """RayClusters from a folder of YAML/JSON manifests, read once at start (`--rayclusters-from`)."""

    def __init__(self, clusters: Mapping[Key, ClusterFacts]) -> None:
        self._clusters = dict(clusters)

    @classmethod
    def from_folder(cls, folder: Path, default_namespace: str = "default") -> StaticLookup:
        if not folder.is_dir():
            raise InputError(f"{folder}: not a folder")
        clusters: dict[Key, ClusterFacts] = {}
        for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml", ".json")):
            for obj in load_objects(path):
                if obj.get("kind") != "RayCluster":
                    continue
                metadata = obj.setdefault("metadata", {})
                metadata.setdefault("namespace", default_namespace)
                facts = parse_raycluster(obj)
                clusters[(facts.namespace, facts.name)] = facts
        return cls(clusters)

    def __len__(self) -> int:
        return len(self._clusters)

    def cached(self, owner: Owner) -> ClusterFacts | None:
        facts = self._clusters.get((owner.namespace, owner.name))
        return facts if facts is not None and _matches(facts, owner) else None

    async def fetch(self, owner: Owner) -> ClusterFacts:
        facts = self.cached(owner)
        if facts is None:
            raise LookupFailed(f"RayCluster {owner.namespace}/{owner.name} not found in the manifest folder")
        return facts

    def ready(self) -> bool:
        return True


def _describe(exc: Exception, timeout_s: float) -> str:
    """A short, specific reason for a failed GET (never the response body: it could echo anything)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError, TimeoutError

    if isinstance(exc, ApiException):
        if exc.status == 404:
            return "not found"
        if exc.status in (401, 403):
            return f"forbidden (HTTP {exc.status}): check the webhook's RBAC for rayclusters.ray.io"
        return f"HTTP {exc.status} {exc.reason}"
    if isinstance(exc, TimeoutError) or (isinstance(exc, MaxRetryError) and isinstance(exc.reason, TimeoutError)):
        return f"timed out after {timeout_s:g}s"
    return f"{type(exc).__name__}"


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

    def cached(self, owner: Owner) -> ClusterFacts | None:
        facts = self._clusters.get((owner.namespace, owner.name))
        return facts if facts is not None and _matches(facts, owner) else None

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
        facts = parse_raycluster(obj)
        if not _matches(facts, owner):
            self._on_get("uid_mismatch")
            raise LookupFailed(
                f"cannot read {where}: it has uid {facts.uid}, the pod's owner is {owner.uid} (deleted?)"
            )
        self._on_get("found")
        key = (facts.namespace, facts.name)
        current = self._clusters.get(key)
        # Fill the gap until the watch delivers the object; never replace a matching entry with an older read.
        if current is None or current.uid != facts.uid:
            self._clusters[key] = facts
        return facts

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED) to the cache."""
        facts = parse_raycluster(obj)
        key = (facts.namespace, facts.name)
        if event_type == "DELETED":
            current = self._clusters.get(key)
            if current is not None and current.uid == facts.uid:
                del self._clusters[key]
        elif event_type in ("ADDED", "MODIFIED"):
            self._clusters[key] = facts

    def _replace_scope(self, scope: str | None, fresh: Mapping[Key, ClusterFacts]) -> None:
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
                result = self._api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
            else:
                result = self._api.list_namespaced_custom_object(GROUP, VERSION, scope, PLURAL, **kwargs)
            for facts in map(parse_raycluster, result.get("items") or []):
                fresh[(facts.namespace, facts.name)] = facts
            token = result["metadata"].get("continue")
            if not token:
                break
        self._replace_scope(scope, fresh)
        self._synced.add(scope)
        return result["metadata"]["resourceVersion"]

    def _run(self, scope: str | None) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        backoff = 1.0
        while not self._stop.is_set():
            try:
                version = self._list(scope)
                log.info("rayclusters listed", extra={"scope": scope or "*", "count": len(self._clusters)})
                while not self._stop.is_set():
                    w = watch.Watch()
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
                if exc.status != 410:
                    log.warning("raycluster watch failed", extra={"scope": scope or "*", "reason": _describe(exc, 0)})
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
            except Exception as exc:
                log.warning("raycluster watch failed", extra={"scope": scope or "*", "reason": _describe(exc, 0)})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
