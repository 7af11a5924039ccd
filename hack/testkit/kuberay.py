"""KubeRay's real operator against the local control plane: build it, install it, run it, watch its pods.

Shared by the KubeRay tier (tests/kuberay) and `make demo` (hack/demo.py). The operator is built from the Go
module proxy by hack/kuberay.sh; its CRDs, RBAC and samples are read from the module's source folder in the
Go module cache, so nothing of KubeRay is committed here.

Who wrote what in a pod is established by an observer: a second, no-op mutating webhook registered under a
name that sorts before ours (the apiserver calls mutating webhooks in configuration-name order), so it
records each Ray pod exactly as KubeRay submitted it, after the apiserver's defaulting and before our
webhook. The stored pod must equal that record plus exactly what `ray-ft-webhook.io/injected` lists.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from testkit import kube, processes
from testkit.controlplane import ControlPlane
from testkit.paths import KUBERAY_SCRIPT, KUBERAY_WRAPPERS, cache_dir
from testkit.webhook import PODS_HOOK, free_port, make_certs, webhook_configuration

# The operator's own identity: a ServiceAccount name, presented as a client certificate.
OPERATOR_NAMESPACE = "ray-system"
OPERATOR_SERVICE_ACCOUNT = "kuberay-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"

SAMPLE = "ray-cluster.external-redis.yaml"
FT_FINALIZER = "ray.io/gcs-ft-redis-cleanup-finalizer"
INJECTED = "ray-ft-webhook.io/injected"
GEN_CMD = "KUBERAY_GEN_RAY_START_CMD"
FT_ENV = (
    "RAY_external_storage_namespace",
    "RAY_REDIS_ADDRESS",
    "REDIS_USERNAME",
    "REDIS_PASSWORD",
    "RAY_gcs_rpc_server_reconnect_timeout_s",
)
FT_ANNOTATIONS = ("ray.io/ft-enabled", "ray.io/external-storage-namespace", INJECTED)
# The full text of each flag the webhook may add to `ray start`, by flag name.
FT_FLAGS = {
    "--redis-password": "--redis-password=$REDIS_PASSWORD",
    "--redis-username": "--redis-username=$REDIS_USERNAME",
}


class KubeRayError(RuntimeError):
    """The operator could not be built, installed or started; the message says what and where to look."""


# -- versions and build ----------------------------------------------------------------------------------------


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split("."))


def pinned_versions() -> list[str]:
    """The versions with a wrapper module in hack/kuberay/, oldest first (what hack/kuberay.sh builds)."""
    return sorted((p.parent.name for p in KUBERAY_WRAPPERS.glob("v*/go.mod")), key=version_tuple)


def supports_options(version: str) -> bool:
    """`spec.gcsFaultToleranceOptions` exists from KubeRay 1.3 on; older CRDs prune it (FT then stays off)."""
    return version_tuple(version) >= (1, 3, 0)


def _cache_dir(version: str) -> Path:
    return cache_dir() / "kuberay" / version


@dataclass(frozen=True)
class KubeRayModule:
    """One pinned release's module source folder, as the Go module proxy serves it: CRDs, RBAC, samples."""

    version: str
    source: Path

    def _yaml(self, relative: str) -> list[dict[str, Any]]:
        # libyaml's loader where PyYAML has it: the CRDs are ~4 MB of YAML, 5x faster to read than in pure Python.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return [d for d in yaml.load_all((self.source / relative).read_text(), Loader=loader) if d]

    def crds(self) -> list[dict[str, Any]]:
        """Every CRD of the release: the operator watches RayJobs and RayServices too and will not start without."""
        return [d for p in sorted((self.source / "config/crd/bases").glob("*.yaml")) for d in self._yaml(str(p))]

    def cluster_role(self) -> dict[str, Any]:
        (role,) = self._yaml("config/rbac/role.yaml")
        return role

    def sample(self, name: str = SAMPLE) -> list[dict[str, Any]]:
        return self._yaml(f"config/samples/{name}")


@dataclass(frozen=True)
class KubeRay(KubeRayModule):
    """A release with its operator binary built."""

    binary: Path = Path()
    build_seconds: float = 0.0
    built_now: bool = False


def _run_script(args: list[str]) -> str:
    try:
        return processes.run_script(KUBERAY_SCRIPT, args)
    except processes.CommandFailed as exc:
        raise KubeRayError(str(exc)) from None


def module(version: str) -> KubeRayModule:
    """The release's module source folder (downloaded if needed, checked against the wrapper's go.sum)."""
    source = Path(_run_script(["--source", version]).strip())
    if not (source / "config" / "crd" / "bases").is_dir():
        raise KubeRayError(f"hack/kuberay.sh --source {version} gave {source}, which has no config/crd/bases")
    return KubeRayModule(version, source)


def build(version: str) -> KubeRay:
    """The operator at `version`, built by hack/kuberay.sh if missing (minutes), and its module source folder."""
    was_there = os.access(_cache_dir(version) / "ray-operator", os.X_OK)
    began = time.monotonic()
    folder = _run_script([version]).strip()
    seconds = time.monotonic() - began
    binary = Path(folder) / "ray-operator"
    if not os.access(binary, os.X_OK):
        raise KubeRayError(f"hack/kuberay.sh {version} gave {folder!r}, which holds no ray-operator")
    return KubeRay(version, module(version).source, binary, seconds, not was_there)


# -- applying objects ------------------------------------------------------------------------------------------


def install_crds(api: client.ApiClient, dyn: DynamicClient, kuberay: KubeRayModule, timeout: float = 60) -> None:
    """Apply the release's CRDs (replacing another release's) and wait until each is Established."""
    kube.wait_established(api, [kube.apply(dyn, crd)["metadata"]["name"] for crd in kuberay.crds()], timeout)
    dyn.resources.invalidate_cache()


def install_operator_identity(cp: ControlPlane, api: client.ApiClient, dyn: DynamicClient,
                              kuberay: KubeRayModule, path: Path) -> Path:
    """Bind the release's own ClusterRole (config/rbac/role.yaml) to the operator's identity; its kubeconfig."""
    kube.ensure_namespace(api, OPERATOR_NAMESPACE)
    role = kube.apply(dyn, kuberay.cluster_role())
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": role["metadata"]["name"]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}],
    }
    kube.apply(dyn, binding)
    return cp.write_kubeconfig(path, OPERATOR_USER)


def wait_until_called(api: client.ApiClient, observer: Observer | None = None, timeout: float = 60) -> None:
    """Until the apiserver calls our webhook (and the observer, when given)."""
    kube.wait_until_called(api, (lambda: observer.dry_runs) if observer is not None else None, timeout)


# -- the operator process --------------------------------------------------------------------------------------


class OperatorProcess:
    """KubeRay's operator as a local process: own session, own identity, no leader election, stopped by PID."""

    def __init__(self, kuberay: KubeRay, kubeconfig: Path, workdir: Path) -> None:
        self.kuberay, self.kubeconfig, self.workdir = kuberay, kubeconfig, workdir
        self.log_path = workdir / f"ray-operator-{kuberay.version}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.probe_port = 0
        self.startup_seconds = 0.0
        self.peak_rss_bytes = 0

    def start(self, ready_timeout: float = 60) -> None:
        self.probe_port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "ENABLE_GCS_FT_REDIS_CLEANUP")}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        args = [
            str(self.kuberay.binary),
            f"--kubeconfig={self.kubeconfig}",
            "--enable-leader-election=false",
            "--metrics-addr=0",  # 0 turns controller-runtime's metrics server off
            f"--health-probe-bind-address=127.0.0.1:{self.probe_port}",
        ]
        began = time.monotonic()
        proc = self.proc = processes.start(args, log=self.log_path, env=env, cwd=self.workdir)

        def ready() -> bool:
            if proc.poll() is not None:
                raise KubeRayError(f"ray-operator {self.kuberay.version} exited with {proc.returncode}:\n"
                                   f"{self.logs(40)}")
            conn = http.client.HTTPConnection("127.0.0.1", self.probe_port, timeout=2)
            try:
                conn.request("GET", "/readyz")
                return conn.getresponse().status == 200
            finally:
                conn.close()

        try:
            processes.wait_until(f"ray-operator {self.kuberay.version}'s /readyz", ready, ready_timeout,
                                 ignore=(OSError, http.client.HTTPException))
        except processes.WaitTimeout as exc:
            self.stop()
            raise KubeRayError(f"{exc}:\n{self.logs(40)}") from None
        self.startup_seconds = time.monotonic() - began

    def stop(self, timeout: float = 10) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.peak_rss_bytes = peak_rss_bytes(self.proc.pid)
            processes.stop_process(self.proc, timeout)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the operator (SIGSTOP, then SIGCONT by PID) while something must happen before it acts, e.g. the
        webhook's watch delivering a new RayCluster before the operator creates its pods. Without leader
        election a short stop costs the operator nothing; it then reconciles what it missed."""
        pid = self.pid
        assert pid is not None, f"ray-operator {self.kuberay.version} is not running"
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def logs(self, tail_lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail_lines:])


def peak_rss_bytes(pid: int) -> int:
    """The peak resident set of a live process (VmHWM); 0 when it is gone."""
    return processes.status_kib(pid, "VmHWM") * 1024


# -- the observer webhook --------------------------------------------------------------------------------------


PodKey = tuple[str, str, str, str]


def pod_key(namespace: str, pod: dict[str, Any]) -> PodKey:
    """Namespace, cluster, node type, group: unique for a cluster's head and one-replica worker group."""
    labels = pod["metadata"].get("labels") or {}
    return (namespace, labels.get("ray.io/cluster", ""), labels.get("ray.io/node-type", ""),
            labels.get("ray.io/group", ""))


class _ObserverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ObserverHandler)
        self.lock = threading.Lock()
        self.pods: dict[PodKey, dict[str, Any]] = {}
        self.dry_runs = 0


class _ObserverHandler(BaseHTTPRequestHandler):
    server: _ObserverServer

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req = review["request"]
        with self.server.lock:
            if req.get("dryRun"):
                self.server.dry_runs += 1
            elif req.get("operation") == "CREATE" and req.get("object"):
                self.server.pods[pod_key(req["namespace"], req["object"])] = req["object"]
        body = json.dumps({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": req["uid"], "allowed": True},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Observer:
    """A no-op mutating webhook called before ours; records each Ray pod as KubeRay submitted it."""

    NAME = "00-kuberay-observer"  # sorts before "ray-ft-webhook"

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        make_certs(workdir)
        self.workdir = workdir
        self._server = _ObserverServer()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(workdir / "tls.crt", workdir / "tls.key")
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def configuration(self) -> dict[str, Any]:
        """Our MutatingWebhookConfiguration's rules and selectors, so it sees exactly the pods ours sees."""
        url = f"https://127.0.0.1:{self._server.server_address[1]}/observe"
        mwc = webhook_configuration("", (self.workdir / "ca.crt").read_bytes(), only=PODS_HOOK)
        mwc["metadata"] = {"name": self.NAME}
        for hook in mwc["webhooks"]:
            hook["clientConfig"]["url"] = url
            hook["name"] = "observer.kuberay-tier.test"
            hook["failurePolicy"] = "Ignore"
            hook["reinvocationPolicy"] = "Never"
        return mwc

    def seen(self, namespace: str, stored: dict[str, Any]) -> dict[str, Any] | None:
        with self._server.lock:
            return copy.deepcopy(self._server.pods.get(pod_key(namespace, stored)))

    @property
    def dry_runs(self) -> int:
        with self._server.lock:
            return self._server.dry_runs

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- reading pods ----------------------------------------------------------------------------------------------


def ray_container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def env_list(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return ray_container(pod).get("env") or []


def env_map(pod: dict[str, Any]) -> dict[str, Any]:
    """Env name -> `{"value": ...}` or `{"valueFrom": ...}` (what the entry carries besides its name)."""
    return {e["name"]: {k: v for k, v in e.items() if k != "name"} for e in env_list(pod)}


def args0(pod: dict[str, Any]) -> str:
    args = ray_container(pod).get("args") or [""]
    return str(args[0])


def pod_annotations(pod: dict[str, Any]) -> dict[str, str]:
    return pod["metadata"].get("annotations") or {}


def injected(pod: dict[str, Any]) -> list[str]:
    """What the webhook says it added: annotation keys, env names and flag names, in patch order."""
    return [n for n in pod_annotations(pod).get(INJECTED, "").split(",") if n]


def describe_env(entry: dict[str, Any]) -> str:
    ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
    if ref is not None:
        return f"secret {ref.get('name')}/{ref.get('key')}"
    if "valueFrom" in entry:
        return json.dumps(entry["valueFrom"], sort_keys=True)
    return repr(entry.get("value", ""))


def ft_items(pod: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The FT-relevant settings of a pod: item label -> (the name `injected` would use, the value as text)."""
    items: dict[str, tuple[str, str]] = {}
    for key in FT_ANNOTATIONS:
        if key in pod_annotations(pod):
            items[f"annotation {key}"] = (key, pod_annotations(pod)[key])
    for entry in env_list(pod):
        if entry["name"] in FT_ENV:
            items[f"env {entry['name']}"] = (entry["name"], describe_env(entry))
    for flag in FT_FLAGS:
        match = re.search(rf"(?:^|\s)({re.escape(flag)}(?:=\S*)?)", args0(pod))
        if match:
            items[f"ray start {flag}"] = (flag, match.group(1))
    return items


def split_by_author(pod: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """FT items set by KubeRay and FT items added by the webhook (per the pod's `injected` annotation)."""
    ours = {*injected(pod), INJECTED}
    kuberay: dict[str, str] = {}
    webhook: dict[str, str] = {}
    for label, (name, value) in ft_items(pod).items():
        (webhook if name in ours else kuberay)[label] = value
    return kuberay, webhook


def side_by_side(title: str, kuberay: dict[str, str], webhook: dict[str, str], width: int = 44) -> str:
    """A two-column table: what KubeRay set | what ray-ft-webhook added, one FT item per row."""
    labels = sorted(dict.fromkeys([*kuberay, *webhook]), key=lambda label: label.endswith(INJECTED))
    name_w = max([len(label) for label in labels] + [len("item")])

    def cut(text: str) -> str:
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = [title, f"  {'item':<{name_w}}  {'set by KubeRay':<{width}}  added by ray-ft-webhook"]
    lines.append(f"  {'-' * name_w}  {'-' * width}  {'-' * width}")
    for label in labels:
        lines.append(f"  {label:<{name_w}}  {cut(kuberay.get(label, '')):<{width}}  {webhook.get(label, '')}".rstrip())
    if not labels:
        lines.append("  (no FT settings)")
    return "\n".join(lines)


# -- waiting for KubeRay ---------------------------------------------------------------------------------------


def ray_pods(api: client.ApiClient, namespace: str, cluster: str) -> dict[str, dict[str, Any]]:
    """The cluster's stored head and worker pods by node type (plain dicts, as the apiserver returns them)."""
    resp: Any = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"ray.io/cluster={cluster}", _preload_content=False
    )
    out: dict[str, dict[str, Any]] = {}
    for pod in json.loads(resp.data)["items"]:
        node_type = (pod["metadata"].get("labels") or {}).get("ray.io/node-type", "")
        if node_type in ("head", "worker") and not pod["metadata"].get("deletionTimestamp"):
            out[node_type] = pod
    return out


def wait_for_ray_pods(api: client.ApiClient, namespace: str, cluster: str,
                      timeout: float = 90) -> dict[str, dict[str, Any]]:
    """Wait until KubeRay has created the head and the worker pod (both stay Pending: there is no kubelet)."""
    return kube.wait_for(
        f"KubeRay to create the head and worker pods of {namespace}/{cluster}",
        lambda: (pods := ray_pods(api, namespace, cluster)) and len(pods) == 2 and pods,
        timeout=timeout,
        interval=0.5,
    )


def get_raycluster(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    return cast(dict[str, Any], custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", name))


def remove_finalizers(api: client.ApiClient, namespace: str) -> None:
    """Let every RayCluster and RayService of `namespace` go once the operator is stopped: a RayCluster's Redis
    cleanup Job never finishes here (no kubelet), and nobody would remove KubeRay's finalizer of a RayService."""
    custom = client.CustomObjectsApi(api)
    for plural in ("rayclusters", "rayservices"):
        listed = cast(dict[str, Any], custom.list_namespaced_custom_object("ray.io", "v1", namespace, plural))
        for obj in listed["items"]:
            if obj["metadata"].get("finalizers"):
                with contextlib.suppress(ApiException):
                    custom.patch_namespaced_custom_object(  # a merge patch: null removes the list
                        "ray.io", "v1", namespace, plural, obj["metadata"]["name"], {"metadata": {"finalizers": None}}
                    )


def cleanup_selector(cluster: str) -> str:
    """The labels of a RayCluster's Redis cleanup Job and its pod (the head's, node type `redis-cleanup`)."""
    return f"ray.io/cluster={cluster},ray.io/node-type=redis-cleanup"


def complete_cleanup(api: client.ApiClient, namespace: str, cluster: str, timeout: float = 60) -> None:
    """The rest of a Redis cleanup without a kubelet: mark the cleanup pod Succeeded through the API (what a
    kubelet reports when the line exits 0), then wait for kube-controller-manager's Job controller to complete
    the Job and for KubeRay to remove its finalizer, so RayCluster `cluster` is gone."""
    core, batch, custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
    selector = cleanup_selector(cluster)
    (pod,) = core.list_namespaced_pod(namespace, label_selector=selector).items
    container = pod.spec.containers[0]
    core.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": {
        "phase": "Succeeded",
        "containerStatuses": [{"name": container.name, "image": container.image, "imageID": "", "ready": False,
                               "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
    }})

    def gone() -> bool:
        return not custom.list_namespaced_custom_object(
            "ray.io", "v1", namespace, "rayclusters", field_selector=f"metadata.name={cluster}")["items"]

    # KubeRay removes its finalizer only once the Job is Complete; the garbage collector then deletes the Job
    # with its RayCluster, sometimes before a poll sees the condition: a RayCluster gone counts as well (the
    # caller can read KubeRay's "has been completed" line in the operator's log).
    kube.wait_for(f"the Job controller to complete the cleanup Job of {namespace}/{cluster}",
                  lambda: gone() or any(c.type == "Complete" and c.status == "True"
                                        for j in batch.list_namespaced_job(namespace, label_selector=selector).items
                                        for c in j.status.conditions or ()),
                  timeout=timeout, interval=0.5)
    kube.wait_for(f"KubeRay to remove its finalizer and RayCluster {namespace}/{cluster} to be gone",
                  gone, timeout=timeout, interval=0.5)


# -- the sample and its variants -------------------------------------------------------------------------------


def split_sample(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The sample's RayCluster and everything else in it (Redis Deployment, Service, ConfigMaps, Secret)."""
    (rc,) = [d for d in docs if d["kind"] == "RayCluster"]
    return rc, [d for d in docs if d["kind"] != "RayCluster"]


def without_redis_settings(rc: dict[str, Any], name: str, cluster_annotations: dict[str, str],
                           options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sample's RayCluster with every FT/Redis setting removed, then `cluster_annotations`/`options` set."""
    rc = copy.deepcopy(rc)
    rc["metadata"] = {"name": name, "annotations": dict(cluster_annotations)}
    spec = rc["spec"]
    spec.pop("gcsFaultToleranceOptions", None)
    if options is not None:
        spec["gcsFaultToleranceOptions"] = options
    head = spec["headGroupSpec"]
    head.get("rayStartParams", {}).pop("redis-password", None)
    container = head["template"]["spec"]["containers"][0]
    env = [e for e in container.get("env", []) if e["name"] not in ("RAY_REDIS_ADDRESS", "REDIS_PASSWORD")]
    if env:
        container["env"] = env
    else:
        container.pop("env", None)
    return rc
