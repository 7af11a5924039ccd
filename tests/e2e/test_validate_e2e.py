"""Issue 13 on a real kube-apiserver with the real `kubectl`: what the person who applies a RayCluster reads
(`/validate`'s warnings and denials), and the Events on the RayCluster when its head pod is admitted.

`/validate` is registered for namespaces labelled VALIDATE only, so the other e2e tests (which create
RayClusters it would deny, to see their pods denied) are untouched.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from testkit import processes
from testkit.controlplane import ControlPlane
from testkit.kube import wait_for
from testkit.kubectl import Kubectl, warnings_of
from testkit.kuberay_pods import pod, raycluster
from testkit.webhook import Webhook

from .test_admission_e2e import create_cluster, create_pod

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("active")]

VALIDATE = "e2e.ray-ft-webhook.io/validate"
CONFIG = "ray-ft-webhook-e2e-validate"
FT = {"ray.io/ft-enabled": "true"}
SECRET = {"ray-ft-webhook.io/redis-password-secret": "redis-password"}
HOOK = 'admission webhook "rayclusters.ray-ft-webhook.io"'


@pytest.fixture(scope="module")
def validating(admin: client.ApiClient, webhook: Webhook) -> Iterator[None]:
    api = client.AdmissionregistrationV1Api(admin)
    api.create_validating_webhook_configuration(webhook.validating_configuration(
        name=CONFIG, only_namespaces_labelled=VALIDATE))
    yield
    api.delete_validating_webhook_configuration(CONFIG)


@pytest.fixture()
def vns(admin: client.ApiClient, validating: None) -> Iterator[str]:
    """A fresh namespace that `/validate` sees; waits until the apiserver calls it there."""
    name = f"val-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin).create_namespace(client.V1Namespace(
        metadata=client.V1ObjectMeta(name=name, labels={VALIDATE: "true"})))
    probe = cluster(name, "probe", annotations={**FT, "ray-ft-webhook.io/inject": "maybe"})

    def denied_by_us() -> bool:
        try:
            client.CustomObjectsApi(admin).create_namespaced_custom_object(
                "ray.io", "v1", name, "rayclusters", probe, dry_run="All")
        except ApiException as exc:
            return "ray-ft-webhook" in str(exc.body)
        return False

    processes.wait_until("the apiserver to call /validate in the new namespace", denied_by_us, 30)
    yield name


@pytest.fixture(scope="module")
def kubectl(controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(controlplane.admin_kubeconfig, tmp_path_factory.mktemp("kubectl"))


def cluster(namespace: str, name: str = "rc", **kwargs: Any) -> dict[str, Any]:
    rc = raycluster(name=name, namespace=namespace, **kwargs)
    rc["metadata"].pop("uid")
    return rc


def test_apply_prints_the_findings(kubectl: Kubectl, vns: str) -> None:
    rc = cluster(vns, annotations={**FT, "ray-ft-webhook.io/redis-adress": "redis:6379"},
                 head_start_params={"redis-password": "plain-text-pw-123"})
    out = kubectl.apply(rc)
    assert out.returncode == 0, out.stderr
    assert warnings_of(out) == [
        "unknown annotation ray-ft-webhook.io/redis-adress on the RayCluster is ignored",
        "the Redis password is plain text in the RayCluster; keep it in a Secret",
    ]
    assert "plain-text-pw-123" not in out.stderr


def test_apply_prints_kuberays_conflicts(kubectl: Kubectl, vns: str) -> None:
    out = kubectl.apply(cluster(vns, annotations=FT, options={"redisAddress": "redis:6379"}))
    assert out.returncode == 0, out.stderr
    found = warnings_of(out)
    assert found[0].startswith("KubeRay conflict: ray.io/ft-enabled must not be set together")
    assert found[-1].startswith("KubeRay >= 1.3 will refuse this RayCluster")


def test_bad_annotation_is_refused_at_apply(kubectl: Kubectl, vns: str, admin: client.ApiClient) -> None:
    out = kubectl.apply(cluster(vns, annotations={**FT, "ray-ft-webhook.io/head-reconnect-timeout-s": "-1"}))
    assert out.returncode == 1
    assert (f'{HOOK} denied the request: ray-ft-webhook: RayCluster {vns}/rc: annotation '
            "ray-ft-webhook.io/head-reconnect-timeout-s: '-1' is not a positive integer (seconds)") in out.stderr
    items = client.CustomObjectsApi(admin).list_namespaced_custom_object("ray.io", "v1", vns, "rayclusters")
    assert items["items"] == []


def test_update_that_changes_the_address_says_to_recreate_the_head(kubectl: Kubectl, vns: str) -> None:
    first = cluster(vns, annotations={**FT, **SECRET, "ray-ft-webhook.io/redis-address": "redis-a:6379"})
    assert kubectl.apply(first).returncode == 0
    second = copy.deepcopy(first)
    second["metadata"]["annotations"]["ray-ft-webhook.io/redis-address"] = "redis-b:6379"
    out = kubectl.apply(second)
    assert out.returncode == 0, out.stderr
    assert warnings_of(out) == [
        "changes RAY_REDIS_ADDRESS: re-create the head pod to apply (the webhook acts at pod creation)"]


def test_two_clusters_pinned_to_one_namespace(kubectl: Kubectl, vns: str) -> None:
    pinned = {**FT, **SECRET, "ray.io/external-storage-namespace": "shared-ns"}
    assert kubectl.apply(cluster(vns, "first", annotations=pinned)).returncode == 0
    second = cluster(vns, "second", annotations=pinned)
    expected = f"GCS state at risk: same Redis storage namespace 'shared-ns' as RayCluster {vns}/first"
    # The webhook learns of `first` through its watch: a server-side dry run shows when it has.
    # The webhook learns of `first` through its watch: a server-side dry run shows when it has.
    wait_for("the webhook's cache to hold the first RayCluster",
             lambda: expected in warnings_of(kubectl.apply(second, "--dry-run=server")), 30)
    out = kubectl.apply(second)
    assert out.returncode == 0 and warnings_of(out) == [expected]


def test_apply_works_while_the_webhook_is_down(kubectl: Kubectl, vns: str, webhook: Webhook) -> None:
    webhook.stop()
    try:
        out = kubectl.apply(cluster(vns, annotations={**FT, "ray-ft-webhook.io/head-reconnect-timeout-s": "-1"}))
        assert out.returncode == 0, out.stderr  # failurePolicy: Ignore; the pods would be denied later
        assert warnings_of(out) == []
    finally:
        webhook.start()


# -- Events on the RayCluster --------------------------------------------------------------------------------

def events_of(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    return kubectl.events(namespace, "RayCluster", name)


def head_pod(rc: dict[str, Any], suffix: str) -> dict[str, Any]:
    return pod(rc, "head", suffix=suffix)


def test_head_admission_records_an_event_aggregated_on_repeats(
        admin: client.ApiClient, namespace: str, kubectl: Kubectl) -> None:
    rc = create_cluster(admin, namespace, raycluster(annotations={**FT, **SECRET}))
    create_pod(admin, namespace, head_pod(rc, "aaaaa"))
    (event,) = wait_for("the Event on the RayCluster", lambda: events_of(kubectl, namespace, rc["metadata"]["name"]))
    assert event["reason"] == "GCSFaultToleranceConfigured" and event["type"] == "Normal"
    assert event["reportingComponent"] == "ray-ft-webhook"
    assert event["involvedObject"]["uid"] == rc["metadata"]["uid"]
    assert "RAY_REDIS_ADDRESS=redis.ray-system:6379 (the admin's default --default-redis-address)" in event["message"]
    assert ("REDIS_PASSWORD=Secret redis-password/password (annotation ray-ft-webhook.io/redis-password-secret)"
            in event["message"])

    create_pod(admin, namespace, head_pod(rc, "bbbbb"))
    repeated = wait_for("the repeat counted in the Event's series", lambda: [
        e for e in events_of(kubectl, namespace, rc["metadata"]["name"]) if (e.get("series") or {}).get("count") == 2])
    assert len(repeated) == 1 and len(events_of(kubectl, namespace, rc["metadata"]["name"])) == 1


def test_incomplete_and_denied_heads_record_warnings(admin: client.ApiClient, namespace: str,
                                                     kubectl: Kubectl) -> None:
    incomplete = create_cluster(admin, namespace, raycluster(name="custom", annotations={**FT, **SECRET}))
    custom = head_pod(incomplete, "aaaaa")
    container = custom["spec"]["containers"][0]
    container["args"] = ["exec my-own-entrypoint"]  # no `ray start` to hand the password to
    container["env"] = [e for e in container["env"] if e["name"] != "KUBERAY_GEN_RAY_START_CMD"]
    create_pod(admin, namespace, custom)
    denied = create_cluster(admin, namespace, raycluster(
        name="broken", annotations={**FT, "ray-ft-webhook.io/inject": "maybe"}))
    with pytest.raises(ApiException):
        create_pod(admin, namespace, head_pod(denied, "aaaaa"))

    (event,) = wait_for("the incomplete head's Event", lambda: events_of(kubectl, namespace, "custom"))
    assert event["reason"] == "GCSFaultToleranceIncomplete" and event["type"] == "Warning"
    assert event["message"].startswith("no 'ray start' in the Ray container's args[0]: pass the Redis credentials")
    (event,) = wait_for("the denied head's Event", lambda: events_of(kubectl, namespace, "broken"))
    assert event["reason"] == "GCSFaultToleranceDenied" and event["type"] == "Warning"
    assert "annotation ray-ft-webhook.io/inject: 'maybe' is not" in event["message"]


def test_no_event_for_a_dry_run(admin: client.ApiClient, namespace: str, kubectl: Kubectl) -> None:
    dry = create_cluster(admin, namespace, raycluster(name="dry", annotations={**FT, **SECRET}))
    create_pod(admin, namespace, head_pod(dry, "aaaaa"), dry_run=True)
    real = create_cluster(admin, namespace, raycluster(name="real", annotations={**FT, **SECRET}))
    create_pod(admin, namespace, head_pod(real, "aaaaa"))
    # One queue, one sender, in order: once the later Event is there, the dry run's would be too.
    wait_for("the real head's Event", lambda: events_of(kubectl, namespace, "real"))
    assert events_of(kubectl, namespace, "dry") == []
