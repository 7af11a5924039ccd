"""`ft-default` with the real KubeRay operator (issue 14, section 4), per pinned KubeRay version.

A RayCluster applied without any FT setting in a Namespace that says `ray-ft-webhook.io/ft-default: "enabled"`
(and names the tenant's Redis) is stored with `ray.io/ft-enabled: "true"`, so KubeRay does its part: its Redis
cleanup finalizer, its FT step on the head, and on deletion its Redis cleanup Job, whose pod the webhook gives
the tenant's Redis. The cleanup is then completed (no kubelet: the pod is marked Succeeded) and the RayCluster
is gone. Both pinned releases have the finalizer and the Job (v1.2.2's `GCSFaultToleranceRedisCleanupFinalizer`).
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from testkit import kube
from testkit.ci import in_ci
from testkit.kube import rayclusters, wait_for
from testkit.kuberay import (
    FT_FINALIZER,
    INJECTED,
    Observer,
    cleanup_selector,
    complete_cleanup,
    env_map,
    get_raycluster,
    injected,
    pod_annotations,
    remove_finalizers,
    wait_for_ray_pods,
    without_redis_settings,
)
from testkit.webhook import Webhook

from .conftest import NO_GO, Stack, TierReport
from .test_kuberay_operator import assert_no_duplicate_env, assert_only_injected_added, secret_env

pytestmark = pytest.mark.kuberay

if not in_ci() and shutil.which("go") is None:
    pytest.skip(NO_GO, allow_module_level=True)

FT = "ray.io/ft-enabled"
TENANT_ADDRESS = "redis.tenant-a:6379"
TENANT_SECRET = ("tenant-a-redis", "password")
TENANT = {
    "ray-ft-webhook.io/ft-default": "enabled",
    "ray-ft-webhook.io/redis-address": TENANT_ADDRESS,
    "ray-ft-webhook.io/redis-password-secret": "/".join(TENANT_SECRET),
}
DEFAULTED = 'ray_ft_webhook_raycluster_defaults_total{outcome="patched"}'


@pytest.fixture()
def tenant(kuberay: Stack) -> Iterator[str]:
    """An opted-in Namespace of this KubeRay version's run; its RayClusters are let go at the end."""
    name = f"tenant-{kuberay.version.replace('.', '-')}"
    core = client.CoreV1Api(kuberay.api)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": name, "annotations": TENANT}})
    yield name
    remove_finalizers(kuberay.api, name)
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)


def test_ft_default_cluster_gets_kuberays_finalizer_and_cleanup_job(
    kuberay: Stack, tenant: str, kr_webhook: Webhook, kr_observer: Observer, kr_report: TierReport
) -> None:
    api, name = kuberay.api, "rc-ft-default"
    custom, core, batch = client.CustomObjectsApi(api), client.CoreV1Api(api), client.BatchV1Api(api)
    rc = without_redis_settings(kuberay.sample_raycluster, name, {})  # no annotation, no options, no Redis env
    assert FT not in rc["metadata"]["annotations"] and "gcsFaultToleranceOptions" not in rc["spec"]
    defaulted = kr_webhook.metric(DEFAULTED)

    # As in test_kuberay_operator: the watch delivers the RayCluster before KubeRay creates its pods.
    kr_webhook.wait_cached(lambda: rayclusters(api), "the RayClusters of the earlier tests")
    with kuberay.operator.paused():
        applied = kube.apply(kuberay.dyn, rc, tenant)
        cached = kr_webhook.wait_cached(lambda: rayclusters(api), f"RayCluster {tenant}/{name}")
    uid = applied["metadata"]["uid"]
    assert (applied["metadata"].get("annotations") or {}).get(FT) == "true", "the answer to the apply"
    assert get_raycluster(api, tenant, name)["metadata"]["annotations"][FT] == "true", "the stored RayCluster"
    assert kr_webhook.metric(DEFAULTED) - defaulted == 1

    wait_for(f"KubeRay to add {FT_FINALIZER} to {tenant}/{name}",
             lambda: FT_FINALIZER in (get_raycluster(api, tenant, name)["metadata"].get("finalizers") or []))
    pods = wait_for_ray_pods(api, tenant, name)
    for role, stored in pods.items():
        seen = kr_observer.seen(tenant, stored)
        assert seen is not None, f"the observer did not record the {role} pod"
        assert_only_injected_added(seen, stored)
        assert_no_duplicate_env(stored)
    head, worker = env_map(pods["head"]), env_map(pods["worker"])
    # KubeRay's own FT step ran on the head: the storage namespace (annotation and env) is KubeRay's.
    assert kr_observer.seen(tenant, pods["head"]) is not None
    assert pod_annotations(kr_observer.seen(tenant, pods["head"]) or {})[FT] == "true"
    assert pod_annotations(pods["head"])["ray.io/external-storage-namespace"] == uid
    assert head["RAY_external_storage_namespace"] == {"value": uid}
    assert head["RAY_REDIS_ADDRESS"] == {"value": TENANT_ADDRESS}
    assert head["REDIS_PASSWORD"] == secret_env(TENANT_SECRET)
    assert worker["RAY_gcs_rpc_server_reconnect_timeout_s"] == {"value": "600"}
    used = kr_webhook.cache_stats() - cached
    assert used.hits >= len(pods) and (used.misses, used.fallback_gets) == (0, 0), f"pods from the cache: {used}"

    custom.delete_namespaced_custom_object("ray.io", "v1", tenant, "rayclusters", name)
    selector = cleanup_selector(name)
    # KubeRay deletes the Ray pods first and creates the Job once the head pod is gone.
    (job,) = wait_for(f"KubeRay's Redis cleanup Job of {tenant}/{name}",
                      lambda: batch.list_namespaced_job(tenant, label_selector=selector).items,
                      timeout=90, interval=0.5)
    (pod_obj,) = wait_for(f"the Job controller to create the cleanup pod of {tenant}/{name}",
                          lambda: core.list_namespaced_pod(tenant, label_selector=selector).items,
                          timeout=60, interval=0.5)
    deleting = get_raycluster(api, tenant, name)["metadata"]
    assert deleting.get("deletionTimestamp") and FT_FINALIZER in deleting["finalizers"], "held for the Job"
    cleanup: dict[str, Any] = api.sanitize_for_serialization(pod_obj)
    seen = kr_observer.seen(tenant, cleanup)
    assert seen is not None, "the observer did not record the cleanup pod"
    assert_only_injected_added(seen, cleanup)
    env = env_map(cleanup)
    assert env["RAY_REDIS_ADDRESS"] == {"value": TENANT_ADDRESS}, "the tenant's Redis is the one cleaned"
    assert env["REDIS_PASSWORD"] == secret_env(TENANT_SECRET)
    assert env["RAY_external_storage_namespace"] == {"value": uid}
    assert INJECTED in pod_annotations(cleanup) and "RAY_REDIS_ADDRESS" in injected(cleanup)

    complete_cleanup(api, tenant, name)
    log = kuberay.operator.log_path.read_text(errors="replace")
    assert re.search(rf"The Redis cleanup Job ({name}-redis-cleanup )?has been completed", log), \
        "KubeRay's own word that the cleanup Job completed (v1.2.2 names the Job inside the sentence)"
    kr_report.lines.append(f"{kuberay.version} ft-default: stored {FT}=true, finalizer, head and cleanup pod "
                           f"(Job {job.metadata.name}) with {TENANT_ADDRESS}; RayCluster gone after the Job")
