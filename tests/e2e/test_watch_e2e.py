"""The watch cache against the real kube-apiserver: its first list read in pages with real `continue` tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from testkit.kuberay_pods import raycluster
from testkit.processes import wait_until
from webhook.admission import watch
from webhook.common import kube
from webhook.core.pod import Owner

pytestmark = pytest.mark.e2e

CLUSTERS = 7  # with pages of 2: four pages, three continue tokens, the last page short
PAGE = 2


def test_first_list_reads_every_page(admin: client.ApiClient, namespace: str, webhook_identity: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """More RayClusters than one page (LIST_PAGE made small; production reads 500 a page): the apiserver's
    continue tokens are followed to the last page, every RayCluster is cached, none needs a fallback GET."""
    custom = client.CustomObjectsApi(admin)
    created = []
    for i in range(CLUSTERS):
        rc = raycluster(name=f"paged-{i}", namespace=namespace, options={"redisAddress": "r:1"})
        del rc["metadata"]["uid"]
        created.append(custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", rc))

    monkeypatch.setattr(watch, "LIST_PAGE", PAGE)
    # Watch requests of a second: stopped, the cache's thread ends within one (an open watch would hold the
    # apiserver's shutdown at the end of the session).
    monkeypatch.setattr(watch, "_WATCH_SECONDS", 1)
    gets: list[str] = []
    api = kube.api_client(webhook_identity)  # the product's own client, as `serve --kubeconfig` makes it
    cache = watch.WatchCache(api, [namespace], on_get=gets.append)
    pages: list[dict[str, Any]] = []
    get = api.get  # the seam tests/test_lookup.py uses too: every page of a list is one GET

    def recorded(path: str, query: Any = None, timeout: Any = None) -> Any:
        result = get(path, query, timeout)
        if query and "limit" in query:  # a page of the list (the fallback GET has no query)
            pages.append({"limit": query["limit"], "continue": query.get("continue"),
                          "items": len(result["items"]), "next": result["metadata"].get("continue")})
        return result

    api.get = recorded  # type: ignore[method-assign]
    cache.start()
    try:
        wait_until(f"the watch cache's first list of {namespace} (pages so far: {pages})", cache.ready, 30)
        missing = [rc["metadata"]["name"] for rc in created if cache.cached(
            Owner(namespace, rc["metadata"]["name"], rc["metadata"]["uid"])) is None]
        assert not missing and len(cache) == CLUSTERS, f"not cached after the list: {missing}; pages: {pages}"
        assert gets == [], "no fallback GET"
        assert [p["items"] for p in pages] == [2, 2, 2, 1] and all(p["limit"] == PAGE for p in pages), pages
        # Each page after the first asked with the token the apiserver gave on the one before.
        assert [p["continue"] for p in pages] == [None] + [p["next"] for p in pages[:-1]], pages
        assert all(p["next"] for p in pages[:-1]) and not pages[-1]["next"], pages
    finally:
        cache.stop()
        for thread in cache._threads:
            thread.join(10)
