"""`ray-ft-webhook check` against the real kube-apiserver, run as an admin runs it (a subprocess with the admin
kubeconfig), over RayClusters and head pods the webhook (the real `serve`, registered through manifests/'s
MutatingWebhookConfiguration) admitted or never saw:

- complete: FT on through `ray.io/ft-enabled`, the Redis address and password from the admin's defaults, its
  head pod admitted by the webhook;
- incomplete: FT on, and no Redis address Ray can use: `gcsFaultToleranceOptions.redisAddress` gives one Ray
  cannot parse, which is not injected and, being the first source, leaves the admin's default unused;
- pre: FT on and complete, but its head pod was created while the webhook did not select the namespace (the
  MutatingWebhookConfiguration's namespaceSelector excluded it for that one create), as a head created before
  the webhook was installed;
- off: FT off, with a head pod (not counted).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from testkit import kube
from testkit.controlplane import ControlPlane
from testkit.kuberay_pods import pod, raycluster
from testkit.webhook import ADMIN_ARGS

from .test_admission_e2e import create_cluster, create_pod

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("active")]

FT_ON = {"ray.io/ft-enabled": "true"}
INJECTED = "ray-ft-webhook.io/injected"


def run_check(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_FT_WEBHOOK_") and k != "KUBECONFIG"}
    return subprocess.run([sys.executable, "-m", "webhook", "check", "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**clean, "NO_PROXY": "127.0.0.1,localhost"})


def summary(stdout: str) -> list[list[str]]:
    """The summary table's rows (header included), cells split on the column gaps."""
    lines = stdout.split("\n\n", 1)[0].splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines]


def only_progress(stderr: str) -> bool:
    """stderr holds nothing but progress lines (there are none when the run is quick)."""
    return all(line.startswith("ray-ft-webhook check: ") and "error" not in line for line in stderr.splitlines())


def new_namespace(admin: client.ApiClient) -> str:
    name = f"e2e-check-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def admitted_head(admin: client.ApiClient, namespace: str, rc: dict[str, Any]) -> dict[str, Any]:
    stored = create_cluster(admin, namespace, rc)
    head = create_pod(admin, namespace, pod(stored, "head"))
    assert INJECTED in head["metadata"]["annotations"]
    return stored


def _mutated(admin: client.ApiClient, namespace: str, body: dict[str, Any]) -> bool:
    probe = copy.deepcopy(body)
    probe["metadata"]["name"] += "-probe"
    return INJECTED in (create_pod(admin, namespace, probe, dry_run=True)["metadata"].get("annotations") or {})


@pytest.fixture()
def webhook_ignores(admin: client.ApiClient) -> Iterator[Any]:
    """A context in which the MutatingWebhookConfiguration does not select one namespace, as before the webhook
    was installed; restored (and seen to be called again) afterwards."""
    api = client.AdmissionregistrationV1Api(admin)

    def set_excluded(extra: list[str]) -> None:
        mwc = api.read_mutating_webhook_configuration("ray-ft-webhook")
        expression = mwc.webhooks[0].namespace_selector.match_expressions[0]
        expression.values = ["kube-system", "ray-ft-webhook", *extra]
        api.replace_mutating_webhook_configuration("ray-ft-webhook", mwc)

    @contextlib.contextmanager
    def ignoring(namespace: str, body: dict[str, Any]) -> Iterator[None]:
        set_excluded([namespace])
        try:
            kube.wait_for("the webhook to stop selecting the namespace", lambda: not _mutated(admin, namespace, body))
            yield
        finally:
            set_excluded([])
            kube.wait_for("the webhook to select the namespace again", lambda: _mutated(admin, namespace, body))

    yield ignoring


def test_check_a_mixed_namespace_table_json_and_exit_codes(
    admin: client.ApiClient, controlplane: ControlPlane, webhook_ignores: Any
) -> None:
    mixed, clean = new_namespace(admin), new_namespace(admin)
    kubeconfig = controlplane.admin_kubeconfig

    admitted_head(admin, mixed, raycluster(name="complete", annotations=FT_ON))
    admitted_head(admin, mixed, raycluster(name="incomplete", options={"redisAddress": "http://redis:6379"}))
    off = create_cluster(admin, mixed, raycluster(name="off"))
    create_pod(admin, mixed, pod(off, "head"))
    pre = create_cluster(admin, mixed, raycluster(name="pre", annotations=FT_ON))
    with webhook_ignores(mixed, pod(pre, "head")):
        head = create_pod(admin, mixed, pod(pre, "head"))
    assert INJECTED not in (head["metadata"].get("annotations") or {})
    admitted_head(admin, clean, raycluster(name="complete", annotations=FT_ON))

    out = run_check(kubeconfig, "-n", mixed, "-o", "table", *ADMIN_ARGS)
    assert out.returncode == 1, out.stderr
    assert only_progress(out.stderr), out.stderr
    assert summary(out.stdout) == [
        ["NAMESPACE", "RAYCLUSTER", "FT", "HEAD", "STATUS"],
        [mixed, "complete", "on", "carries the configuration", "complete"],
        [mixed, "incomplete", "on", "carries the configuration", "incomplete"],
        [mixed, "off", "off", "-", "-"],
        [mixed, "pre", "on", "re-create the head to apply", "incomplete"],
    ]
    print(out.stdout)
    blocks = {block.splitlines()[0].split(":")[0]: block for block in out.stdout.split("\n\n")[1:]}
    complete = [re.split(r"\s{2,}", line.strip()) for line in blocks[f"{mixed}/complete"].splitlines()]
    assert ["RAY_REDIS_ADDRESS", "redis.ray-system:6379", "the admin's default --default-redis-address"] in complete
    assert ["REDIS_PASSWORD", "Secret redis-admin/pw",
            "the admin's default --default-redis-password-secret"] in complete
    assert ("  incomplete: GCS fault tolerance is on but no Redis address is set: Ray keeps GCS state in memory"
            in blocks[f"{mixed}/incomplete"].splitlines())
    assert ("    missing on the head: ray.io/ft-enabled, ray.io/external-storage-namespace, "
            "RAY_external_storage_namespace, RAY_REDIS_ADDRESS, REDIS_PASSWORD, --redis-password"
            in blocks[f"{mixed}/pre"].splitlines())
    assert blocks[f"{mixed}/off"].splitlines() == [
        f"{mixed}/off: FT off (no ray.io/ft-enabled=true annotation and no spec.gcsFaultToleranceOptions)",
        "  head pod off-head-x7k2p: not checked (the webhook gives it nothing)"]

    # JSON, one object per page (--chunk-size 1 follows the apiserver's continue tokens), the admin's defaults
    # read from the webhook's ConfigMap as kustomize generates it (NAME-<hash>).
    client.CoreV1Api(admin).create_namespaced_config_map(clean, {
        "metadata": {"name": "ray-ft-webhook-config-5f7h9k2m4t"},
        "data": {"RAY_FT_WEBHOOK_DEFAULT_REDIS_ADDRESS": "redis.ray-system:6379",
                 "RAY_FT_WEBHOOK_DEFAULT_REDIS_PASSWORD_SECRET": "redis-admin/pw",
                 "RAY_FT_WEBHOOK_WORKER_RECONNECT_TIMEOUT_S": "600", "RAY_FT_WEBHOOK_HEAD_RECONNECT_TIMEOUT_S": "",
                 "RAY_FT_WEBHOOK_ON_LOOKUP_FAILURE": "deny", "RAY_FT_WEBHOOK_LOG_LEVEL": "info"},
    })
    config_from = ["--config-from", f"{clean}/ray-ft-webhook-config"]
    out = run_check(kubeconfig, "-n", mixed, "-o", "json", "--chunk-size", "1", *config_from)
    assert out.returncode == 1, out.stderr
    reports = {r["name"]: r for r in json.loads(out.stdout)}
    assert {name: (r["ft"], r["head"]["status"], r["status"]) for name, r in reports.items()} == {
        "complete": ("on", "carries the configuration", "complete"),
        "incomplete": ("on", "carries the configuration", "incomplete"),
        "off": ("off", "-", "-"),
        "pre": ("on", "re-create the head to apply", "incomplete"),
    }
    assert {"name": "RAY_REDIS_ADDRESS", "value": "redis.ray-system:6379",
            "source": "the admin's default --default-redis-address"} in reports["complete"]["values"]
    assert reports["incomplete"]["gaps"] == [
        "GCS fault tolerance is on but no Redis address is set: Ray keeps GCS state in memory"]
    assert reports["pre"]["head"]["pod"] == "pre-head-x7k2p"

    # Every namespace, without the admin's defaults: both namespaces are listed, and the heads that carry the
    # defaults carry values the webhook (run that way) would no longer inject: stale.
    out = run_check(kubeconfig, "-A", "-o", "json")
    assert out.returncode == 1
    reports = {(r["namespace"], r["name"]): r for r in json.loads(out.stdout)}
    assert {(mixed, "complete"), (mixed, "pre"), (clean, "complete")} <= set(reports)
    stale = reports[(mixed, "complete")]["head"]
    assert stale["status"] == "stale: re-create the head to apply"
    assert "RAY_REDIS_ADDRESS: the head has 'redis.ray-system:6379', now none" in stale["stale"]

    # A namespace with only the complete one: exit 0. It is the kubeconfig's current namespace, the default.
    in_clean = Path(f"{kubeconfig}.{clean}")
    config = json.loads(kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = clean
    in_clean.write_text(json.dumps(config))
    out = run_check(in_clean, *config_from)
    assert out.returncode == 0, out.stdout + out.stderr
    assert summary(out.stdout)[1:] == [[clean, "complete", "on", "carries the configuration", "complete"]]


def test_check_as_an_identity_that_may_not_list_pods_exits_2(webhook_identity: Path) -> None:
    """The webhook's own least-privilege identity may list RayClusters but not pods: one line, exit 2."""
    out = run_check(webhook_identity, "-n", "default")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == "ray-ft-webhook check: error: Kubernetes API: HTTP 403 Forbidden\n"


def test_check_with_an_unusable_configmap_exits_2(admin: client.ApiClient, controlplane: ControlPlane) -> None:
    namespace = new_namespace(admin)
    out = run_check(controlplane.admin_kubeconfig, "--config-from", f"{namespace}/ray-ft-webhook-config")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"ray-ft-webhook check: error: ConfigMap {namespace}/ray-ft-webhook-config not found\n"
    client.CoreV1Api(admin).create_namespaced_config_map(namespace, {
        "metadata": {"name": "ray-ft-webhook-config"}, "data": {"RAY_FT_WEBHOOK_WORKER_RECONNECT_TIMEOUT_S": "soon"}})
    out = run_check(controlplane.admin_kubeconfig, "--config-from", f"{namespace}/ray-ft-webhook-config")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (f"ray-ft-webhook check: error: ConfigMap {namespace}/ray-ft-webhook-config: "
                          "RAY_FT_WEBHOOK_WORKER_RECONNECT_TIMEOUT_S: 'soon' is not a positive integer\n")
