"""Talking to the local API server: waiting (an API error counts as "not yet"), server-side apply,
namespaces, CRDs becoming Established, and waiting until the apiserver really calls a new webhook."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from testkit import kuberay_pods, processes

T = TypeVar("T")
FIELD_MANAGER = "ray-ft-webhook-tests"


def wait_for(what: str, check: Callable[[], T], timeout: float = 30, interval: float = 0.2) -> T:
    """`processes.wait_until` for API calls: an `ApiException` means "not yet"."""
    return processes.wait_until(what, check, timeout, interval, ignore=(ApiException,))


def dynamic_client(api: client.ApiClient, cache_dir: Path) -> DynamicClient:
    """A dynamic client whose discovery cache lives in `cache_dir` (not in /tmp, where it would outlive us)."""
    return DynamicClient(api, cache_file=str(cache_dir / "discovery.json"))


def apply(dyn: DynamicClient, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    """Server-side apply (the KubeRay CRDs are too large for client-side apply's last-applied annotation)."""
    try:
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    except ResourceNotFoundError:  # a CRD installed a moment ago: discovery has to be read again
        dyn.resources.invalidate_cache()
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    body = copy.deepcopy(obj)
    if resource.namespaced:
        body["metadata"]["namespace"] = namespace or body["metadata"].get("namespace") or "default"
    result = dyn.server_side_apply(
        resource, body=body, namespace=body["metadata"].get("namespace"), field_manager=FIELD_MANAGER,
        force_conflicts=True,
    )
    return result.to_dict()


def rayclusters(api: client.ApiClient) -> int:
    """How many RayClusters the apiserver holds, in every namespace."""
    return len(client.CustomObjectsApi(api).list_cluster_custom_object("ray.io", "v1", "rayclusters")["items"])


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    with contextlib.suppress(ApiException):
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def wait_established(api: client.ApiClient, names: Sequence[str], timeout: float = 60) -> None:
    """Wait until each named CustomResourceDefinition is Established (served)."""
    ext = client.ApiextensionsV1Api(api)

    def established() -> bool:
        for name in names:
            crd_status = ext.read_custom_resource_definition(name).status
            conds = (crd_status.conditions if crd_status is not None else None) or []
            if not any(c.type == "Established" and c.status == "True" for c in conds):
                return False
        return True

    wait_for(f"the CRDs {', '.join(names)} to be established", established, timeout=timeout)


def wait_until_called(api: client.ApiClient, also_called: Callable[[], int] | None = None,
                      timeout: float = 60) -> None:
    """A new MutatingWebhookConfiguration takes a moment: dry-run a Ray pod until ours mutates it (and, when
    given, the counter `also_called` of another webhook grows). The warm-up RayCluster is deleted again, so
    an operator started later never acts on it."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = "ray-ft-webhook-warmup"
    ensure_namespace(api, namespace)
    rc = kuberay_pods.raycluster(name="warmup", namespace=namespace, annotations={"ray.io/ft-enabled": "true"})
    del rc["metadata"]["uid"]
    stored = custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", rc)
    try:
        rc["metadata"]["uid"] = stored["metadata"]["uid"]
        body = kuberay_pods.pod(rc, "worker")

        def called() -> bool:
            before = also_called() if also_called is not None else 0
            out = core.create_namespaced_pod(namespace, body, dry_run="All")
            mutated = "ray-ft-webhook.io/injected" in (out.metadata.annotations or {})
            return mutated and (also_called is None or also_called() > before)

        wait_for("the webhook to be called by the apiserver", called, timeout=timeout)
    finally:
        custom.delete_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", "warmup")
