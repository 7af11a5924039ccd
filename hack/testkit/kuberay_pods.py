"""The one model of the Ray pods KubeRay builds from a RayCluster, for KubeRay v1.6.2 and v1.2.2, plus the
RayClusters the tests use.

Written for this project from reading KubeRay's pod builder (ray-operator/controllers/ray/common/pod.go and
the head/worker builders of raycluster_controller.go in the pinned modules; nothing is copied). The KubeRay
tier checks it against the real operators field by field (tests/kuberay/test_pod_model.py), so it cannot
drift. What it models, for a RayCluster without autoscaling, auth, top-level `resources`/`labels` or GPUs:

- labels (KubeRay's seven, over the template's; v1.6.2 also `ray.io/worker-group-replica-index` on workers),
  `generateName`, namespace, the controller ownerReference, and v1.6.2's `ray.io/kuberay-version` annotation
  on the head (not its `ray.io/upgrade-strategy-recreate-hash`, a hash of the RayCluster's Go struct);
- the Ray container (`containers[0]`): the `ray start` line built from rayStartParams (defaults added, keys
  sorted (see below), `num-cpus`/`memory` from the container's resources, each flag written as ` --key=value ` so
  flags are two spaces apart), `ulimit -n 65536; <line>` in args[0] under the command `/bin/bash -c --`
  (v1.6.2) or `/bin/bash -lc --` (v1.2.2); the env KubeRay appends, in its order; the `metrics` port;
  the `/dev/shm` emptyDir and its mount;
- the workers' `wait-gcs-ready` init container (the template's env plus FQ_RAY_IP and RAY_IP, fixed
  resources). Its script is our own loop with the same `ray health-check --address` call, not KubeRay's text;
- KubeRay's own GCS FT step (`kuberay_ft=True`): the `ray.io/ft-enabled` annotation (written even when FT is
  off), and with FT on the storage namespace (annotation and env), the worker's 600 s reconnect timeout and,
  from v1.3 on, the Redis env of `gcsFaultToleranceOptions`.

Differences between the versions: the shell flag above; v1.2.2 writes the `ray start` flags in Go's map
order, different from pod to pod (the model sorts them, as v1.6.2 does); v1.2.2 gives every Ray container a
`REDIS_PASSWORD` (empty unless rayStartParams has `redis-password`) and writes the FT annotations on workers
too, v1.6.2 only on the head and adds RAY_CLUSTER_NAMESPACE and the replica index label; v1.6.2 takes
`num-cpus` from the CPU request when there is no limit; the usage-stats tag names the version.

Not modelled: the liveness/readiness probes KubeRay adds, and the apiserver's defaults (image pull policy,
termination message, DNS and scheduler fields, restartPolicy, port protocol, tolerations, ...), except
`fieldRef.apiVersion: v1` inside env entries, which the webhook copies and compares.

By default (`kuberay_ft=False`) the FT step is left out: the unit, server, e2e and real-Ray tiers ask the
webhook about a pod in which every FT value is still the webhook's to inject.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

REDIS_SECRET = "redis-password-secret"
QUICKSTART_UID = "6a2f1e0c-9d7b-4c1e-8f3a-2b5d7e9c1a44"
VERSIONS = ("v1.2.2", "v1.6.2")
DEFAULT_VERSION = "v1.6.2"
LEGACY = "v1.2.2"
CLUSTER_DOMAIN = "cluster.local"
DEFAULT_HEAD_PORT = "6379"
METRICS_PORT = 8080
DASHBOARD_AGENT_LISTEN_PORT = "52365"
WORKER_TIMEOUT_S = "600"
FT_ENABLED = "ray.io/ft-enabled"
KUBERAY_VERSION = "ray.io/kuberay-version"
# v1.6.2 also writes a hash of the RayCluster's spec on its head pod; the model leaves it out.
RECREATE_HASH = "ray.io/upgrade-strategy-recreate-hash"
STORAGE_NAMESPACE = "ray.io/external-storage-namespace"
# rayStartParams whose value "true"/"false" KubeRay writes as `--key=value` rather than as a bare switch.
_VALUED_BOOLEANS = ("log-color", "include-dashboard")


def env_secret(name: str, secret: str, key: str = "password") -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def raycluster(
    name: str = "raycluster-external-redis",
    namespace: str = "default",
    uid: str = QUICKSTART_UID,
    annotations: dict[str, str] | None = None,
    head_env: list[dict[str, Any]] | None = None,
    head_start_params: dict[str, str] | None = None,
    options: dict[str, Any] | None = None,
    worker_env: list[dict[str, Any]] | None = None,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A RayCluster with one worker group `small-group`; `resources` go on both Ray containers."""
    containers: list[dict[str, Any]] = []
    for container_name, env in (("ray-head", head_env), ("ray-worker", worker_env)):
        container: dict[str, Any] = {"name": container_name, "image": "rayproject/ray:2.60.0"}
        if env is not None:
            container["env"] = env
        if resources is not None:
            container["resources"] = copy.deepcopy(resources)
        containers.append(container)
    spec: dict[str, Any] = {
        "rayVersion": "2.60.0",
        "headGroupSpec": {
            "rayStartParams": dict(head_start_params if head_start_params is not None else {"num-cpus": "0"}),
            "template": {"spec": {"containers": [containers[0]]}},
        },
        "workerGroupSpecs": [{
            "groupName": "small-group", "replicas": 1, "minReplicas": 1, "maxReplicas": 10, "rayStartParams": {},
            "template": {"spec": {"containers": [containers[1]]}},
        }],
    }
    if options is not None:
        spec["gcsFaultToleranceOptions"] = options
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": metadata, "spec": spec}


def quickstart_raycluster(**overrides: Any) -> dict[str, Any]:
    """The quick start's form: `ray.io/ft-enabled`, head RAY_REDIS_ADDRESS, password from a Secret."""
    args: dict[str, Any] = {
        "annotations": {FT_ENABLED: "true"},
        "head_env": [{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}, env_secret("REDIS_PASSWORD", REDIS_SECRET)],
        "head_start_params": {"num-cpus": "0", "redis-password": "$REDIS_PASSWORD"},
    }
    args.update(overrides)
    return raycluster(**args)


def head_service_fqdn(cluster: dict[str, Any]) -> str:
    meta = cluster["metadata"]
    return f"{meta['name']}-head-svc.{meta.get('namespace', 'default')}.svc.{CLUSTER_DOMAIN}"


def ft_enabled(cluster: dict[str, Any], version: str = DEFAULT_VERSION) -> bool:
    """KubeRay's rule: the annotation says "true" (any case) or, from v1.3 on, the options are present."""
    annotation = (cluster["metadata"].get("annotations") or {}).get(FT_ENABLED, "")
    options = "gcsFaultToleranceOptions" in cluster["spec"] and version != LEGACY
    return annotation.lower() == "true" or options


def start_params(cluster: dict[str, Any], role: str, group: str = "small-group",
                 version: str = DEFAULT_VERSION, kuberay_ft: bool = False) -> dict[str, str]:
    """The rayStartParams KubeRay renders for `role`: the group's own plus its defaults and resources."""
    spec = _group_spec(cluster, role, group)
    params = dict(spec.get("rayStartParams") or {})
    if role == "worker":
        params.setdefault("address", f"{head_service_fqdn(cluster)}:{_head_port(cluster)}")
    else:
        params.setdefault("dashboard-host", "0.0.0.0")
    params.setdefault("metrics-export-port", str(METRICS_PORT))
    params["block"] = "true"
    params.setdefault("dashboard-agent-listen-port", DASHBOARD_AGENT_LISTEN_PORT)
    options = cluster["spec"].get("gcsFaultToleranceOptions")
    if kuberay_ft and role == "head" and options is not None and ft_enabled(cluster, version):
        for field, param in (("redisUsername", "redis-username"), ("redisPassword", "redis-password")):
            if options.get(field) is not None:
                params[param] = f"$REDIS_{field[5:].upper()}"
    resources = spec["template"]["spec"]["containers"][0].get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    cpu = limits.get("cpu") or (requests.get("cpu") if version != LEGACY else None)
    if "num-cpus" not in params and cpu and _quantity(cpu):
        params["num-cpus"] = str(math.ceil(_quantity(cpu)))
    if "memory" not in params and limits.get("memory") and _quantity(limits["memory"]):
        params["memory"] = str(math.ceil(_quantity(limits["memory"])))
    return params


def ray_start_command(params: dict[str, str], role: str) -> str:
    """The `ray start` line (KUBERAY_GEN_RAY_START_CMD): flags sorted, each written as ` --key=value `."""
    flags = ""
    for key in sorted(params):
        value = str(params[key])  # the unit tests also give odd types, which the apiserver would refuse
        if value.lower() in ("true", "false") and key not in _VALUED_BOOLEANS:
            flags += f" --{key} " if value.lower() == "true" else ""
        else:
            flags += f" --{key}={value} "
    return f"ray start {'--head ' if role == 'head' else ''}{flags}"


def pod(cluster: dict[str, Any], role: str = "head", group: str = "small-group", suffix: str = "x7k2p",
        owner: bool = True, managed_fields: bool = False, version: str = DEFAULT_VERSION,
        kuberay_ft: bool = False, replica_index: int = 0) -> dict[str, Any]:
    """The Pod KubeRay `version` creates for `cluster` (`role` head or worker of `group`), as submitted.

    `kuberay_ft` adds KubeRay's own GCS FT step; `suffix` stands in for the random end of the generated name;
    `owner=False` drops the ownerReference; `managed_fields` adds a field manager entry of realistic size.
    """
    if version not in VERSIONS:
        raise ValueError(f"KubeRay {version} is not modelled (one of {', '.join(VERSIONS)})")
    meta = cluster["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    head = role == "head"
    template = copy.deepcopy(_group_spec(cluster, role, group)["template"])
    pod_spec = template["spec"]
    container = pod_spec["containers"][0]
    template_env = copy.deepcopy(container.get("env") or [])
    params = start_params(cluster, role, group, version, kuberay_ft)
    command = ray_start_command(params, role)
    fqdn = head_service_fqdn(cluster)

    annotations = dict((template.get("metadata") or {}).get("annotations") or {})
    if head and version != LEGACY:
        annotations[KUBERAY_VERSION] = version
    env = list(template_env)
    if kuberay_ft:
        annotations.update(_ft_annotations(cluster, head, version))
        if version != LEGACY:
            env += _ft_env(cluster, head, env, annotations)
    if not head:
        pod_spec["initContainers"] = [*pod_spec.get("initContainers", []),
                                      _wait_gcs_ready(container, fqdn, cluster, version)]
    if not any(p.get("name") == "metrics" for p in container.get("ports") or []):
        container["ports"] = [*(container.get("ports") or []), {"containerPort": METRICS_PORT, "name": "metrics"}]
    if "plasma-directory" not in params and not any(
            m.get("mountPath") == "/dev/shm" for m in container.get("volumeMounts") or []):
        if not any(v.get("name") == "shared-mem" for v in pod_spec.get("volumes") or []):
            empty_dir: dict[str, Any] = {"medium": "Memory"}
            resources = container.get("resources") or {}
            memory = (resources.get("limits") or {}).get("memory") or (resources.get("requests") or {}).get("memory")
            if memory:
                empty_dir["sizeLimit"] = memory
            pod_spec["volumes"] = [*(pod_spec.get("volumes") or []), {"name": "shared-mem", "emptyDir": empty_dir}]
        container["volumeMounts"] = [*(container.get("volumeMounts") or []),
                                     {"mountPath": "/dev/shm", "name": "shared-mem"}]
    given = "".join(f" {part} " for part in [*(container.get("command") or []), *(container.get("args") or [])])
    if "ray start" not in given and annotations.get("ray.io/overwrite-container-cmd", "").lower() != "true":
        container["command"] = _bash(version)
        generated = f"ulimit -n 65536; {command}"
        container["args"] = [f"{given} && {generated}" if given else generated]
    for init in pod_spec.get("initContainers", []):
        init["env"] = [*(init.get("env") or []), {"name": "FQ_RAY_IP", "value": fqdn},
                       {"name": "RAY_IP", "value": fqdn.split(".")[0]}]
    container["env"] = env + _kuberay_env(cluster, head, env, command, params, annotations, version)

    metadata: dict[str, Any] = {
        "generateName": f"{name}-head-" if head else f"{name}-{group}-worker-",
        "name": f"{name}-head-{suffix}" if head else f"{name}-{group}-worker-{suffix}",
        "namespace": namespace,
        "labels": _labels(template, name, role, group, version, replica_index),
    }
    if annotations:
        metadata["annotations"] = annotations
    if owner:
        metadata["ownerReferences"] = [{
            "apiVersion": "ray.io/v1", "kind": "RayCluster", "name": name, "uid": meta.get("uid", ""),
            "controller": True, "blockOwnerDeletion": True,
        }]
    if managed_fields:
        metadata["managedFields"] = _managed_fields(container)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


JOB_UID = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
# The line of KubeRay's cleanup pod, before and after the (optional) username argument; v1.2.2's differs in the
# echo's wording and passes `parsed.password` without a default.
_CLEANUP_ECHO = {
    LEGACY: "To get more information about manually delete the storage namespace in Redis and remove the "
            "RayCluster's finalizer, please check {docs} for more details.",
    DEFAULT_VERSION: "To get more information about manually deleting the storage namespace in Redis and removing "
                     "the RayCluster's finalizer, please check {docs} for more details.",
}
_CLEANUP_DOCS = "https://docs.ray.io/en/master/cluster/kubernetes/user-guides/kuberay-gcs-ft.html"


def cleanup_line(version: str = DEFAULT_VERSION, username: bool = False) -> str:
    """args[0] of KubeRay's Redis cleanup pod; `username` when REDIS_USERNAME was in the head's env (>= v1.3)."""
    echo = _CLEANUP_ECHO[version].format(docs=_CLEANUP_DOCS)
    password = "parsed.password" if version == LEGACY else "parsed.password or ''"
    user = "username=os.getenv('REDIS_USERNAME', parsed.username), " if username and version != LEGACY else ""
    return (
        f'echo "{echo}" && python -c "from ray._private.gcs_utils import cleanup_redis_storage; '
        "from urllib.parse import urlparse; import os; import sys; "
        "redis_address = os.getenv('RAY_REDIS_ADDRESS', '').split(',')[0]; "
        "redis_address = redis_address if '://' in redis_address else 'redis://' + redis_address; "
        "parsed = urlparse(redis_address); "
        f"sys.exit(1) if not cleanup_redis_storage(host=parsed.hostname, port=parsed.port, {user}"
        f"password=os.getenv('REDIS_PASSWORD', {password}), use_ssl=parsed.scheme=='rediss', "
        "storage_namespace=os.getenv('RAY_external_storage_namespace')) else None\""
    )


def cleanup_pod(cluster: dict[str, Any], version: str = DEFAULT_VERSION, kuberay_ft: bool = True,
                suffix: str = "q4w8z") -> dict[str, Any]:
    """The pod of the Redis cleanup Job KubeRay `version` creates when the FT RayCluster `cluster` is deleted.

    KubeRay's `buildRedisCleanupJob` builds the head pod from the RayCluster (not the admitted head pod), sets
    `ray.io/node-type: redis-cleanup`, keeps only the Ray container with the cleanup line, no probes, two Redis
    retry variables and fixed resources; kube-controller-manager creates the pod from the Job's template, so
    its controller is the Job (`job-name` and the controller-uid labels are the Job controller's).
    """
    name = cluster["metadata"]["name"]
    job = f"{name}-redis-cleanup"[:63]
    out = pod(cluster, "head", owner=False, version=version, kuberay_ft=kuberay_ft)
    metadata = out["metadata"]
    # `ray.io/kuberay-version` is written by createHeadPod, not buildHeadPod: the cleanup pod has none.
    annotations = metadata.get("annotations") or {}
    annotations.pop(KUBERAY_VERSION, None)
    if not annotations:
        metadata.pop("annotations", None)
    metadata["labels"]["ray.io/node-type"] = "redis-cleanup"
    metadata["labels"].update({"batch.kubernetes.io/controller-uid": JOB_UID, "controller-uid": JOB_UID,
                               "batch.kubernetes.io/job-name": job, "job-name": job})
    metadata["generateName"], metadata["name"] = f"{job}-", f"{job}-{suffix}"
    metadata["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": JOB_UID,
                                    "controller": True, "blockOwnerDeletion": True}]
    spec = out["spec"]
    container = spec["containers"][0]
    spec["containers"] = [container]
    env = container["env"]
    container["command"] = _bash(version)
    container["args"] = [cleanup_line(version, username=any(e["name"] == "REDIS_USERNAME" for e in env))]
    env += [{"name": "RAY_redis_db_connect_retries", "value": "120"},
            {"name": "RAY_redis_db_connect_wait_milliseconds", "value": "500"}]
    fixed = {"cpu": "200m", "memory": "256Mi"}
    container["resources"] = {"limits": dict(fixed), "requests": dict(fixed)}
    spec["restartPolicy"] = "Never"
    return out


def _bash(version: str) -> list[str]:
    """The shell KubeRay runs generated lines with (v1.6.2 adds `l` only with ENABLE_LOGIN_SHELL=true)."""
    return ["/bin/bash", "-lc" if version == LEGACY else "-c", "--"]


def _group_spec(cluster: dict[str, Any], role: str, group: str) -> dict[str, Any]:
    if role == "head":
        return cluster["spec"]["headGroupSpec"]
    return next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == group)


def _head_port(cluster: dict[str, Any]) -> str:
    return (cluster["spec"]["headGroupSpec"].get("rayStartParams") or {}).get("port", DEFAULT_HEAD_PORT)


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIXES = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(text: Any) -> float:
    """A Kubernetes quantity ("500m", "2Gi", 1) as a number."""
    match = _QUANTITY.match(str(text))
    if match is None or match.group(2) not in _SUFFIXES:
        raise ValueError(f"quantity {text!r} is not modelled")
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


def _labels(template: dict[str, Any], name: str, role: str, group: str, version: str,
            replica_index: int) -> dict[str, str]:
    """The template's labels under KubeRay's own (node type, group and cluster cannot be overridden)."""
    fixed = {"ray.io/node-type": role, "ray.io/group": "headgroup" if role == "head" else group,
             "ray.io/cluster": name}
    labels = {"ray.io/is-ray-node": "yes", **fixed, "ray.io/identifier": f"{name}-{role}",
              "app.kubernetes.io/name": "kuberay", "app.kubernetes.io/created-by": "kuberay-operator"}
    labels.update({k: v for k, v in ((template.get("metadata") or {}).get("labels") or {}).items() if k not in fixed})
    if role == "worker" and version != LEGACY:
        labels["ray.io/worker-group-replica-index"] = str(replica_index)
    return labels


def _ft_annotations(cluster: dict[str, Any], head: bool, version: str) -> dict[str, str]:
    """The annotations of KubeRay's FT step: v1.6.2 on the head only, v1.2.2 on every Ray pod."""
    annotations = cluster["metadata"].get("annotations") or {}
    enabled = ft_enabled(cluster, version)
    if version == LEGACY:
        out = {FT_ENABLED: str(enabled).lower()}
        if enabled:
            out[STORAGE_NAMESPACE] = cluster["metadata"]["uid"]
        if STORAGE_NAMESPACE in annotations:
            out[STORAGE_NAMESPACE] = annotations[STORAGE_NAMESPACE]
        return out
    if not head:
        return {}
    out = {FT_ENABLED: str(enabled).lower()}
    if enabled:
        storage = annotations.get(STORAGE_NAMESPACE, cluster["metadata"]["uid"])
        options = cluster["spec"].get("gcsFaultToleranceOptions") or {}
        out[STORAGE_NAMESPACE] = options.get("externalStorageNamespace") or storage
    return out


def _ft_env(cluster: dict[str, Any], head: bool, env: list[dict[str, Any]],
            annotations: dict[str, str]) -> list[dict[str, Any]]:
    """The env KubeRay >= 1.3's FT step appends to the template's, before its own env."""
    if not ft_enabled(cluster):
        return []
    names = {e["name"] for e in env}
    if not head:
        return [] if "RAY_gcs_rpc_server_reconnect_timeout_s" in names else [
            {"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": WORKER_TIMEOUT_S}]
    out: list[dict[str, Any]] = []
    if "RAY_external_storage_namespace" not in names:
        out.append({"name": "RAY_external_storage_namespace", "value": annotations[STORAGE_NAMESPACE]})
    options = cluster["spec"].get("gcsFaultToleranceOptions")
    if options is not None:
        out.append({"name": "RAY_REDIS_ADDRESS", "value": options.get("redisAddress", "")})
        for field, env_name in (("redisUsername", "REDIS_USERNAME"), ("redisPassword", "REDIS_PASSWORD")):
            if options.get(field) is not None:
                out.append({"name": env_name, **copy.deepcopy(options[field])})
    elif "REDIS_PASSWORD" not in names:
        password = cluster["spec"]["headGroupSpec"].get("rayStartParams", {}).get("redis-password")
        if password is not None:
            out.append({"name": "REDIS_PASSWORD", "value": password})
    return out


def _kuberay_env(cluster: dict[str, Any], head: bool, env: list[dict[str, Any]], command: str,
                 params: dict[str, str], annotations: dict[str, str], version: str) -> list[dict[str, Any]]:
    """The env KubeRay's builder appends to every Ray container (after the template's and the FT step's)."""
    fqdn, port = head_service_fqdn(cluster), _head_port(cluster)
    names = {e["name"] for e in env}
    out: list[dict[str, Any]] = []

    def add(name: str, value: str, always: bool = False) -> None:
        if always or name not in names | {e["name"] for e in out}:
            out.append({"name": name, "value": value} if value else {"name": name})  # "" is not serialized

    def field(name: str, path: str) -> None:
        out.append({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}})

    if not head:
        add("FQ_RAY_IP", fqdn, always=True)
        add("RAY_IP", fqdn.split(".")[0], always=True)
    field("RAY_CLUSTER_NAME", "metadata.labels['ray.io/cluster']")
    if version != LEGACY:
        field("RAY_CLUSTER_NAMESPACE", "metadata.namespace")
    field("RAY_CLOUD_INSTANCE_ID", "metadata.name")
    field("RAY_NODE_TYPE_NAME", "metadata.labels['ray.io/group']")
    add("KUBERAY_GEN_RAY_START_CMD", command, always=True)
    add("RAY_PORT", port)
    add("RAY_ADDRESS", f"127.0.0.1:{port}" if head else f"{fqdn}:{port}")
    add("RAY_USAGE_STATS_KUBERAY_IN_USE", "1")
    if head:
        add("RAY_USAGE_STATS_EXTRA_TAGS", f"kuberay_version={version};kuberay_crd=RayCluster", always=True)
    if version == LEGACY:
        add("REDIS_PASSWORD", params.get("redis-password", ""))
        if STORAGE_NAMESPACE in annotations:
            add("RAY_external_storage_namespace", annotations[STORAGE_NAMESPACE])
        if not head and annotations.get(FT_ENABLED) == "true":
            add("RAY_gcs_rpc_server_reconnect_timeout_s", WORKER_TIMEOUT_S)
    add("RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE", "1")
    return out


def _wait_gcs_ready(container: dict[str, Any], fqdn: str, cluster: dict[str, Any], version: str) -> dict[str, Any]:
    """The workers' init container: waits until the head's GCS answers `ray health-check`."""
    address = f"{fqdn}:{_head_port(cluster)}"
    init: dict[str, Any] = {
        "name": "wait-gcs-ready", "image": container["image"], "command": _bash(version),
        "args": [f"until ray health-check --address {address} > /dev/null 2>&1; do "
                 "echo 'waiting for GCS'; sleep 5; done"],
        "resources": {"limits": {"cpu": "200m", "memory": "256Mi"}, "requests": {"cpu": "200m", "memory": "256Mi"}},
    }
    if container.get("env"):
        init["env"] = copy.deepcopy(container["env"])
    for key in ("imagePullPolicy", "securityContext", "volumeMounts"):
        if container.get(key):
            init[key] = copy.deepcopy(container[key])
    return init


def _managed_fields(container: dict[str, Any]) -> list[dict[str, Any]]:
    """A managedFields entry the size the kuberay-operator's field manager leaves (a few KB)."""
    env_fields = {f'k:{{"name":"{e["name"]}"}}': {".": {}, "f:name": {}, "f:value": {}} for e in container["env"]}
    return [{
        "manager": "kuberay-operator", "operation": "Update", "apiVersion": "v1", "time": "2026-11-25T10:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, **{f"f:{k}": {} for k in (
                "app.kubernetes.io/created-by", "app.kubernetes.io/name", "ray.io/cluster", "ray.io/group",
                "ray.io/identifier", "ray.io/is-ray-node", "ray.io/node-type")}},
                "f:ownerReferences": {".": {}, 'k:{"uid":"' + QUICKSTART_UID + '"}': {}}},
            "f:spec": {"f:containers": {'k:{"name":"' + container["name"] + '"}': {
                ".": {}, "f:args": {}, "f:command": {}, "f:env": {".": {}, **env_fields}, "f:image": {},
                "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {}, "f:resources": {}, "f:volumeMounts": {},
                "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
                "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {},
                "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}, "f:volumes": {}},
        },
    }]
