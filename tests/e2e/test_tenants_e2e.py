"""Per-namespace defaults and `ft-default` through the real kube-apiserver (issue 14, sections 3 and 4).

A tenant's Namespace says `ray-ft-webhook.io/ft-default: "enabled"` and names its own Redis and Secret: a
RayCluster created there without an FT setting is stored with `ray.io/ft-enabled: "true"` (the second webhook
of the MutatingWebhookConfiguration, `/mutate-raycluster`), and its pods get the tenant's values, exactly what
`render` computes with the Namespace object. The Namespace cache answers from memory once warm and follows a
change of the Namespace's annotations through its watch.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client

from testkit.kube import wait_for
from testkit.kuberay_pods import pod, raycluster
from testkit.processes import WaitTimeout
from testkit.webhook import Webhook
from webhook.cli.render import render

from .test_admission_e2e import admin_settings, create_pod, ray_env

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("active")]

T = TypeVar("T")
FT = "ray.io/ft-enabled"
FT_DEFAULT = "ray-ft-webhook.io/ft-default"
ADDRESS = "ray-ft-webhook.io/redis-address"
SECRET = "ray-ft-webhook.io/redis-password-secret"
TENANT = {FT_DEFAULT: "enabled", ADDRESS: "redis.tenant-a:6379", SECRET: "tenant-a-redis/password"}
TENANT_SECRET_REF = {"secretKeyRef": {"name": "tenant-a-redis", "key": "password"}}
ADMIN_ADDRESS = admin_settings().default_redis_address
# The Namespace cache's direct GETs (webhook/admission/metrics.py), every result.
NAMESPACE_GETS = "ray_ft_webhook_namespace_fallback_gets_total"
DEFAULTED = 'ray_ft_webhook_raycluster_defaults_total{outcome="patched"}'


# -- helpers ---------------------------------------------------------------------------------------------------

def create_namespace(admin: client.ApiClient, annotations: dict[str, str] | None) -> str:
    name = f"tenant-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin).create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": name, "annotations": annotations or {}}})
    return name


def namespace_object(admin: client.ApiClient, name: str) -> dict[str, Any]:
    """The Namespace as stored (a plain dict), for `render`."""
    obj: dict[str, Any] = admin.sanitize_for_serialization(client.CoreV1Api(admin).read_namespace(name))
    return obj


def new_cluster(name: str, namespace: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A RayCluster as a user writes it (no uid); without `annotations` it says nothing about FT."""
    rc = raycluster(name=name, namespace=namespace, annotations=annotations)
    del rc["metadata"]["uid"]
    return rc


def create(admin: client.ApiClient, rc: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    """Create a RayCluster through the API; what the apiserver answers (for a dry run: what it would store)."""
    kwargs = {"dry_run": "All"} if dry_run else {}
    out: dict[str, Any] = client.CustomObjectsApi(admin).create_namespaced_custom_object(
        "ray.io", "v1", rc["metadata"]["namespace"], "rayclusters", copy.deepcopy(rc), **kwargs)
    return out


def stored(admin: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = client.CustomObjectsApi(admin).get_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayclusters", name)
    return out


def annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["metadata"].get("annotations") or {})


def env(pod_obj: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("valueFrom", e.get("value")) for e in ray_env(pod_obj)}


def assert_like_render_in(stored_pod: dict[str, Any], cluster: dict[str, Any], submitted: dict[str, Any],
                          ns: dict[str, Any]) -> None:
    """The stored pod carries exactly what the offline plan computes for it in Namespace object `ns`."""
    expected = render(cluster, submitted, admin_settings(), ns).pod
    assert ray_env(stored_pod) == expected["spec"]["containers"][0]["env"]
    assert stored_pod["spec"]["containers"][0]["args"] == expected["spec"]["containers"][0]["args"]
    assert annotations(stored_pod) == (expected["metadata"].get("annotations") or {})


def wait_seen(what: str, check: Callable[[], T], seen: Callable[[], object], timeout: float = 20) -> T:
    """`wait_for` whose failure names what was last seen (`seen()`), not only the falsy result."""
    try:
        return wait_for(what, check, timeout=timeout)
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}\nlast seen: {seen()}") from None


def warm(admin: client.ApiClient, hook: Webhook, namespace: str) -> None:
    """Wait until the webhook answers for `namespace` from its Namespace cache: a dry-run RayCluster CREATE is
    defaulted and costs no direct GET of the Namespace. (A GET before the watch delivers is allowed: the
    cache keeps what it read.)"""
    last: list[object] = []

    def answered_from_memory() -> bool:
        before = hook.metric(NAMESPACE_GETS)
        out = create(admin, new_cluster("warmup", namespace), dry_run=True)
        gets = hook.metric(NAMESPACE_GETS) - before
        last[:] = [annotations(out), f"{gets:g} Namespace GETs"]
        return gets == 0 and annotations(out).get(FT) == "true"

    wait_seen(f"the webhook's Namespace cache to answer for {namespace}", answered_from_memory, lambda: last)


# -- the tests -------------------------------------------------------------------------------------------------

@pytest.fixture()
def tenant(admin: client.ApiClient, webhook: Webhook) -> str:
    """An opted-in Namespace with its own Redis address and password Secret."""
    return create_namespace(admin, TENANT)


def test_cluster_in_an_opted_in_namespace_is_stored_with_ft_and_its_pods_get_the_tenants_values(
        admin: client.ApiClient, tenant: str, webhook: Webhook) -> None:
    before = webhook.metric(DEFAULTED)
    rc = create(admin, new_cluster("tenant-rc", tenant))
    assert annotations(rc) == {FT: "true"}, "the answer to the CREATE"
    kept = stored(admin, tenant, "tenant-rc")
    assert annotations(kept) == {FT: "true"}, "the stored RayCluster"
    assert webhook.metric(DEFAULTED) - before == 1
    ns = namespace_object(admin, tenant)
    for role in ("head", "worker"):
        submitted = pod(kept, role, kuberay_ft=True)  # KubeRay's FT step: the stored cluster asks for FT
        out = create_pod(admin, tenant, submitted)
        assert_like_render_in(out, kept, submitted, ns)
        if role == "head":
            assert env(out)["RAY_REDIS_ADDRESS"] == TENANT[ADDRESS]
            assert env(out)["REDIS_PASSWORD"] == TENANT_SECRET_REF
            assert env(out)["RAY_external_storage_namespace"] == kept["metadata"]["uid"]
        else:
            assert env(out)["RAY_gcs_rpc_server_reconnect_timeout_s"] == "600"


def test_the_clusters_own_ft_choice_is_stored_unchanged(admin: client.ApiClient, tenant: str,
                                                        webhook: Webhook) -> None:
    before = webhook.metric(DEFAULTED)
    create(admin, new_cluster("ft-off", tenant, {FT: "false", "team": "a"}))
    assert annotations(stored(admin, tenant, "ft-off")) == {FT: "false", "team": "a"}
    create(admin, new_cluster("ft-off-upper", tenant, {FT: "False"}))
    assert annotations(stored(admin, tenant, "ft-off-upper")) == {FT: "False"}
    assert webhook.metric(DEFAULTED) == before


def test_a_dry_run_is_defaulted_and_stores_nothing(admin: client.ApiClient, tenant: str) -> None:
    out = create(admin, new_cluster("dry", tenant, {"team": "a"}), dry_run=True)
    assert annotations(out) == {"team": "a", FT: "true"}
    listed = client.CustomObjectsApi(admin).list_namespaced_custom_object("ray.io", "v1", tenant, "rayclusters")
    assert listed["items"] == []


def test_a_namespace_without_annotations_gives_no_defaults(admin: client.ApiClient, webhook: Webhook) -> None:
    plain = create_namespace(admin, None)
    create(admin, new_cluster("no-ft", plain))
    assert annotations(stored(admin, plain, "no-ft")) == {}, "no ft-default: the cluster stays FT-off"
    ft = create(admin, new_cluster("ft", plain, {FT: "true"}))
    submitted = pod(ft, "head", kuberay_ft=True)
    out = create_pod(admin, plain, submitted)
    assert_like_render_in(out, ft, submitted, namespace_object(admin, plain))
    assert env(out)["RAY_REDIS_ADDRESS"] == ADMIN_ADDRESS
    assert env(out)["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-admin", "key": "pw"}}


def test_the_namespace_cache_answers_from_memory_once_warm(admin: client.ApiClient, tenant: str,
                                                           webhook: Webhook) -> None:
    """Once warm, neither a RayCluster CREATE nor its pods cost a GET of the Namespace."""
    warm(admin, webhook, tenant)
    before = webhook.metric(NAMESPACE_GETS)
    for i in range(3):
        rc = create(admin, new_cluster(f"warm-{i}", tenant))
        assert annotations(rc) == {FT: "true"}
        for role in ("head", "worker"):
            out = create_pod(admin, tenant, pod(rc, role, kuberay_ft=True))
            if role == "head":
                assert env(out)["RAY_REDIS_ADDRESS"] == TENANT[ADDRESS]
    assert webhook.metric(NAMESPACE_GETS) - before == 0, "3 RayClusters and 6 pods answered from memory"


def test_a_change_of_the_namespaces_annotations_reaches_new_pods(admin: client.ApiClient, tenant: str,
                                                                 webhook: Webhook) -> None:
    """The cache already holds the Namespace, so only its watch can bring the new address."""
    warm(admin, webhook, tenant)
    rc = create(admin, new_cluster("moving", tenant))
    old_head = create_pod(admin, tenant, pod(rc, "head", suffix="old00", kuberay_ft=True))
    assert env(old_head)["RAY_REDIS_ADDRESS"] == TENANT[ADDRESS]

    moved = "redis.tenant-a-new:6380"
    client.CoreV1Api(admin).patch_namespace(tenant, {"metadata": {"annotations": {ADDRESS: moved}}})
    before = webhook.metric(NAMESPACE_GETS)
    probe = pod(rc, "head", suffix="probe", kuberay_ft=True)
    last: list[object] = []

    def new_address() -> bool:
        address = env(create_pod(admin, tenant, probe, dry_run=True)).get("RAY_REDIS_ADDRESS")
        last[:] = [address]
        return address == moved

    wait_seen(f"the webhook's Namespace watch to deliver the new address of {tenant}", new_address,
              lambda: f"RAY_REDIS_ADDRESS {last}, the Namespace's annotations "
                      f"{annotations(namespace_object(admin, tenant))}")
    submitted = pod(rc, "head", suffix="new00", kuberay_ft=True)
    out = create_pod(admin, tenant, submitted)
    assert_like_render_in(out, rc, submitted, namespace_object(admin, tenant))
    assert env(out)["RAY_REDIS_ADDRESS"] == moved
    assert webhook.metric(NAMESPACE_GETS) - before == 0, "the change came from the watch, not from a GET"
    assert env(create_pod(admin, tenant, pod(rc, "head", suffix="old01", kuberay_ft=True)))["REDIS_PASSWORD"] \
        == TENANT_SECRET_REF, "the annotations the change left alone still apply"


@pytest.fixture()
def webhook_down(webhook: Webhook) -> Iterator[None]:
    webhook.stop()
    try:
        yield
    finally:
        webhook.start()


def test_with_the_webhook_down_a_cluster_is_created_without_the_default(admin: client.ApiClient, tenant: str,
                                                                       webhook_down: None) -> None:
    """`failurePolicy: Ignore`: a default never stands between a user and the apiserver."""
    rc = create(admin, new_cluster("while-down", tenant))
    assert annotations(rc) == {}
    assert annotations(stored(admin, tenant, "while-down")) == {}
