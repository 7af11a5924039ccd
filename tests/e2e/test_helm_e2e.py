"""The Helm chart installed, upgraded and uninstalled with the real helm (hack/helm.sh) on a control plane of its own
(etcd, kube-apiserver and kube-controller-manager, so Deployments, ReplicaSets and Jobs make their pods).

There is no kubelet, so the test plays its part, and only that part: it marks the webhook pods Ready (a second
after they appear, as a readiness probe would), and runs the pre-delete hook Job's container command as a local
process (the product's `ray-ft-webhook certs uninstall`, with exactly the pod's arguments, as the hook's own
ServiceAccount) and reports the pod Succeeded with its exit code. The webhook itself runs as a local `serve` in
self-managed mode, as the chart's ServiceAccount, with the chart's ConfigMap as its environment; the chart's
webhook configurations reach it through the test-only value `webhooks.testOnlyURL`. What is shown:

- install: every object of the release exists (the ServiceMonitor and PrometheusRule accepted by
  prometheus-operator's own CRDs); the replica creates the Secret and Lease and writes the caBundle
  of the Helm-installed configurations; a Ray head pod is mutated through them with the ConfigMap's defaults,
  and a RayCluster in an ft-default Namespace gets `ray.io/ft-enabled` through the second webhook;
- upgrade (a changed default, so the pods roll): at no moment fewer ready webhook pods than replicas, every
  state seen by a watch; Helm keeps the caBundle the webhook wrote (the pod is still mutated);
- uninstall: the hook deletes the webhook configurations while the Service and Deployment still exist, then the
  Secret and Lease; with the replica still running, nothing comes back; Ray pods are created unblocked.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from testkit import chart, kube
from testkit.ci import crds, helm, kubectl
from testkit.controlplane import RAYCLUSTER_CRD, WEBHOOK_USER, ControlPlane, ControlPlaneError
from testkit.kube import wait_for
from testkit.kuberay_pods import FT_ENABLED, pod, raycluster
from testkit.paths import CHART
from testkit.processes import start, stop_process
from testkit.webhook import free_port

pytestmark = pytest.mark.e2e

NS = chart.NAMESPACE
RELEASE = chart.RELEASE
HOOK_USER = f"system:serviceaccount:{NS}:{RELEASE}-uninstall"
INJECTED = "ray-ft-webhook.io/injected"
VALUES = ["--set", "config.defaultRedisAddress=redis.ray-system:6379",
          "--set", "config.defaultRedisPasswordSecret=redis-admin/pw",
          # validated by prometheus-operator's own CRDs (hack/crds.sh)
          "--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true"]
LOCAL_ENV = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(with_controller_manager=True, base_dir=tmp_path_factory.mktemp("helm-controlplane"))
    try:
        plane.start()
    except ControlPlaneError as exc:
        pytest.fail(f"control plane did not start: {exc}")
    yield plane
    plane.stop()


@dataclass
class Helm:
    binary: str
    kubeconfig: Path
    home: Path

    def __call__(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {**LOCAL_ENV, "HELM_CACHE_HOME": str(self.home / "cache"), "HELM_CONFIG_HOME": str(self.home / "config"),
               "HELM_DATA_HOME": str(self.home / "data")}
        out = subprocess.run([self.binary, "--kubeconfig", str(self.kubeconfig), "--namespace", NS, *args],
                             capture_output=True, text=True, timeout=timeout, env=env, check=False)
        assert out.returncode == 0, f"helm {' '.join(args)}:\n{out.stdout}{out.stderr}"
        return out


# Between the hook's end and its report: two of the replica's certificate syncs (--cert-sync-interval-s 1).
HOOK_REPORT_DELAY_S = 2.0


@dataclass
class Kubelet:
    """What the missing kubelet would do for the release's pods: webhook pods Ready a second after they appear;
    the uninstall Job's pod run (its arguments, as the hook's ServiceAccount) and reported with its exit code."""

    core: client.CoreV1Api
    apps: client.AppsV1Api
    hook_kubeconfig: Path
    hook_runs: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    seen: dict[str, float] = field(default_factory=dict)

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                for p in self.core.list_namespaced_pod(NS).items:
                    component = (p.metadata.labels or {}).get("app.kubernetes.io/component")
                    if p.status.phase in ("Succeeded", "Failed") or p.metadata.deletion_timestamp:
                        continue
                    if component == "webhook" and not ready(p):
                        first = self.seen.setdefault(p.metadata.name, time.monotonic())
                        if time.monotonic() - first >= 1.0:
                            self.report(p, running=True)
                    elif component == "uninstall":
                        self.run_hook(p)
            except ApiException:
                pass
            self.stop.wait(0.2)

    def report(self, p: client.V1Pod, running: bool, exit_code: int = 0) -> None:
        (c,) = p.spec.containers
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if running:
            status = {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}],
                "containerStatuses": [{"name": c.name, "image": c.image, "imageID": "", "ready": True,
                                       "restartCount": 0, "started": True, "state": {"running": {"startedAt": now}}}]}
        else:
            status = {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [
                {"name": c.name, "image": c.image, "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                          "startedAt": now, "finishedAt": now}}}]}
        self.core.patch_namespaced_pod_status(p.metadata.name, NS, {"status": status})

    def run_hook(self, p: client.V1Pod) -> None:
        (c,) = p.spec.containers
        # What the cluster looks like when the hook starts: Helm has deleted nothing of the release yet.
        before = {kind: exists(get) for kind, get in (
            ("Deployment", lambda: self.apps.read_namespaced_deployment(RELEASE, NS)),
            ("Service", lambda: self.core.read_namespaced_service(RELEASE, NS)))}
        # The image's entrypoint is `ray-ft-webhook`; the pod has in-cluster credentials, here a kubeconfig.
        out = subprocess.run([sys.executable, "-m", "webhook", *c.args, "--kubeconfig", str(self.hook_kubeconfig)],
                             capture_output=True, text=True, timeout=60, env=LOCAL_ENV, check=False)
        self.hook_runs.append({"args": c.args, "exit": out.returncode, "stdout": out.stdout.splitlines(),
                               "stderr": out.stderr, "before": before})
        # A real kubelet and Job controller take seconds to report the hook done, and Helm deletes the RBAC only
        # then: replicas still running meet the deleted configuration (404) before they lose their RBAC (403).
        # Without this pause the window was the hook's own exit, shorter than the 1 s certificate sync at times.
        self.stop.wait(HOOK_REPORT_DELAY_S)
        self.report(p, running=False, exit_code=out.returncode)


def ready(p: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or ()))


def exists(get: Any) -> bool:
    try:
        get()
    except ApiException as exc:
        assert exc.status == 404, exc
        return False
    return True


@dataclass
class ReadyWatch:
    """Every state of the webhook pods a watch reports: (pods, ready pods) after each event."""

    core: client.CoreV1Api
    states: list[tuple[int, int]] = field(default_factory=list)
    hashes: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    def loop(self) -> None:
        pods: dict[str, bool] = {}
        w = watch.Watch()
        while not self.stop.is_set():
            for event in w.stream(self.core.list_namespaced_pod, NS, timeout_seconds=2,
                                  label_selector="app.kubernetes.io/component=webhook"):
                p = event["object"]
                if event["type"] == "DELETED" or p.metadata.deletion_timestamp:
                    pods.pop(p.metadata.name, None)
                else:
                    pods[p.metadata.name] = ready(p)
                    self.hashes.add(p.metadata.labels.get("pod-template-hash", ""))
                self.states.append((len(pods), sum(pods.values())))
                if self.stop.is_set():
                    break


def background(target: Any) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def create_head(core: client.CoreV1Api, rc: dict[str, Any], suffix: str) -> dict[str, Any]:
    body = pod(rc, "head", suffix=suffix)
    body["metadata"]["name"] = f"{rc['metadata']['name']}-head-{suffix}"
    body["metadata"].pop("generateName", None)
    created: dict[str, Any] = core.api_client.sanitize_for_serialization(
        core.create_namespaced_pod(rc["metadata"]["namespace"], body))
    return created


def env_of(p: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in p["spec"]["containers"][0].get("env", [])}


def test_helm_install_upgrade_uninstall(cp: ControlPlane, tmp_path: Path) -> None:
    admin = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    admission, custom = client.AdmissionregistrationV1Api(admin), client.CustomObjectsApi(admin)
    client.ApiextensionsV1Api(admin).create_custom_resource_definition(RAYCLUSTER_CRD)
    dyn = kube.dynamic_client(admin, tmp_path / "discovery")
    crds_folder = crds("prometheus-operator")
    for plural in ("servicemonitors", "prometheusrules"):
        for crd in yaml.safe_load_all((crds_folder / f"monitoring.coreos.com_{plural}.yaml").read_text()):
            if crd:
                kube.apply(dyn, crd)
    kube.wait_established(admin, ["rayclusters.ray.io", "servicemonitors.monitoring.coreos.com",
                                  "prometheusrules.monitoring.coreos.com"])
    run_helm = Helm(helm(), cp.admin_kubeconfig, tmp_path / "helm")
    port = free_port()
    values = [*VALUES, "--set", f"webhooks.testOnlyURL=https://127.0.0.1:{port}"]
    kubelet = Kubelet(core, apps, cp.write_kubeconfig(tmp_path / "hook.kubeconfig", HOOK_USER))
    threads = [background(kubelet.loop)]
    replica: subprocess.Popen[bytes] | None = None
    log = tmp_path / "replica.log"
    try:
        # -- install --------------------------------------------------------------------------------------------
        began = time.monotonic()
        run_helm("install", RELEASE, str(CHART), "--create-namespace", *values, "--wait", "--timeout", "120s")
        manifest = run_helm("get", "manifest", RELEASE).stdout
        out = subprocess.run([kubectl(), "--kubeconfig", str(cp.admin_kubeconfig), "get", "-f", "-", "-o", "name"],
                             input=manifest, capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        installed = out.stdout.split()
        assert len(installed) == len([d for d in yaml.safe_load_all(manifest) if d]) >= 17
        assert {"servicemonitor.monitoring.coreos.com/ray-ft-webhook",
                "prometheusrule.monitoring.coreos.com/ray-ft-webhook"} <= set(installed)
        print(f"helm install --wait: {len(installed)} objects, 2 replicas ready in {time.monotonic() - began:.1f} s")

        # The webhook: self-managed, as the chart's ServiceAccount, the chart's ConfigMap as its environment.
        configmap = core.read_namespaced_config_map(f"{RELEASE}-config", NS).data
        identity = cp.write_kubeconfig(tmp_path / "webhook.kubeconfig", WEBHOOK_USER)
        certs = tmp_path / "certs"
        replica = start([sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
                         "--kubeconfig", str(identity), "--tls-cert", str(certs / "tls.crt"),
                         "--tls-key", str(certs / "tls.key"), "--cert-secret", f"{RELEASE}-tls",
                         "--webhook-config", RELEASE, "--service", RELEASE, "--cert-namespace", NS,
                         "--cert-ips", "127.0.0.1", "--cert-sync-interval-s", "1"],
                        log=log, env={**LOCAL_ENV, **configmap, "POD_NAME": "local-replica"})
        secret = wait_for("the replica to create the Secret",
                          lambda: exists(lambda: core.read_namespaced_secret(f"{RELEASE}-tls", NS)), 60)
        assert secret and exists(lambda: client.CoordinationV1Api(admin).read_namespaced_lease("ray-ft-webhook-certs",
                                                                                               NS))
        ca = base64.b64decode(core.read_namespaced_secret(f"{RELEASE}-tls", NS).data["ca.crt"])

        def bundles() -> list[bytes]:
            hooks = [*admission.read_mutating_webhook_configuration(RELEASE).webhooks,
                     *admission.read_validating_webhook_configuration(RELEASE).webhooks]
            return [base64.b64decode(h.client_config.ca_bundle or "") for h in hooks]

        wait_for("the caBundle of the Helm-installed configurations", lambda: bundles() == [ca] * 3, 30)

        # A Ray head pod, mutated through the Helm-installed configuration with the ConfigMap's defaults.
        core.create_namespace({"metadata": {"name": "team-a",
                                            "annotations": {"ray-ft-webhook.io/ft-default": "enabled"}}})
        rc = custom.create_namespaced_custom_object("ray.io", "v1", "team-a", "rayclusters", {
            **raycluster(name="rc", namespace="team-a", annotations={FT_ENABLED: "true"}),
            "metadata": {"name": "rc", "annotations": {FT_ENABLED: "true"}}})
        head = wait_for("a head pod admitted through the Helm-installed webhook",
                        lambda: _try(lambda: create_head(core, rc, "install")), 30)
        assert env_of(head)["RAY_REDIS_ADDRESS"] == "redis.ray-system:6379"
        assert env_of(head)["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-admin", "key": "pw"}}
        assert INJECTED in head["metadata"]["annotations"]
        # ft-default, through the second webhook of the MutatingWebhookConfiguration.
        plain = custom.create_namespaced_custom_object("ray.io", "v1", "team-a", "rayclusters", {
            **raycluster(name="plain", namespace="team-a"), "metadata": {"name": "plain"}})
        assert plain["metadata"]["annotations"][FT_ENABLED] == "true"

        # -- upgrade: a changed default rolls the pods; never fewer ready than replicas ----------------------
        wait_for("2 available replicas", lambda: apps.read_namespaced_deployment(RELEASE, NS).status
                 .available_replicas == 2, 60)
        pods_watch = ReadyWatch(core)
        threads.append(background(pods_watch.loop))
        wait_for("the watch to see both ready pods", lambda: pods_watch.states and pods_watch.states[-1] == (2, 2))
        began, first = time.monotonic(), len(pods_watch.states)  # the watch's initial list replays pod by pod
        before_hashes = set(pods_watch.hashes)
        run_helm("upgrade", RELEASE, str(CHART), *values, "--set", "config.workerReconnectTimeoutS=900",
                 "--wait", "--timeout", "120s")
        rolled = time.monotonic() - began
        wait_for("the rollout to finish", lambda: pods_watch.states[-1] == (2, 2)
                 and len(pods_watch.hashes - before_hashes) == 1)
        pods_watch.stop.set()
        states = pods_watch.states[first:]
        assert min(r for _, r in states) >= 2, f"a moment with fewer than 2 ready replicas: {states}"
        assert max(n for n, _ in states) == 3, f"no surge pod seen: {states}"
        new_hash = (pods_watch.hashes - before_hashes).pop()
        assert all(p.metadata.labels["pod-template-hash"] == new_hash for p in core.list_namespaced_pod(
            NS, label_selector="app.kubernetes.io/component=webhook").items)
        print(f"helm upgrade --wait: rolled in {rolled:.1f} s; (pods, ready) after each watch event: {states}")
        assert core.read_namespaced_config_map(f"{RELEASE}-config", NS).data[
            "RAY_FT_WEBHOOK_WORKER_RECONNECT_TIMEOUT_S"] == "900"
        # Helm's three-way merge keeps the caBundle the webhook wrote: Ray pods are still admitted and mutated.
        assert bundles() == [ca] * 3
        assert INJECTED in create_head(core, rc, "upgraded")["metadata"]["annotations"]

        # -- uninstall: the configurations first, nothing left behind, Ray pods unblocked ---------------------
        assert replica.poll() is None
        began = time.monotonic()
        run_helm("uninstall", RELEASE, "--wait", "--timeout", "120s")
        print(f"helm uninstall --wait: {time.monotonic() - began:.1f} s; the hook: {kubelet.hook_runs}")
        (hook,) = kubelet.hook_runs
        assert hook["exit"] == 0, hook["stderr"]
        assert hook["before"] == {"Deployment": True, "Service": True}, "the hook ran before Helm deleted anything"
        assert hook["stdout"] == [f"deleted MutatingWebhookConfiguration {RELEASE}",
                                  f"deleted ValidatingWebhookConfiguration {RELEASE}",
                                  f"deleted Secret {NS}/{RELEASE}-tls", f"deleted Lease {NS}/ray-ft-webhook-certs"]
        # The replica still runs (as one would until its Deployment is gone) and recreates nothing.
        time.sleep(4)  # four of its certificate syncs
        assert replica.poll() is None
        leftovers = {
            "Secret": exists(lambda: core.read_namespaced_secret(f"{RELEASE}-tls", NS)),
            "Lease": exists(lambda: client.CoordinationV1Api(admin).read_namespaced_lease("ray-ft-webhook-certs", NS)),
            "MutatingWebhookConfiguration": exists(lambda: admission.read_mutating_webhook_configuration(RELEASE)),
            "ValidatingWebhookConfiguration": exists(lambda: admission.read_validating_webhook_configuration(RELEASE)),
            "hook ServiceAccount": exists(lambda: core.read_namespaced_service_account(f"{RELEASE}-uninstall", NS)),
            "hook Job": exists(lambda: client.BatchV1Api(admin).read_namespaced_job(f"{RELEASE}-uninstall", NS)),
            "ClusterRole": exists(lambda: client.RbacAuthorizationV1Api(admin).read_cluster_role(RELEASE)),
            "PrometheusRule": exists(lambda: custom.get_namespaced_custom_object(
                "monitoring.coreos.com", "v1", NS, "prometheusrules", RELEASE)),
        }
        assert not any(leftovers.values()), leftovers
        assert core.list_namespaced_secret(NS).items == [] or all(
            s.type == "kubernetes.io/service-account-token" for s in core.list_namespaced_secret(NS).items)
        assert "webhook configuration not found" in log.read_text()
        stop_process(replica)
        replica = None
        created = create_head(core, rc, "after")  # failurePolicy Fail would refuse it if a configuration remained
        assert INJECTED not in created["metadata"].get("annotations", {})
    finally:
        kubelet.stop.set()
        if replica is not None:
            stop_process(replica)
        for thread in threads:
            thread.join(10)
        if log.exists():
            print(f"\n--- local replica ---\n{log.read_text()[-4000:]}")


def _try(call: Any) -> Any:
    """`call()`, or None while the apiserver does not trust the webhook yet (a refused create)."""
    try:
        return call()
    except ApiException as exc:
        if exc.status in (500, 403) or "failed calling webhook" in str(exc.body):
            return None
        raise
