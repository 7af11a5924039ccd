"""The RayCluster lookups' pure parts: watch events applied to the cache, uid checks, the manifest folder.
The real watch and fallback GET are exercised against a real kube-apiserver in tests/e2e."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
import yaml
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError

from testkit.kuberay_pods import quickstart_raycluster, raycluster
from webhook.admission.lookup import LookupFailed, StaticLookup
from webhook.admission.watch import LIST_PAGE, NamespaceCache, WatchCache, _describe
from webhook.common.errors import InputError
from webhook.common.kubeapi import ApiError, Client
from webhook.core.pod import Owner
from webhook.core.raycluster import parse_raycluster


def test_watch_events_update_the_cache() -> None:
    cache = WatchCache(None)
    old, new = raycluster(name="a", uid="u1"), raycluster(name="a", uid="u2")
    cache.apply("ADDED", old)
    assert cache.cached(Owner("default", "a", "u1")).uid == "u1"
    # Re-created under the same name: a pod of the new cluster misses until the new object arrives.
    assert cache.cached(Owner("default", "a", "u2")) is None
    cache.apply("ADDED", new)
    cache.apply("DELETED", old)  # a late delete of the old uid must not evict the new object
    assert cache.cached(Owner("default", "a", "u2")).uid == "u2"
    cache.apply("DELETED", new)
    assert cache.cached(Owner("default", "a", None)) is None


def test_relist_replaces_only_its_scope() -> None:
    cache = WatchCache(None, namespaces=("x", "y"))
    cache.apply("ADDED", raycluster(name="a", namespace="x"))
    cache.apply("ADDED", raycluster(name="b", namespace="y"))
    cache._replace_scope("x", {("x", "c"): parse_raycluster(raycluster(name="c", namespace="x"))})
    assert cache.cached(Owner("x", "a", None)) is None
    assert cache.cached(Owner("x", "c", None)) is not None
    assert cache.cached(Owner("y", "b", None)) is not None
    assert not cache.ready()


def test_label_only_owner_matches_any_uid() -> None:
    cache = WatchCache(None)
    cache.apply("MODIFIED", raycluster(name="a", uid="u1"))
    assert cache.cached(Owner("default", "a", None)) is not None


def _deleting(**kwargs: str) -> dict:
    """A RayCluster being deleted: KubeRay's Redis cleanup finalizer holds it while the cleanup pod runs."""
    cluster = raycluster(annotations={"ray.io/ft-enabled": "true"}, **kwargs)
    cluster["metadata"].update({"deletionTimestamp": "2026-12-01T10:00:00Z", "deletionGracePeriodSeconds": 0,
                                "finalizers": ["ray.io/gcs-ft-redis-cleanup-finalizer"]})
    return cluster


def test_a_cluster_being_deleted_is_still_cached() -> None:
    """The Redis cleanup pod is admitted while its RayCluster has a deletionTimestamp: the MODIFIED event that
    sets it must keep the cluster in the cache (only DELETED removes it)."""
    cache = WatchCache(None)
    cache.apply("ADDED", raycluster(name="a", uid="u1", annotations={"ray.io/ft-enabled": "true"}))
    cache.apply("MODIFIED", _deleting(name="a", uid="u1"))
    facts = cache.cached(Owner("default", "a", None))
    assert facts is not None and facts.uid == "u1" and facts.ft_enabled
    cache._replace_scope(None, {("default", "a"): parse_raycluster(_deleting(name="a", uid="u1"))})
    assert cache.cached(Owner("default", "a", None)) is not None


class GetClient(Client):
    """The API client with its GET answered from memory (the fallback GET's only call); `obj` None: 404."""

    def __init__(self, obj: dict | None) -> None:
        self.obj, self.paths = obj, []

    def get(self, path: str, query: object = None, timeout: object = None) -> dict:
        self.paths.append(path)
        if self.obj is None:
            raise ApiError(404, "Not Found")
        return self.obj


def test_a_cluster_being_deleted_is_found_by_the_fallback_get() -> None:
    results: list[str] = []
    client = GetClient(_deleting(name="a", uid="u1"))
    cache = WatchCache(client, on_get=results.append)
    facts = asyncio.run(cache.fetch(Owner("default", "a", None)))
    assert facts.uid == "u1" and facts.ft_enabled and results == ["found"]
    assert client.paths == ["/apis/ray.io/v1/namespaces/default/rayclusters/a"]
    assert cache.cached(Owner("default", "a", None)) is not None


def _namespace(name: str, address: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "annotations": {"ray-ft-webhook.io/redis-address": address}}}


def test_namespace_watch_events_and_counted_fallback_gets() -> None:
    results: list[str] = []
    cache = NamespaceCache(GetClient(_namespace("t", "fetched:1")), on_get=results.append)
    assert asyncio.run(cache.fetch("t")).ours.redis_address == "fetched:1" and results == ["found"]
    cache.apply("MODIFIED", _namespace("t", "changed:2"))  # the watch replaces what the GET put there
    assert cache.cached("t").ours.redis_address == "changed:2"
    asyncio.run(cache.fetch("t"))  # a GET never replaces what the watch delivered
    assert cache.cached("t").ours.redis_address == "changed:2" and results == ["found", "found"]
    cache.apply("DELETED", _namespace("t", "changed:2"))
    assert cache.cached("t") is None
    cache._client = GetClient(None)
    with pytest.raises(LookupFailed, match="cannot read Namespace gone: not found"):
        asyncio.run(cache.fetch("gone"))
    assert results == ["found", "found", "not_found"]


def test_static_lookup_from_folder(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
        quickstart_raycluster(),
    ]))
    no_ns = raycluster(name="b", uid="ub")
    del no_ns["metadata"]["namespace"]
    (tmp_path / "b.json").write_text(json.dumps({"kind": "List", "items": [no_ns]}))
    (tmp_path / "notes.txt").write_text("ignored")
    lookup = StaticLookup.from_folder(tmp_path)
    assert len(lookup) == 2 and lookup.ready()
    assert lookup.cached(Owner("default", "b", "ub")) is not None
    assert lookup.cached(Owner("default", "b", "other")) is None
    with pytest.raises(LookupFailed, match="RayCluster default/zzz not found in the manifest folder"):
        asyncio.run(lookup.fetch(Owner("default", "zzz", None)))


def test_static_lookup_bad_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        StaticLookup.from_folder(tmp_path / "missing")
    (tmp_path / "bad.yaml").write_text("{")
    with pytest.raises(InputError, match=r"bad\.yaml: not valid YAML"):
        StaticLookup.from_folder(tmp_path)


class PagedClient(Client):
    """The API client with its GET answering a list in pages of two, as the apiserver does with `limit` and
    `continue` (the client's own `list_pages` follows them)."""

    def __init__(self, items: list[dict]) -> None:
        self.items, self.calls = items, []

    def get(self, path: str, query: dict | None = None, timeout: object = None) -> dict:
        assert path == "/apis/ray.io/v1/rayclusters" and query is not None and query["limit"] == LIST_PAGE
        start = int(query.get("continue") or 0)
        self.calls.append(start)
        assert len(self.calls) <= 3, f"the continue token is not followed: {self.calls}"
        end = start + 2
        more = end < len(self.items)
        return {"items": self.items[start:end],
                "metadata": {"resourceVersion": "42", **({"continue": str(end)} if more else {})}}


def test_list_is_read_in_pages() -> None:
    client = PagedClient([raycluster(name=f"c{i}", uid=f"u{i}") for i in range(5)])
    cache = WatchCache(client)
    assert cache._list(None) == "42"
    assert client.calls == [0, 2, 4] and len(cache) == 5 and cache.ready()


def test_writers_race_without_corrupting_the_cache() -> None:
    """A relist of one scope while watch events and fallback GETs of other threads add clusters: every write
    holds the cache's lock, so the relist never iterates a dict that another thread is growing."""
    cache = WatchCache(None, namespaces=("x", "y"))
    fresh = {("x", f"c{i}"): parse_raycluster(raycluster(name=f"c{i}", namespace="x")) for i in range(20_000)}
    added = [raycluster(name=f"n{i}", namespace="y", uid=f"u{i}") for i in range(4_000)]
    errors: list[BaseException] = []

    def relist() -> None:
        try:
            for _ in range(20):
                cache._replace_scope("x", fresh)
        except BaseException as exc:  # collected: an exception in a thread would otherwise be lost
            errors.append(exc)

    thread = threading.Thread(target=relist)
    thread.start()
    for obj in added:
        cache.apply("ADDED", obj)
    thread.join(timeout=120)
    assert not thread.is_alive() and errors == []
    assert len(cache) == len(fresh) + len(added)


@pytest.mark.parametrize(("exc", "timeout_s", "reason"), [
    (ReadTimeoutError(None, "/apis", "read timed out"), None, "timed out (ReadTimeoutError)"),
    (ReadTimeoutError(None, "/apis", "read timed out"), 2.0, "timed out after 2s"),
    (ProtocolError("Connection broken"), None, "connection to the Kubernetes API lost"),
    (NewConnectionError(None, "refused"), None, "cannot connect to the Kubernetes API"),
    (ApiError(404, "Not Found"), None, "not found"),
    (ApiError(403, "Forbidden"), None, "forbidden (HTTP 403): check the webhook's RBAC for rayclusters.ray.io"),
    (ApiError(410, "Gone"), None, "resource version too old (HTTP 410)"),
    (ApiError(500, "Internal Server Error"), None, "HTTP 500 Internal Server Error"),
])
def test_failures_are_described(exc: Exception, timeout_s: float | None, reason: str) -> None:
    """The watch's log line and the fallback GET's denial say what happened (not "timed out after 0s")."""
    assert _describe(exc, timeout_s) == reason
