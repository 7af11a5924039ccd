"""manifests/chart/ray-ft-webhook with the real helm (built by hack/helm.sh): `helm lint --strict`, `helm template`
for the default values and each notable combination validated against the Kubernetes schemas, bad values
refused by values.schema.json, one truth with the kustomize overlays, the uninstall hook, and the README's
values table generated from the schema. Installing, upgrading and uninstalling for real: tests/e2e/test_helm_e2e.py.
"""

from __future__ import annotations

import copy
import functools
import re
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from testkit import chart
from testkit.ci import helm, kubectl
from testkit.paths import CHART, MANIFESTS, REPO

K8S_SCHEMA_VERSION = "1.35.0"  # as tests/test_manifests.py: the e2e control plane's minor
NAMESPACE = chart.NAMESPACE
HOOK = "helm.sh/hook"

# Notable combinations of values: each renders, passes `helm lint --strict` and validates.
COMBINATIONS: dict[str, list[str]] = {
    "defaults": [],
    "cert-manager": ["--set", "certificates.mode=cert-manager"],
    "monitoring": ["--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
                   "--set", "prometheusRule.apiserverSelector=job=\"apiserver\"",
                   "--set", "prometheusRule.runbookBaseURL=https://wiki.example/ray-ft-webhook"],
    "admin defaults": ["--set", "config.defaultRedisAddress=rediss://redis.ray-system:6380",
                       "--set", "config.defaultRedisPasswordSecret=redis-admin/pw",
                       "--set", "config.defaultRedisCaConfigmap=redis-ca", "--set", "config.headReconnectTimeoutS=120",
                       "--set", "config.onLookupFailure=allow",
                       "--set", "extraConfig.RAY_FT_WEBHOOK_LOOKUP_TIMEOUT_S=3"],
    "fail open, opt-in namespaces, pods webhook only": [
        "--set", "webhooks.pods.failurePolicy=Ignore", "--set", "webhooks.rayclusterDefaults.enabled=false",
        "--set", "webhooks.validate.enabled=false",
        "--set-string", "webhooks.namespaceSelector.matchLabels.ray-ft-webhook\\.io/enabled=true",
        "--set", "webhooks.pods.objectSelector.matchExpressions[0].key=team",
        "--set", "webhooks.pods.objectSelector.matchExpressions[0].operator=Exists"],
    "no optional objects": ["--set", "podDisruptionBudget.enabled=false", "--set", "networkPolicy.enabled=false",
                            "--set", "priorityClass.create=false"],
    "existing PriorityClass, other release name": ["--set", "priorityClass.create=false",
                                                   "--set", "priorityClass.name=system-cluster-critical",
                                                   "--set", "replicaCount=3", "--set", "image.tag=0.2.0"],
}


@functools.cache
def rendered(combination: str, release: str = chart.RELEASE) -> tuple[dict[str, Any], ...]:
    return tuple(chart.template(helm(), *COMBINATIONS[combination], release=release))


def one(objs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def test_lint_strict() -> None:
    for combination, args in COMBINATIONS.items():
        out = subprocess.run([helm(), "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *args],
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0 and "0 chart(s) failed" in out.stdout, f"{combination}:\n{out.stdout}{out.stderr}"


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_templates_validate_against_kubernetes_schemas(combination: str) -> None:
    release = "team-a" if "other release" in combination else chart.RELEASE
    objs = rendered(combination, release)
    for obj in objs:
        if obj["apiVersion"].startswith(("cert-manager.io/", "monitoring.coreos.com/")):
            continue  # CRDs: cert-manager's in the e2e tier, the PrometheusRule by promtool (tests/test_alerts.py)
        kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)
    kinds = {o["kind"] for o in objs}
    assert ("Certificate" in kinds) == (combination == "cert-manager")
    assert ({"ServiceMonitor", "PrometheusRule"} <= kinds) == (combination == "monitoring")
    assert "Namespace" not in kinds  # helm install --create-namespace makes it; uninstall keeps it


def test_combinations_say_what_they_set() -> None:
    """Each combination's values reach the objects (no value silently ignored)."""
    cm = one(rendered("admin defaults"), "ConfigMap")["data"]
    assert cm["RAY_FT_WEBHOOK_DEFAULT_REDIS_ADDRESS"] == "rediss://redis.ray-system:6380"
    assert cm["RAY_FT_WEBHOOK_HEAD_RECONNECT_TIMEOUT_S"] == "120" and cm["RAY_FT_WEBHOOK_LOOKUP_TIMEOUT_S"] == "3"
    assert cm["RAY_FT_WEBHOOK_ON_LOOKUP_FAILURE"] == "allow"
    objs = rendered("fail open, opt-in namespaces, pods webhook only")
    (hook,) = one(objs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["namespaceSelector"]["matchLabels"] == {"ray-ft-webhook.io/enabled": "true"}
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", NAMESPACE]
    assert hook["objectSelector"]["matchExpressions"][1] == {"key": "team", "operator": "Exists"}
    assert not [o for o in objs if o["kind"] == "ValidatingWebhookConfiguration"]
    kinds = {o["kind"] for o in rendered("no optional objects")}
    assert not kinds & {"PodDisruptionBudget", "NetworkPolicy", "PriorityClass"}
    assert "priorityClassName" not in one(rendered("no optional objects"), "Deployment")["spec"]["template"]["spec"]
    objs = rendered("existing PriorityClass, other release name", "team-a")
    deploy = one(objs, "Deployment", "team-a-ray-ft-webhook")
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["template"]["spec"]["priorityClassName"] == "system-cluster-critical"
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "localhost/ray-ft-webhook:0.2.0"
    assert "--webhook-config=team-a-ray-ft-webhook" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]


# Values the schema refuses at `helm install`/`template`, each with the words of helm's message.
BAD_VALUES = {
    "one replica": (["--set", "replicaCount=1"], "/replicaCount': minimum: got 1, want 2"),
    "unknown certificate mode": (["--set", "certificates.mode=vault"], "/certificates/mode': value must be one of"),
    "lower-case failure policy": (["--set", "webhooks.pods.failurePolicy=fail"],
                                  "/webhooks/pods/failurePolicy': value must be one of 'Fail', 'Ignore'"),
    "misspelt value": (["--set", "config.defaultRedisAdress=redis:6379"], "additional properties 'defaultRedisAdress'"),
    "address Ray cannot parse": (["--set", "config.defaultRedisAddress=http://redis:6379"],
                                 "/config/defaultRedisAddress': 'http://redis:6379' does not match pattern"),
    "timeout not a number": (["--set", "config.workerReconnectTimeoutS=ten"], "/config/workerReconnectTimeoutS'"),
    "lookup-failure policy": (["--set", "config.onLookupFailure=retry"], "value must be one of 'deny', 'allow'"),
    "extraConfig outside RAY_FT_WEBHOOK_": (["--set", "extraConfig.LOG=debug"], "invalid propertyName 'LOG'"),
    "extraConfig repeating config": (["--set", "extraConfig.RAY_FT_WEBHOOK_LOG_LEVEL=debug"],
                                     "invalid propertyName 'RAY_FT_WEBHOOK_LOG_LEVEL'"),
    "both CA sources": (["--set", "config.defaultRedisCaSecret=a", "--set", "config.defaultRedisCaConfigmap=b"],
                        "set defaultRedisCaSecret or defaultRedisCaConfigmap, not both"),
    "timeout over the apiserver's 30 s": (["--set", "webhooks.pods.timeoutSeconds=31"], "maximum: got 31, want 30"),
    "test URL not https": (["--set", "webhooks.testOnlyURL=http://127.0.0.1:1"], "/webhooks/testOnlyURL'"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_refused_with_a_clear_message(case: str) -> None:
    args, words = BAD_VALUES[case]
    out = chart.run_template(helm(), *args)
    assert out.returncode != 0, f"{case}: accepted"
    assert words in out.stderr, out.stderr


# -- one truth: the chart with default values is the kustomize overlay -----------------------------------------

KUSTOMIZE_HASH = re.compile(r"^(?P<name>ray-ft-webhook-config)-[a-z0-9]{10}$")


def kustomized(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The overlay's objects by (kind, name), normalised: the Namespace dropped (Helm's release namespace is made by
    `helm install --create-namespace`, and kept by uninstall), the configMapGenerator's hash suffix cut from the
    ConfigMap's name and from the Deployment's reference to it (the chart rolls the pods with a checksum annotation
    instead, which `helmed` checks and drops)."""
    out = subprocess.run([kubectl(), "kustomize", str(MANIFESTS / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    objs = {}
    for obj in (o for o in yaml.safe_load_all(out) if o):
        if obj["kind"] == "Namespace":
            continue
        if (m := KUSTOMIZE_HASH.match(obj["metadata"]["name"])) and obj["kind"] == "ConfigMap":
            obj["metadata"]["name"] = m["name"]
        if obj["kind"] == "Deployment":
            for source in obj["spec"]["template"]["spec"]["containers"][0]["envFrom"]:
                source["configMapRef"]["name"] = KUSTOMIZE_HASH.sub(r"\g<name>", source["configMapRef"]["name"])
        objs[(obj["kind"], obj["metadata"]["name"])] = obj
    return objs


def helmed(objs: tuple[dict[str, Any], ...]) -> dict[tuple[str, str], dict[str, Any]]:
    """The chart's objects by (kind, name), normalised: Helm's own labels dropped, the hooks left out (the pre-delete
    uninstall Job and its RBAC: Helm's lifecycle; kustomize users run `ray-ft-webhook certs uninstall`), and the
    Deployment's checksum/config annotation checked and dropped."""
    result = {}
    for obj in copy.deepcopy(objs):
        if HOOK in obj["metadata"].get("annotations", {}):
            continue
        labels = obj["metadata"]["labels"]
        assert set(chart.HELM_LABELS) <= set(labels), obj["metadata"]["name"]
        for label in chart.HELM_LABELS:
            del labels[label]
        if obj["kind"] == "Deployment":
            template = obj["spec"]["template"]["metadata"]
            assert re.fullmatch(r"[0-9a-f]{64}", template["annotations"].pop("checksum/config"))
            if not template["annotations"]:
                del template["annotations"]
        result[(obj["kind"], obj["metadata"]["name"])] = obj
    return result


@pytest.mark.parametrize(("overlay", "combination"), [("self-managed", "defaults"), ("cert-manager", "cert-manager")])
def test_chart_renders_the_kustomize_overlay_object_by_object(overlay: str, combination: str) -> None:
    want, got = kustomized(overlay), helmed(rendered(combination))
    assert sorted(got) == sorted(want)
    for key, obj in want.items():
        assert got[key] == obj, \
            f"{key} differs:\n--- kustomize\n{yaml.safe_dump(obj)}--- helm\n{yaml.safe_dump(got[key])}"


def test_a_changed_default_rolls_the_pods() -> None:
    """The ConfigMap is read at start: its checksum on the pod template makes `helm upgrade` roll the Deployment."""
    def checksum(*args: str) -> str:
        deploy = one(tuple(chart.template(helm(), *args)), "Deployment")
        return str(deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum() == checksum("--set", "replicaCount=3")
    assert checksum() != checksum("--set", "config.defaultRedisAddress=redis:6379")


# -- uninstall: the webhook configurations first --------------------------------------------------------------

def test_uninstall_hook_deletes_the_configurations_first_with_only_that_power() -> None:
    """Helm deletes Services and Deployments before kinds it does not know (MutatingWebhookConfiguration among them;
    releaseutil.UninstallOrder): a pre-delete hook runs `certs uninstall` before any of it (run for real in
    tests/e2e/test_helm_e2e.py)."""
    for combination, extra in (("defaults", ["--namespace=ray-ft-webhook", "--secret=ray-ft-webhook-tls"]),
                               ("cert-manager", [])):
        hooks = [o for o in rendered(combination) if HOOK in o["metadata"].get("annotations", {})]
        assert {o["metadata"]["annotations"][HOOK] for o in hooks} == {"pre-delete"}
        assert all("hook-succeeded" in o["metadata"]["annotations"]["helm.sh/hook-delete-policy"] for o in hooks)
        job = one(tuple(hooks), "Job")
        weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in hooks}
        assert all(weight < weights["Job"] for kind, weight in weights.items() if kind != "Job")
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["certs", "uninstall", "--webhook-config=ray-ft-webhook", *extra]
        assert job["spec"]["template"]["spec"]["serviceAccountName"] == "ray-ft-webhook-uninstall"
        rules = [r for o in hooks if o["kind"] in ("Role", "ClusterRole") for r in o["rules"]]
        assert {v for r in rules for v in r["verbs"]} == {"delete"}
        assert all(r["resourceNames"] in (["ray-ft-webhook"], ["ray-ft-webhook-tls"], ["ray-ft-webhook-certs"])
                   for r in rules)
        for obj in hooks:
            if obj["kind"] != "Job":
                kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)


# -- the README's values table ----------------------------------------------------------------------------------

def test_readme_values_table_is_the_schema() -> None:
    """The README's "Helm values" table is what `python -m testkit.chart` generates from values.schema.json and
    values.yaml; and the schema declares every value values.yaml has (helm lint --strict checks the types)."""
    readme = (REPO / "README.md").read_text()
    table = chart.values_table()
    assert table in readme, "README's Helm values table is stale: regenerate it with " \
                            "`PYTHONPATH=hack .venv/bin/python -m testkit.chart`"
    documented = {path for path, _, _ in chart.leaves(chart.schema(), chart.defaults())}

    def paths(values: dict[str, Any], prefix: str = "") -> set[str]:
        found = set()
        for key, value in values.items():
            if f"{prefix}{key}" in documented:
                found.add(f"{prefix}{key}")
            else:
                assert isinstance(value, dict), f"{prefix}{key} is not in the schema"
                found |= paths(value, f"{prefix}{key}.")
        return found

    assert paths(chart.defaults()) == documented
    assert all(description for _, _, description in chart.leaves(chart.schema(), chart.defaults()))
