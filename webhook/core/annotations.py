"""The catalogue of annotation keys the webhook reads or writes, each documented where it is declared.

Ours live under `ray-ft-webhook.io/` and are read from the RayCluster (RayService and RayJob copy their
annotations onto the RayCluster they create) and from its Namespace (defaults for every RayCluster in it).
KubeRay's are read with KubeRay's exact semantics.
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
# RayCluster: the CA Redis's certificate is checked against, `NAME` or `NAME/KEY` of a Secret or of a ConfigMap in the
# cluster's namespace (key default ca.crt); mounted read-only, RAY_REDIS_CA_CERT names the file. Only with rediss://.
REDIS_CA_SECRET = PREFIX + "redis-ca-secret"
REDIS_CA_CONFIGMAP = PREFIX + "redis-ca-configmap"
# RayCluster: `NAME` of a kubernetes.io/tls Secret (tls.crt, tls.key): the client certificate for mutual TLS.
REDIS_CLIENT_CERT_SECRET = PREFIX + "redis-client-cert-secret"
# RayCluster: the TLS server name Ray sends (SNI) to Redis (RAY_REDIS_SERVER_NAME); Ray does not check the
# certificate's host name against it.
REDIS_SERVER_NAME = PREFIX + "redis-server-name"
# Namespace only: "enabled" turns GCS FT on for RayClusters created there without an FT setting (not those of a
# RayJob); "enabled-including-rayjobs" for those too; "disabled" (or absent) leaves them alone.
FT_DEFAULT = PREFIX + "ft-default"
# Pod (written): comma-separated names the webhook added (env vars, annotations, ray start flags, volumes).
INJECTED = PREFIX + "injected"

# KubeRay's, on the RayCluster: FT is on when the value, lower-cased, is "true".
RAY_FT_ENABLED = "ray.io/ft-enabled"
# KubeRay's, on the RayCluster and written to the head pod: the GCS storage namespace in Redis.
RAY_EXTERNAL_STORAGE_NAMESPACE = "ray.io/external-storage-namespace"

# Every key of ours the parser understands; anything else under PREFIX on a RayCluster is reported. A Namespace
# takes the same keys (its RayClusters' defaults, below their own annotations and above the admin's flags) and
# FT_DEFAULT.
RAYCLUSTER_KEYS = frozenset(
    {INJECT, REDIS_ADDRESS, REDIS_PASSWORD_SECRET, REDIS_USERNAME, WORKER_RECONNECT_TIMEOUT_S, HEAD_RECONNECT_TIMEOUT_S,
     REDIS_CA_SECRET, REDIS_CA_CONFIGMAP, REDIS_CLIENT_CERT_SECRET, REDIS_SERVER_NAME}
)
NAMESPACE_KEYS = RAYCLUSTER_KEYS | {FT_DEFAULT}
