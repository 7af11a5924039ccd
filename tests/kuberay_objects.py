"""RayClusters and the pods KubeRay (>= 1.0, before its own FT configuration) builds from them.

Written for this project from the facts in the team's KubeRay notes: labels, the controller
ownerReference, the Ray container first, `ray start` in args[0] with sorted `--key=value` flags and the same
line in KUBERAY_GEN_RAY_START_CMD, and a `wait-gcs-ready` init container on workers. Used by the unit, the
end-to-end and the real-Ray tiers, and by the benchmark.
"""

from __future__ import annotations

import copy
from typing import Any

REDIS_SECRET = "redis-password-secret"
QUICKSTART_UID = "6a2f1e0c-9d7b-4c1e-8f3a-2b5d7e9c1a44"


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
) -> dict[str, Any]:
    """A RayCluster; with no arguments, the quick start's: FT annotation, Redis address and password env."""
    head_container: dict[str, Any] = {"name": "ray-head", "image": "rayproject/ray:2.60.0"}
    if head_env is not None:
        head_container["env"] = head_env
    worker_container: dict[str, Any] = {"name": "ray-worker", "image": "rayproject/ray:2.60.0"}
    if worker_env is not None:
        worker_container["env"] = worker_env
    spec: dict[str, Any] = {
        "rayVersion": "2.60.0",
        "headGroupSpec": {
            "rayStartParams": dict(head_start_params if head_start_params is not None else {"num-cpus": "0"}),
            "template": {"spec": {"containers": [head_container]}},
        },
        "workerGroupSpecs": [{
            "groupName": "small-group", "replicas": 1, "minReplicas": 1, "maxReplicas": 10, "rayStartParams": {},
            "template": {"spec": {"containers": [worker_container]}},
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
        "annotations": {"ray.io/ft-enabled": "true"},
        "head_env": [{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}, env_secret("REDIS_PASSWORD", REDIS_SECRET)],
        "head_start_params": {"num-cpus": "0", "redis-password": "$REDIS_PASSWORD"},
    }
    args.update(overrides)
    return raycluster(**args)


def _start_command(head: bool, params: dict[str, str], cluster_name: str, namespace: str) -> str:
    params = dict(params)
    if head:
        params.setdefault("dashboard-host", "0.0.0.0")
        params.setdefault("metrics-export-port", "8080")
        params.setdefault("dashboard-agent-listen-port", "52365")
        params["block"] = "true"
    else:
        params.setdefault("address", f"{cluster_name}-head-svc.{namespace}.svc.cluster.local:6379")
        params.setdefault("metrics-export-port", "8080")
        params["block"] = "true"
    flags = " ".join(f"--{k}" if v == "true" and k == "block" else f"--{k}={v}" for k, v in sorted(params.items()))
    return f"ray start {'--head ' if head else ''}{flags} "


def pod(cluster: dict[str, Any], role: str = "head", group: str = "small-group", suffix: str = "x7k2p",
        owner: bool = True, managed_fields: bool = False) -> dict[str, Any]:
    """The Pod KubeRay would create for `cluster` (`role` head or worker), before any FT configuration."""
    meta = cluster["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    head = role == "head"
    spec_src = cluster["spec"]["headGroupSpec"] if head else next(
        g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == group
    )
    template = copy.deepcopy(spec_src["template"])
    container = template["spec"]["containers"][0]
    command = _start_command(head, spec_src.get("rayStartParams", {}), name, namespace)
    container["command"] = ["/bin/bash", "-c", "--"]
    container["args"] = [f"ulimit -n 65536; {command}"]
    container["env"] = [*container.get("env", []), *_kuberay_env(name, namespace, head, group, command)]
    container.setdefault("ports", [{"containerPort": 8080, "name": "metrics", "protocol": "TCP"}])
    container["volumeMounts"] = [{"mountPath": "/dev/shm", "name": "shared-mem"}]
    pod_spec = template["spec"]
    pod_spec["volumes"] = [{"name": "shared-mem", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]
    pod_spec.setdefault("restartPolicy", "Always")
    if not head:
        pod_spec["initContainers"] = [{
            "name": "wait-gcs-ready", "image": container["image"], "command": ["/bin/bash", "-lc", "--"],
            "args": ["until ray health-check --address " + f"{name}-head-svc.{namespace}.svc.cluster.local:6379"
                     " > /dev/null 2>&1; do echo 'waiting for GCS'; sleep 5; done"],
            "env": [{"name": "FQ_RAY_IP", "value": f"{name}-head-svc.{namespace}.svc.cluster.local"}],
            "resources": {"limits": {"cpu": "200m", "memory": "256Mi"}, "requests": {"cpu": "200m", "memory": "256Mi"}},
        }]
    labels = {
        "ray.io/is-ray-node": "yes",
        "ray.io/node-type": role,
        "ray.io/group": "headgroup" if head else group,
        "ray.io/identifier": f"{name}-{role}",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
        "ray.io/cluster": name,
    }
    metadata: dict[str, Any] = {
        "generateName": f"{name}-{'head' if head else group + '-worker'}-",
        "name": f"{name}-{'head' if head else group + '-worker'}-{suffix}",
        "namespace": namespace,
        "labels": labels,
    }
    if owner:
        metadata["ownerReferences"] = [{
            "apiVersion": "ray.io/v1", "kind": "RayCluster", "name": name, "uid": meta.get("uid", ""),
            "controller": True, "blockOwnerDeletion": True,
        }]
    if managed_fields:
        metadata["managedFields"] = _managed_fields(container)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def _kuberay_env(name: str, namespace: str, head: bool, group: str, command: str) -> list[dict[str, Any]]:
    fq = f"{name}-head-svc.{namespace}.svc.cluster.local"
    def field(path: str) -> dict[str, Any]:
        return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}

    env: list[dict[str, Any]] = [
        {"name": "RAY_CLUSTER_NAME", "valueFrom": field("metadata.labels['ray.io/cluster']")},
        {"name": "RAY_CLOUD_INSTANCE_ID", "valueFrom": field("metadata.name")},
        {"name": "RAY_NODE_TYPE_NAME", "valueFrom": field("metadata.labels['ray.io/group']")},
        {"name": "KUBERAY_GEN_RAY_START_CMD", "value": command},
    ]
    if head:
        env += [{"name": "RAY_ADDRESS", "value": "127.0.0.1:6379"}]
    else:
        env += [{"name": "FQ_RAY_IP", "value": fq}, {"name": "RAY_IP", "value": f"{name}-head-svc"},
                {"name": "RAY_ADDRESS", "value": f"{fq}:6379"}]
    env += [
        {"name": "RAY_USAGE_STATS_KUBERAY_IN_USE", "value": "1"},
        {"name": "RAY_USAGE_STATS_EXTRA_TAGS", "value": "kuberay_version=v1.3.0;kuberay_crd=RayCluster"},
        {"name": "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE", "value": "1"},
    ]
    return env


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
