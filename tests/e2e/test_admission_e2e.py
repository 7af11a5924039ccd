"""The webhook registered in and called by a real kube-apiserver (issue 3's list, one test each)."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from testkit.kube import rayclusters, wait_for
from testkit.kuberay_pods import pod, quickstart_raycluster, raycluster
from testkit.webhook import WEBHOOK_NAMESPACE, Webhook, make_certs
from webhook.certs import generate as certs
from webhook.cli.render import render
from webhook.core.settings import SecretRef, Settings

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("active")]

SECRET_REF = {"secretKeyRef": {"name": "redis-password-secret", "key": "password"}}


def admin_settings() -> Settings:
    """The Settings the e2e webhook runs with (conftest.ADMIN_ARGS)."""
    return Settings(
        default_redis_address="redis.ray-system:6379", default_redis_password_secret=SecretRef("redis-admin", "pw")
    )


def create_cluster(admin: client.ApiClient, namespace: str, rc: dict[str, Any]) -> dict[str, Any]:
    rc = copy.deepcopy(rc)
    rc["metadata"]["namespace"] = namespace
    rc["metadata"].pop("uid", None)
    return client.CustomObjectsApi(admin).create_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", rc)


def create_pod(admin: client.ApiClient, namespace: str, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    """Create a Pod through the API and return what the apiserver stored (as a plain dict)."""
    body = copy.deepcopy(body)
    body["metadata"]["namespace"] = namespace
    body["metadata"].pop("generateName", None)
    core = client.CoreV1Api(admin)
    kwargs = {"dry_run": "All"} if dry_run else {}
    response = core.create_namespaced_pod(namespace, body, _preload_content=False, **kwargs)
    return json.loads(response.data)


def ray_env(stored: dict[str, Any]) -> list[dict[str, Any]]:
    return stored["spec"]["containers"][0].get("env", [])


def assert_like_render(stored: dict[str, Any], cluster: dict[str, Any], submitted: dict[str, Any]) -> None:
    """The stored pod carries exactly the env and annotations the offline plan computes for it."""
    expected = render(cluster, submitted, admin_settings()).pod
    assert ray_env(stored) == expected["spec"]["containers"][0]["env"]
    assert stored["spec"]["containers"][0]["args"] == expected["spec"]["containers"][0]["args"]
    assert (stored["metadata"].get("annotations") or {}) == (expected["metadata"].get("annotations") or {})


def names(env: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in env]


@pytest.mark.parametrize("form", ["quickstart", "options", "our-annotations-and-admin-defaults"])
def test_head_and_worker_get_exact_configuration(admin: client.ApiClient, namespace: str, webhook: Webhook,
                                                 form: str) -> None:
    """Once the watch has delivered the RayCluster, its pods are answered from the cache: hits, no fallback GET."""
    if form == "quickstart":
        rc = quickstart_raycluster()
    elif form == "options":
        rc = raycluster(options={"redisAddress": "redis:6379", "redisPassword": {"valueFrom": SECRET_REF}})
    else:
        rc = raycluster(
            annotations={"ray.io/ft-enabled": "true", "ray-ft-webhook.io/worker-reconnect-timeout-s": "900"}
        )
    # In step first (a deletion of an earlier test may still be on its way), then with this RayCluster.
    webhook.wait_cached(lambda: rayclusters(admin), "the RayClusters of the earlier tests")
    stored_rc = create_cluster(admin, namespace, rc)
    uid = stored_rc["metadata"]["uid"]
    cached = webhook.wait_cached(lambda: rayclusters(admin), f"RayCluster {namespace}/{rc['metadata']['name']}")
    for role in ("head", "worker"):
        submitted = pod(stored_rc, role)
        stored = create_pod(admin, namespace, submitted)
        assert_like_render(stored, stored_rc, submitted)
        env = {e["name"]: e.get("valueFrom", e.get("value")) for e in ray_env(stored)}
        assert len(names(ray_env(stored))) == len(set(names(ray_env(stored))))
        if role == "head":
            assert env["RAY_external_storage_namespace"] == uid
            assert stored["metadata"]["annotations"]["ray.io/ft-enabled"] == "true"
            assert stored["metadata"]["annotations"]["ray.io/external-storage-namespace"] == uid
            if form == "options":
                assert env["REDIS_PASSWORD"] == SECRET_REF and env["RAY_REDIS_ADDRESS"] == "redis:6379"
                assert "--redis-password=$REDIS_PASSWORD" in stored["spec"]["containers"][0]["args"][0]
            if form == "our-annotations-and-admin-defaults":
                assert env["RAY_REDIS_ADDRESS"] == "redis.ray-system:6379"
                assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-admin", "key": "pw"}}
        else:
            expected_timeout = "900" if form == "our-annotations-and-admin-defaults" else "600"
            assert env["RAY_gcs_rpc_server_reconnect_timeout_s"] == expected_timeout
            assert "RAY_external_storage_namespace" not in env
    used = webhook.cache_stats() - cached
    assert (used.hits, used.misses, used.fallback_gets) == (2, 0, 0), f"head and worker from the cache: {used}"


def test_recreated_raycluster_gets_its_new_uid(admin: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(admin)
    rc = raycluster(name="again", options={"redisAddress": "r:6379"})
    first = create_cluster(admin, namespace, rc)
    head = create_pod(admin, namespace, pod(first, "head", suffix="a"))
    assert head["metadata"]["annotations"]["ray.io/external-storage-namespace"] == first["metadata"]["uid"]
    custom.delete_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", "again")
    second = create_cluster(admin, namespace, rc)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    head = create_pod(admin, namespace, pod(second, "head", suffix="b"))
    assert head["metadata"]["annotations"]["ray.io/external-storage-namespace"] == second["metadata"]["uid"]
    assert {"name": "RAY_external_storage_namespace", "value": second["metadata"]["uid"]} in ray_env(head)


def test_raycluster_created_a_moment_before_its_pods(admin: client.ApiClient, namespace: str, webhook: Webhook) -> None:
    """No wait between the RayCluster and its pods: a cache miss is answered by one bounded GET."""
    before = webhook.metric('ray_ft_webhook_raycluster_fallback_gets_total{result="found"}')
    for i in range(5):
        rc = create_cluster(admin, namespace, raycluster(name=f"fresh-{i}", options={"redisAddress": "r:1"}))
        head = create_pod(admin, namespace, pod(rc, "head"))
        assert head["metadata"]["annotations"]["ray.io/external-storage-namespace"] == rc["metadata"]["uid"]
    after = webhook.metric('ray_ft_webhook_raycluster_fallback_gets_total{result="found"}')
    print(f"fallback GETs in 5 immediate creations: {after - before:.0f}")


def test_dry_run_is_mutated_and_leaves_nothing(admin: client.ApiClient, namespace: str) -> None:
    rc = create_cluster(admin, namespace, quickstart_raycluster())
    out = create_pod(admin, namespace, pod(rc, "worker"), dry_run=True)
    assert {"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "600"} in ray_env(out)
    assert client.CoreV1Api(admin).list_namespaced_pod(namespace).items == []


class _OtherWebhook(BaseHTTPRequestHandler):
    """A second mutating webhook: appends an env var and a label to every pod it sees."""

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        obj = review["request"]["object"]
        ops: list[dict[str, Any]] = []
        if "OTHER_WEBHOOK" not in [e["name"] for e in obj["spec"]["containers"][0].get("env", [])]:
            ops.append(
                {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "OTHER_WEBHOOK", "value": "1"}}
            )
            ops.append({"op": "add", "path": "/metadata/labels/other-webhook", "value": "seen"})
        response: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": True}
        if ops:
            response |= {"patchType": "JSONPatch", "patch": base64.b64encode(json.dumps(ops).encode()).decode()}
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def other_webhook(admin: client.ApiClient, tmp_path: Path) -> Iterator[str]:
    make_certs(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherWebhook)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # Named to sort after ours, so it runs after us and forces a reinvocation.
    name = "zz-other-webhook"
    body = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "other.example.com",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": 5,
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
                "objectSelector": {"matchLabels": {"e2e/other-webhook": "on"}},
                "clientConfig": {
                    "url": f"https://127.0.0.1:{server.server_address[1]}/",
                    "caBundle": certs.ca_bundle((tmp_path / "ca.crt").read_bytes()),
                },
            }
        ],
    }
    api = client.AdmissionregistrationV1Api(admin)
    api.create_mutating_webhook_configuration(body)
    yield name
    api.delete_mutating_webhook_configuration(name)
    server.shutdown()


def test_reinvocation_with_a_second_webhook(admin: client.ApiClient, namespace: str, other_webhook: str) -> None:
    rc = create_cluster(
        admin, namespace, raycluster(options={"redisAddress": "r:1", "redisPassword": {"valueFrom": SECRET_REF}})
    )
    for role in ("head", "worker"):
        submitted = pod(rc, role)
        submitted["metadata"]["labels"]["e2e/other-webhook"] = "on"

        def both_applied(submitted: dict[str, Any] = submitted) -> dict[str, Any] | None:
            out = create_pod(admin, namespace, submitted, dry_run=True)
            return out if out["metadata"]["labels"].get("other-webhook") == "seen" else None

        stored = wait_for("the second webhook to be active", both_applied)
        env = ray_env(stored)
        assert len(names(env)) == len(set(names(env))), names(env)
        assert {"name": "OTHER_WEBHOOK", "value": "1"} in env
        expected = render(rc, submitted, admin_settings()).pod["spec"]["containers"][0]["env"]
        assert [e for e in env if e["name"] != "OTHER_WEBHOOK"] == expected
        assert stored["spec"]["containers"][0]["args"][0].count("--redis-password") <= 1


def test_out_of_scope_pods_are_untouched_and_never_reach_the_webhook(
    admin: client.ApiClient, namespace: str, webhook: Webhook
) -> None:
    core = client.CoreV1Api(admin)
    rc = create_cluster(admin, namespace, quickstart_raycluster())
    plain = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }
    # A node type the selector does not list (redis-cleanup pods do reach the webhook: tests/kuberay).
    other = pod(rc, "head")
    other["metadata"]["labels"]["ray.io/node-type"] = "other"
    orphan = pod(rc, "worker", owner=False)
    del orphan["metadata"]["labels"]["ray.io/cluster"]
    before = webhook.metric("ray_ft_webhook_admissions_total")
    for body in (plain, other, orphan):
        stored = create_pod(admin, namespace, body)
        assert "ray-ft-webhook.io/injected" not in (stored["metadata"].get("annotations") or {})
        assert ray_env(stored) == body["spec"]["containers"][0].get("env", [])
    # A Ray pod in an excluded namespace.
    for excluded in ("kube-system", WEBHOOK_NAMESPACE):
        stored = create_pod(admin, excluded, pod(rc, "worker", suffix=namespace))
        assert "ray-ft-webhook.io/injected" not in (stored["metadata"].get("annotations") or {})
        core.delete_namespaced_pod(stored["metadata"]["name"], excluded)
    assert webhook.metric("ray_ft_webhook_admissions_total") == before, "selectors should keep these away"


def test_denial_reaches_the_client(admin: client.ApiClient, namespace: str) -> None:
    rc = create_cluster(
        admin,
        namespace,
        raycluster(annotations={"ray.io/ft-enabled": "true", "ray-ft-webhook.io/head-reconnect-timeout-s": "soon"}),
    )
    with pytest.raises(ApiException) as err:
        create_pod(admin, namespace, pod(rc, "head"))
    assert err.value.status == 403
    message = json.loads(err.value.body)["message"]
    assert 'admission webhook "pods.ray-ft-webhook.io" denied the request' in message
    assert "ray-ft-webhook.io/head-reconnect-timeout-s: 'soon' is not a positive integer" in message


def test_rbac_is_least_privilege(webhook_identity: Path) -> None:
    auth = client.AuthorizationV1Api(config.new_client_from_config(config_file=str(webhook_identity)))

    def allowed(verb: str, resource: str, group: str = "", namespace: str = "default") -> bool:
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb, resource=resource, group=group, namespace=namespace
                )
            )
        )
        return auth.create_self_subject_access_review(review).status.allowed

    for verb in ("get", "list", "watch"):
        assert allowed(verb, "rayclusters", "ray.io")
    for verb in ("create", "update", "patch", "delete"):
        assert not allowed(verb, "rayclusters", "ray.io")
    for verb, resource, group in [
        ("get", "secrets", ""),
        ("list", "pods", ""),
        ("create", "pods", ""),
        ("get", "configmaps", ""),
        ("patch", "mutatingwebhookconfigurations", "admissionregistration.k8s.io"),
    ]:
        assert not allowed(verb, resource, group), (verb, resource)


def test_failure_policy_when_the_webhook_is_down(admin: client.ApiClient, namespace: str, webhook: Webhook) -> None:
    api = client.AdmissionregistrationV1Api(admin)
    rc = create_cluster(admin, namespace, quickstart_raycluster())
    webhook.stop()
    try:
        with pytest.raises(ApiException) as err:
            create_pod(admin, namespace, pod(rc, "worker", suffix="fail"))
        assert 'failed calling webhook "pods.ray-ft-webhook.io"' in json.loads(err.value.body)["message"]

        config_obj = api.read_mutating_webhook_configuration("ray-ft-webhook")
        config_obj.webhooks[0].failure_policy = "Ignore"
        api.replace_mutating_webhook_configuration("ray-ft-webhook", config_obj)

        def admitted() -> dict[str, Any]:
            return create_pod(admin, namespace, pod(rc, "worker", suffix="ignore"), dry_run=True)

        stored = wait_for("failurePolicy Ignore to take effect", admitted)
        assert "ray-ft-webhook.io/injected" not in (stored["metadata"].get("annotations") or {})
    finally:
        config_obj = api.read_mutating_webhook_configuration("ray-ft-webhook")
        config_obj.webhooks[0].failure_policy = "Fail"
        api.replace_mutating_webhook_configuration("ray-ft-webhook", config_obj)
        webhook.start()
