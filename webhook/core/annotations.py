"""The catalogue of annotation keys the webhook reads or writes, each documented where it is declared.

Ours live under `ray-ft-webhook.io/` and are read from the RayCluster (RayService and RayJob copy their
annotations onto the RayCluster they create). KubeRay's are read with KubeRay's exact semantics.
"""

from __future__ import annotations

PREFIX = "ray-ft-webhook.io/"

# RayCluster: "false" (any case) turns the webhook off for this cluster; "true" or absent leaves it on.
INJECT = PREFIX + "inject"
# RayCluster: Redis address for RAY_REDIS_ADDRESS, e.g. `redis:6379`, `rediss://host:6380`, or several comma-separated.
REDIS_ADDRESS = PREFIX + "redis-address"
# RayCluster: `NAME` or `NAME/KEY` of a Secret in the cluster's namespace (key defaults to `password`);
# injected as REDIS_PASSWORD from a secretKeyRef, never as a value.
REDIS_PASSWORD_SECRET = PREFIX + "redis-password-secret"
# RayCluster: Redis ACL user for REDIS_USERNAME (Ray >= 2.41).
REDIS_USERNAME = PREFIX + "redis-username"
# RayCluster: seconds a worker waits for GCS to come back (RAY_gcs_rpc_server_reconnect_timeout_s); positive integer.
WORKER_RECONNECT_TIMEOUT_S = PREFIX + "worker-reconnect-timeout-s"
# RayCluster: the same for the head; only injected when set here or by the admin; positive integer.
HEAD_RECONNECT_TIMEOUT_S = PREFIX + "head-reconnect-timeout-s"
# Pod (written): comma-separated names the webhook added (env vars, annotations, ray start flags).
INJECTED = PREFIX + "injected"

# KubeRay's, on the RayCluster: FT is on when the value, lower-cased, is "true".
RAY_FT_ENABLED = "ray.io/ft-enabled"
# KubeRay's, on the RayCluster and written to the head pod: the GCS storage namespace in Redis.
RAY_EXTERNAL_STORAGE_NAMESPACE = "ray.io/external-storage-namespace"

# Every key of ours the parser understands; anything else under PREFIX on a RayCluster is reported.
RAYCLUSTER_KEYS = frozenset(
    {INJECT, REDIS_ADDRESS, REDIS_PASSWORD_SECRET, REDIS_USERNAME, WORKER_RECONNECT_TIMEOUT_S, HEAD_RECONNECT_TIMEOUT_S}
)
