"""manifests/: every overlay renders with kustomize, validates against the Kubernetes schemas, and holds the
operational properties an admin relies on (scope, failure policy, hardening, least-privilege RBAC)."""

from __future__ import annotations

import functools
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from testkit.ci import kubectl
from testkit.paths import REPO

OVERLAYS = ["cert-manager", "self-managed"]
# The Kubernetes minor of the e2e control plane (hack/testbin/kube/go.mod); schemas of the same version.
K8S_SCHEMA_VERSION = "1.35.0"
NAMESPACE = "ray-ft-webhook"


@functools.cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run([kubectl(), "kustomize", str(REPO / "manifests" / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def one(objs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas(overlay: str) -> None:
    for obj in rendered(overlay):
        if obj["apiVersion"].startswith("cert-manager.io/"):
            assert obj["kind"] in ("Issuer", "Certificate") and obj["spec"]
            continue
        kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_webhook_configuration_is_tightly_scoped(overlay: str) -> None:
    mwc = one(rendered(overlay), "MutatingWebhookConfiguration")
    hook, defaults = mwc["webhooks"]
    assert hook["name"] == "pods.ray-ft-webhook.io" and defaults["name"] == "rayclusters.ray-ft-webhook.io"
    assert defaults["failurePolicy"] == "Ignore" and defaults["sideEffects"] == "None"
    assert defaults["rules"] == [{"apiGroups": ["ray.io"], "apiVersions": ["v1"], "operations": ["CREATE"],
                                  "resources": ["rayclusters"], "scope": "Namespaced"}]
    assert defaults["clientConfig"]["service"]["path"] == "/mutate-raycluster"
    assert hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["failurePolicy"] == "Fail"  # explicit and documented in the manifest
    assert hook["timeoutSeconds"] <= 5
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    assert hook["objectSelector"]["matchExpressions"] == [
        {"key": "ray.io/node-type", "operator": "In", "values": ["head", "worker", "redis-cleanup"]}]
    (ns_rule,) = hook["namespaceSelector"]["matchExpressions"]
    assert ns_rule["operator"] == "NotIn" and {"kube-system", NAMESPACE} <= set(ns_rule["values"])
    assert "RayCluster" in hook["matchConditions"][0]["expression"]
    assert hook["clientConfig"]["service"] == {"name": "ray-ft-webhook", "namespace": NAMESPACE,
                                               "path": "/mutate", "port": 443}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_is_hardened_and_highly_available(overlay: str) -> None:
    objs = rendered(overlay)
    deploy = one(objs, "Deployment")
    spec = deploy["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert deploy["spec"]["replicas"] >= 2
    assert one(objs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert spec["topologySpreadConstraints"]
    assert spec["priorityClassName"] == one(objs, "PriorityClass")["metadata"]["name"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > pre_stop + 10  # preStop + the webhook's graceful shutdown
    svc = one(objs, "Service")
    assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    policy = one(objs, "NetworkPolicy")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]
    config = one(objs, "ConfigMap")
    assert config["data"]["RAY_FT_WEBHOOK_WORKER_RECONNECT_TIMEOUT_S"] == "600"
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]


def rules_of(objs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [rule for o in objs if o["kind"] == kind for rule in o["rules"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_validating_webhook_never_blocks_and_sees_only_ray_objects(overlay: str) -> None:
    (hook,) = one(rendered(overlay), "ValidatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] <= 5 and hook["clientConfig"]["service"]["path"] == "/validate"
    assert hook["rules"] == [{"apiGroups": ["ray.io"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                              "resources": ["rayclusters", "rayservices", "rayjobs"], "scope": "Namespaced"}]
    (ns_rule,) = hook["namespaceSelector"]["matchExpressions"]
    assert ns_rule["operator"] == "NotIn" and {"kube-system", NAMESPACE} <= set(ns_rule["values"])


def test_cert_manager_overlay_reads_rayclusters_and_namespaces_and_records_events_only() -> None:
    objs = rendered("cert-manager")
    assert rules_of(objs, "ClusterRole") == [
        {"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]
    assert rules_of(objs, "Role") == []
    cert = one(objs, "Certificate")
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        assert one(objs, kind)["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
            f"{cert['metadata']['namespace']}/{cert['metadata']['name']}"
    deploy = one(objs, "Deployment")
    tls_volume = next(v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert tls_volume["secret"]["secretName"] == cert["spec"]["secretName"]


def test_self_managed_overlay_rbac_is_limited_to_its_own_objects() -> None:
    objs = rendered("self-managed")
    for rule in rules_of(objs, "Role") + rules_of(objs, "ClusterRole"):
        if rule["resources"] in (["rayclusters"], ["namespaces"]):
            assert rule["verbs"] == ["get", "list", "watch"]
        elif rule["resources"] == ["events"]:
            assert rule["verbs"] == ["create", "patch"]
        elif rule["verbs"] == ["create"]:
            assert rule["resources"] in (["secrets"], ["leases"])  # create cannot be limited by name
        else:
            assert rule["resourceNames"] in (["ray-ft-webhook-tls"], ["ray-ft-webhook-certs"], ["ray-ft-webhook"])
            assert "delete" not in rule["verbs"] and "list" not in rule["verbs"]
    args = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    wanted = {"--cert-secret=ray-ft-webhook-tls", "--webhook-config=ray-ft-webhook", "--service=ray-ft-webhook"}
    assert wanted <= set(args)
