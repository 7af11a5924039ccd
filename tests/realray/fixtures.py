"""The real-Ray tier's quick-start RayCluster and the head and worker pods KubeRay builds from it.

GCS FT switched on with KubeRay's annotation, the user's head template pointing at Redis
(`RAY_REDIS_ADDRESS: redis:6379`) with the password from the Secret `redis-password-secret` (key
`password`) passed to `ray start` as `--redis-password=$REDIS_PASSWORD`, one CPU per Ray container. The
pods come from the one model of KubeRay's pod builder (testkit.kuberay_pods, checked against the real
operator by the KubeRay tier), without KubeRay's own FT step: every FT value is the webhook's to add.

Each call takes the RayCluster's uid, because the uid is the default storage namespace: tests that share
one Redis get a namespace each by passing different uids.
"""

from __future__ import annotations

import copy
from typing import Any

from testkit import kuberay_pods

NAME = "raycluster-ft-quickstart"
UID = "5d0d6a39-7f3e-4a0e-9c57-2c4f3f6b8a11"
SECRET = kuberay_pods.REDIS_SECRET
SECRET_KEY = "password"


def raycluster(uid: str = UID, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The quick-start RayCluster (ray.io/v1), with extra RayCluster annotations merged in.

    num-cpus 0 on the head: no actor or task lands there, so the guide's actor lives on the worker.
    """
    return kuberay_pods.quickstart_raycluster(
        name=NAME, uid=uid, annotations={kuberay_pods.FT_ENABLED: "true", **(annotations or {})},
        resources={"limits": {"cpu": "1"}, "requests": {"cpu": "1"}},
    )


def head_pod(cluster: dict[str, Any]) -> dict[str, Any]:
    """The head pod KubeRay builds from `cluster` (before admission)."""
    return kuberay_pods.pod(cluster, "head")


def worker_pod(cluster: dict[str, Any]) -> dict[str, Any]:
    """The worker pod KubeRay builds for the single worker group (before admission)."""
    return kuberay_pods.pod(cluster, "worker", suffix="m4q9z")


# The env the webhook is expected to add for the quick start (KubeRay >= 1.3 parity, the annotation path):
# the storage namespace on the head (the RayCluster uid) and the 600 s reconnect timeout on workers. The
# harness's own tests (test_harness.py) use them to stand in for the webhook's output.
def expected_head_additions(uid: str) -> dict[str, str]:
    return {"RAY_external_storage_namespace": uid}


EXPECTED_WORKER_ADDITIONS = {"RAY_gcs_rpc_server_reconnect_timeout_s": kuberay_pods.WORKER_TIMEOUT_S}

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


# Where the webhook mounts the Redis TLS files (issue 14) and the env that names them. Only the harness's own
# tests (test_harness.py) use them, through the stand-in below; test_redis_tls.py runs the rendered pods.
TLS_CA_VOLUME, TLS_CA_DIR = "ray-ft-webhook-redis-ca", "/etc/ray-ft-webhook/redis-ca"
TLS_CLIENT_VOLUME, TLS_CLIENT_DIR = "ray-ft-webhook-redis-client", "/etc/ray-ft-webhook/redis-client"
TLS_ENV = ("RAY_REDIS_CA_CERT", "RAY_REDIS_CLIENT_CERT", "RAY_REDIS_CLIENT_KEY", "RAY_REDIS_SERVER_NAME")


def hand_rendered_tls(pod: dict[str, Any], ca_secret: tuple[str, str] | None, client_secret: str | None,
                      server_name: str | None = None) -> dict[str, Any]:
    """`pod` with Redis TLS volumes, mounts and env like the webhook's (issue 14), written by hand for the
    harness's tests. CA: Secret (name, key) projected to `ca.crt`; client certificate: a kubernetes.io/tls
    Secret mounted whole (no `items`, unlike the webhook: both forms of a Secret volume are exercised)."""
    out = copy.deepcopy(pod)
    spec = out["spec"]
    container = spec["containers"][0]
    volumes, mounts, env = spec.setdefault("volumes", []), container.setdefault("volumeMounts", []), {}
    if ca_secret is not None:
        volumes.append({"name": TLS_CA_VOLUME,
                        "secret": {"secretName": ca_secret[0], "items": [{"key": ca_secret[1], "path": "ca.crt"}]}})
        mounts.append({"name": TLS_CA_VOLUME, "mountPath": TLS_CA_DIR, "readOnly": True})
        env["RAY_REDIS_CA_CERT"] = f"{TLS_CA_DIR}/ca.crt"
    if client_secret is not None:
        volumes.append({"name": TLS_CLIENT_VOLUME, "secret": {"secretName": client_secret}})
        mounts.append({"name": TLS_CLIENT_VOLUME, "mountPath": TLS_CLIENT_DIR, "readOnly": True})
        env["RAY_REDIS_CLIENT_CERT"] = f"{TLS_CLIENT_DIR}/tls.crt"
        env["RAY_REDIS_CLIENT_KEY"] = f"{TLS_CLIENT_DIR}/tls.key"
    if server_name is not None:
        env["RAY_REDIS_SERVER_NAME"] = server_name
    return hand_rendered(out, env)
