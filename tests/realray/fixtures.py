"""The project's own quick-start RayCluster and the head and worker pods KubeRay builds from it, as dicts.

Written for this project (not copied from KubeRay's sample): GCS FT switched on with KubeRay's annotation,
the user's head template pointing at Redis (`RAY_REDIS_ADDRESS: redis:6379`) with the password from the
Secret `redis-password-secret` (key `password`) passed to `ray start` as `--redis-password=$REDIS_PASSWORD`.
The pods are what the webhook is asked about: what KubeRay's pod builder makes of the templates (its labels,
controller ownerReference, the env it adds and the sorted `ray start` line), before any FT injection.

Each call takes the RayCluster's uid, because the uid is the default storage namespace: tests that share
one Redis get a namespace each by passing different uids.
"""

from __future__ import annotations

import copy
from typing import Any

NAME = "raycluster-ft-quickstart"
NAMESPACE = "default"
UID = "5d0d6a39-7f3e-4a0e-9c57-2c4f3f6b8a11"
WORKER_GROUP = "small-group"
SECRET = "redis-password-secret"
SECRET_KEY = "password"
HEAD_SERVICE = f"{NAME}-head-svc"
HEAD_SERVICE_FQDN = f"{HEAD_SERVICE}.{NAMESPACE}.svc.cluster.local"

# `ray start` lines as KubeRay renders rayStartParams: ` --key=value `, keys sorted, after `ulimit -n 65536;`.
HEAD_RAY_START = (
    "ray start --head --block --dashboard-agent-listen-port=52365 --dashboard-host=0.0.0.0 "
    "--metrics-export-port=8080 --num-cpus=0 --redis-password=$REDIS_PASSWORD "
)
WORKER_RAY_START = (
    f"ray start --address={HEAD_SERVICE_FQDN}:6379 --block --dashboard-agent-listen-port=52365 "
    "--metrics-export-port=8080 --num-cpus=1 "
)


def raycluster(uid: str = UID, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The quick-start RayCluster (ray.io/v1), with extra RayCluster annotations merged in."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "uid": uid,
            "annotations": {"ray.io/ft-enabled": "true", **(annotations or {})},
        },
        "spec": {
            "rayVersion": "2.60.0",
            "headGroupSpec": {
                # num-cpus 0: no actor or task lands on the head, so the guide's actor lives on the worker.
                "rayStartParams": {"num-cpus": "0", "redis-password": "$REDIS_PASSWORD"},
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "ray-head",
                                "image": "rayproject/ray:2.60.0",
                                "env": _head_template_env(),
                                "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}},
                            }
                        ]
                    }
                },
            },
            "workerGroupSpecs": [
                {
                    "groupName": WORKER_GROUP,
                    "replicas": 1,
                    "minReplicas": 1,
                    "maxReplicas": 1,
                    "rayStartParams": {},
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-worker",
                                    "image": "rayproject/ray:2.60.0",
                                    "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}},
                                }
                            ]
                        }
                    },
                }
            ],
        },
    }


def _head_template_env() -> list[dict[str, Any]]:
    return [
        {"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"},
        {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": SECRET_KEY}}},
    ]


def _metadata(cluster: dict[str, Any], role: str, group: str, suffix: str) -> dict[str, Any]:
    meta = cluster["metadata"]
    return {
        "name": f"{meta['name']}-{'head' if role == 'head' else group + '-worker'}-{suffix}",
        "namespace": meta["namespace"],
        "labels": {
            "ray.io/cluster": meta["name"],
            "ray.io/node-type": role,
            "ray.io/group": group,
            "ray.io/identifier": f"{meta['name']}-{role}",
            "ray.io/is-ray-node": "yes",
            "app.kubernetes.io/name": "kuberay",
            "app.kubernetes.io/created-by": "kuberay-operator",
        },
        "ownerReferences": [
            {
                "apiVersion": "ray.io/v1",
                "kind": "RayCluster",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def _kuberay_env(role: str, start_cmd: str) -> list[dict[str, Any]]:
    """The env KubeRay's pod builder adds to every Ray container (after the template's own)."""
    env: list[dict[str, Any]] = [
        {"name": "RAY_CLUSTER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['ray.io/cluster']"}}},
        {"name": "RAY_CLOUD_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "RAY_NODE_TYPE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['ray.io/group']"}}},
        {"name": "KUBERAY_GEN_RAY_START_CMD", "value": start_cmd.strip()},
    ]
    if role == "head":
        env += [{"name": "RAY_ADDRESS", "value": "127.0.0.1:6379"}, {"name": "RAY_PORT", "value": "6379"}]
    else:
        env += [
            {"name": "FQ_RAY_IP", "value": HEAD_SERVICE_FQDN},
            {"name": "RAY_IP", "value": HEAD_SERVICE},
            {"name": "RAY_ADDRESS", "value": f"{HEAD_SERVICE_FQDN}:6379"},
            {"name": "RAY_PORT", "value": "6379"},
        ]
    env += [
        {"name": "RAY_USAGE_STATS_KUBERAY_IN_USE", "value": "1"},
        {"name": "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE", "value": "1"},
    ]
    return env


def head_pod(cluster: dict[str, Any]) -> dict[str, Any]:
    """The head pod KubeRay builds from `cluster` (before admission)."""
    template = copy.deepcopy(cluster["spec"]["headGroupSpec"]["template"])
    container = template["spec"]["containers"][0]
    container["env"] = list(container.get("env") or []) + _kuberay_env("head", HEAD_RAY_START)
    container["command"] = ["/bin/bash", "-lc", "--"]
    container["args"] = [f"ulimit -n 65536; {HEAD_RAY_START}"]
    container["ports"] = [
        {"containerPort": 6379, "name": "gcs-server", "protocol": "TCP"},
        {"containerPort": 8265, "name": "dashboard", "protocol": "TCP"},
        {"containerPort": 10001, "name": "client", "protocol": "TCP"},
        {"containerPort": 8080, "name": "metrics", "protocol": "TCP"},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(cluster, "head", "headgroup", "x7k2p"),
        "spec": {**template["spec"], "restartPolicy": "Always"},
    }


def worker_pod(cluster: dict[str, Any]) -> dict[str, Any]:
    """The worker pod KubeRay builds for the single worker group (before admission)."""
    group = cluster["spec"]["workerGroupSpecs"][0]
    template = copy.deepcopy(group["template"])
    container = template["spec"]["containers"][0]
    container["env"] = list(container.get("env") or []) + _kuberay_env("worker", WORKER_RAY_START)
    container["command"] = ["/bin/bash", "-lc", "--"]
    container["args"] = [f"ulimit -n 65536; {WORKER_RAY_START}"]
    wait_gcs = {
        "name": "wait-gcs-ready",
        "image": container["image"],
        "command": ["/bin/bash", "-lc", "--"],
        "args": [f"until ray health-check --address {HEAD_SERVICE_FQDN}:6379 > /dev/null 2>&1; do sleep 5; done"],
        "env": [{"name": "FQ_RAY_IP", "value": HEAD_SERVICE_FQDN}, {"name": "RAY_IP", "value": HEAD_SERVICE}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(cluster, "worker", group["groupName"], "m4q9z"),
        "spec": {**template["spec"], "initContainers": [wait_gcs], "restartPolicy": "Always"},
    }


# The env the webhook is expected to add for the quick start (KubeRay >= 1.3 parity, the annotation path):
# the storage namespace on the head (the RayCluster uid) and the 600 s reconnect timeout on workers. Used to
# check the webhook's output before running it, and by hand in experiments while no webhook exists.
def expected_head_additions(uid: str) -> dict[str, str]:
    return {"RAY_external_storage_namespace": uid}


EXPECTED_WORKER_ADDITIONS = {"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}

# Every env var and flag that carries GCS FT; removing them gives a cluster without FT (negative control a).
FT_ENV = (
    "RAY_external_storage_namespace",
    "RAY_REDIS_ADDRESS",
    "REDIS_PASSWORD",
    "REDIS_USERNAME",
    "RAY_gcs_rpc_server_reconnect_timeout_s",
)
FT_FLAGS = ("--redis-password", "--redis-username")


def hand_rendered(pod: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """`pod` with `env` appended to the Ray container where absent: a stand-in for the webhook's output."""
    out = copy.deepcopy(pod)
    container = out["spec"]["containers"][0]
    present = {e["name"] for e in container["env"]}
    container["env"] += [{"name": k, "value": v} for k, v in env.items() if k not in present]
    return out
