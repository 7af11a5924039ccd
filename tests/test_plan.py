"""The pure decision, table-driven: KubeRay's FT behaviour (reference sections 3 and 4), our annotations,
precedence, warnings and denials. Each case runs the one code path (`render`) and asserts on the patched pod.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from testkit.kuberay_pods import (
    LEGACY,
    QUICKSTART_UID,
    cleanup_line,
    cleanup_pod,
    env_secret,
    pod,
    quickstart_raycluster,
    raycluster,
)
from webhook.cli.render import Rendered, render
from webhook.core import cleanup
from webhook.core.raycluster import parse_raycluster
from webhook.core.settings import SecretRef, Settings

FT = {"ray.io/ft-enabled": "true"}
SECRET_REF = {"secretKeyRef": {"name": "redis-password-secret", "key": "password"}}
TIMEOUT = "RAY_gcs_rpc_server_reconnect_timeout_s"


def run(cluster: dict[str, Any], role: str = "head", settings: Settings | None = None,
        pod_env: list[dict[str, Any]] | None = None, **pod_args: Any) -> Rendered:
    p = pod(cluster, role, **pod_args)
    if pod_env is not None:
        p["spec"]["containers"][0]["env"] = pod_env + p["spec"]["containers"][0]["env"]
    return render(cluster, p, settings or Settings())


def env_of(result: Rendered) -> dict[str, Any]:
    """name -> value (str) or valueFrom (dict) of the Ray container after the patch."""
    return {e["name"]: e.get("valueFrom", e.get("value")) for e in result.pod["spec"]["containers"][0].get("env", [])}


def added_env(result: Rendered) -> dict[str, Any]:
    """Only what the patch added to the env."""
    added: dict[str, Any] = {}
    for op in result.patch:
        if op["path"] == "/spec/containers/0/env/-":
            added[op["value"]["name"]] = op["value"].get("valueFrom", op["value"].get("value"))
        elif op["path"] == "/spec/containers/0/env":
            added.update({e["name"]: e.get("valueFrom", e.get("value")) for e in op["value"]})
    return added


def annotations_of(result: Rendered) -> dict[str, str]:
    return result.pod["metadata"].get("annotations", {})


@dataclass
class Case:
    id: str
    cluster: dict[str, Any]
    role: str = "head"
    settings: Settings = field(default_factory=Settings)
    pod_env: list[dict[str, Any]] | None = None
    added: dict[str, Any] | None = None       # exactly the env the patch adds
    annotations: dict[str, str] | None = None  # a subset the patched pod must carry
    flags: tuple[str, ...] = ()                # must be in args[0] after the patch
    warnings: tuple[str, ...] = ()             # each a substring of some warning
    no_warnings: bool = False
    denied: str | None = None                  # substring of the denial
    skipped: str | None = None


CASES = [
    # --- when FT is on (KubeRay's rule) ---
    Case("ft-annotation-true", raycluster(annotations=FT), "worker",
         added={"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}),
    Case("ft-annotation-any-case", raycluster(annotations={"ray.io/ft-enabled": "TrUe"}), "worker",
         added={"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}),
    Case("ft-annotation-upper-case", raycluster(annotations={"ray.io/ft-enabled": "TRUE"}), "worker",
         added={"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}),
    Case("ft-annotation-capitalised", raycluster(annotations={"ray.io/ft-enabled": "True"}), "head",
         added={"RAY_external_storage_namespace": QUICKSTART_UID}, annotations={"ray.io/ft-enabled": "true"}),
    Case("ft-annotation-with-spaces-is-off", raycluster(annotations={"ray.io/ft-enabled": " true"}), "worker",
         added={}, skipped="off"),  # KubeRay lower-cases the value, it does not trim it
    Case("ft-annotation-false", raycluster(annotations={"ray.io/ft-enabled": "false"}), "worker",
         added={}, skipped="off"),
    Case("ft-annotation-garbage-is-off", raycluster(annotations={"ray.io/ft-enabled": "yes"}), "head",
         added={}, skipped="off"),
    Case("ft-absent", raycluster(), "head", added={}, skipped="off", no_warnings=True),
    Case("ft-options-empty-object-counts", raycluster(options={}), "worker",
         added={"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}),
    # --- head with KubeRay >= 1.3 semantics ---
    Case("head-annotation-path-storage-ns-is-uid", raycluster(annotations=FT,
         head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}]),
         added={"RAY_external_storage_namespace": QUICKSTART_UID},
         annotations={"ray.io/ft-enabled": "true", "ray.io/external-storage-namespace": QUICKSTART_UID}),
    Case("head-annotation-path-adds-no-address", raycluster(annotations=FT),
         added={"RAY_external_storage_namespace": QUICKSTART_UID}, warnings=("no Redis address",)),
    Case("head-storage-ns-annotation", raycluster(annotations={**FT, "ray.io/external-storage-namespace": "ns-a"},
         head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:6379"}]),
         added={"RAY_external_storage_namespace": "ns-a"}, annotations={"ray.io/external-storage-namespace": "ns-a"}),
    Case("head-storage-ns-annotation-empty-is-used", raycluster(annotations={**FT, "ray.io/external-storage-namespace": ""},
         head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:6379"}]),
         added={"RAY_external_storage_namespace": ""}, warnings=("storage namespace is empty",)),
    Case("head-options-storage-ns-wins", raycluster(options={"redisAddress": "r:1", "externalStorageNamespace": "opt"}),
         added={"RAY_external_storage_namespace": "opt", "RAY_REDIS_ADDRESS": "r:1"}),
    Case("head-options-storage-ns-beats-annotation", raycluster(options={"redisAddress": "r:1",
         "externalStorageNamespace": "opt"}, annotations={"ray.io/external-storage-namespace": "ann"}),
         added={"RAY_external_storage_namespace": "opt", "RAY_REDIS_ADDRESS": "r:1"},
         annotations={"ray.io/external-storage-namespace": "opt"},
         warnings=("KubeRay conflict: ray.io/external-storage-namespace",)),
    Case("head-options-empty-storage-ns-falls-back", raycluster(options={"redisAddress": "r:1"},
         annotations={"ray.io/external-storage-namespace": "ann"}),
         added={"RAY_external_storage_namespace": "ann", "RAY_REDIS_ADDRESS": "r:1"},
         warnings=("KubeRay conflict: ray.io/external-storage-namespace",)),
    Case("head-options-password-secret", raycluster(options={"redisAddress": "r:1", "redisPassword": {"valueFrom": SECRET_REF}}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "r:1", "REDIS_PASSWORD": SECRET_REF},
         flags=("--redis-password=$REDIS_PASSWORD",), no_warnings=True),
    Case("head-options-password-plain", raycluster(options={"redisAddress": "r:1", "redisPassword": {"value": "s3cr3t"}}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "r:1", "REDIS_PASSWORD": "s3cr3t"},
         flags=("--redis-password=$REDIS_PASSWORD",), warnings=("plain text",)),
    Case("head-options-username", raycluster(options={"redisAddress": "r:1", "redisUsername": {"value": "ray"},
         "redisPassword": {"valueFrom": SECRET_REF}}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "r:1", "REDIS_USERNAME": "ray",
                "REDIS_PASSWORD": SECRET_REF},
         flags=("--redis-username=$REDIS_USERNAME", "--redis-password=$REDIS_PASSWORD")),
    Case("head-annotation-path-start-param-password-copied", raycluster(annotations=FT,
         head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}], head_start_params={"redis-password": "pw"}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "REDIS_PASSWORD": "pw"}, warnings=("plain text",)),
    Case("head-start-param-env-reference-not-copied", raycluster(annotations=FT,
         head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}], head_start_params={"redis-password": "$REDIS_PASSWORD"}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID}, no_warnings=True),
    Case("quickstart-head", quickstart_raycluster(), added={"RAY_external_storage_namespace": QUICKSTART_UID},
         annotations={"ray.io/ft-enabled": "true"}, no_warnings=True),
    Case("quickstart-worker", quickstart_raycluster(), "worker",
         added={"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}, no_warnings=True),
    Case("head-user-env-always-wins", raycluster(options={"redisAddress": "r:1", "redisPassword": {"valueFrom": SECRET_REF},
         "externalStorageNamespace": "opt"}),
         pod_env=[{"name": "RAY_external_storage_namespace", "value": "mine"}, {"name": "REDIS_PASSWORD", "value": "x"}],
         added={"RAY_REDIS_ADDRESS": "r:1"}),
    Case("head-no-timeout-unless-configured", raycluster(options={"redisAddress": "r:1"}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "r:1"}),
    Case("head-timeout-from-admin", raycluster(options={"redisAddress": "r:1"}), settings=Settings(head_reconnect_timeout_s=90),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "r:1",
                "RAY_gcs_rpc_server_reconnect_timeout_s": "90"}),
    # --- worker ---
    Case("worker-only-timeout", raycluster(options={"redisAddress": "r:1", "redisPassword": {"valueFrom": SECRET_REF}}),
         "worker", added={"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}),
    Case("worker-user-timeout-wins", raycluster(annotations=FT, head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}]),
         "worker", pod_env=[{"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "900"}], added={}),
    Case("worker-env-name-is-case-sensitive", raycluster(annotations=FT,
         head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}]), "worker",
         pod_env=[{"name": "RAY_GCS_RPC_SERVER_RECONNECT_TIMEOUT_S", "value": "900"}],
         added={"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}),
    Case("worker-timeout-not-above-head-warns", raycluster(annotations={**FT,
         "ray-ft-webhook.io/worker-reconnect-timeout-s": "60"}, head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}]),
         "worker", added={"RAY_gcs_rpc_server_reconnect_timeout_s": "60"}, warnings=("not above the head's 60s",)),
    Case("worker-timeout-below-head-warns", raycluster(annotations={**FT,
         "ray-ft-webhook.io/worker-reconnect-timeout-s": "59"}, head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}]),
         "worker", added={TIMEOUT: "59"}, warnings=("worker GCS reconnect timeout 59s is not above the head's 60s",)),
    Case("worker-timeout-one-above-head-no-warning", raycluster(annotations={**FT,
         "ray-ft-webhook.io/worker-reconnect-timeout-s": "61"}, head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}]),
         "worker", added={TIMEOUT: "61"}, no_warnings=True),
    Case("worker-timeout-equal-to-configured-head-warns", raycluster(annotations={**FT,
         "ray-ft-webhook.io/head-reconnect-timeout-s": "600"}, head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}]),
         "worker", added={TIMEOUT: "600"}, warnings=("600s is not above the head's 600s",)),
    Case("worker-timeout-one-above-head-template-no-warning", raycluster(annotations=FT, head_env=[
         {"name": "RAY_REDIS_ADDRESS", "value": "r:1"}, {"name": TIMEOUT, "value": "599"}]), "worker",
         added={TIMEOUT: "600"}, no_warnings=True),
    Case("worker-timeout-vs-head-template-env", raycluster(annotations=FT, head_env=[
         {"name": "RAY_REDIS_ADDRESS", "value": "r:1"}, {"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "900"}]),
         "worker", added={"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}, warnings=("600s is not above the head's 900s",)),
    Case("worker-user-timeout-too-low-warns", raycluster(annotations=FT,
         head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}]), "worker",
         pod_env=[{"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "30"}], added={},
         warnings=("30s is not above",)),
    # --- our annotations, and precedence options > annotations > admin defaults ---
    Case("ours-all", raycluster(annotations={**FT, "ray-ft-webhook.io/redis-address": "rediss://r:6380",
         "ray-ft-webhook.io/redis-password-secret": "pw/key", "ray-ft-webhook.io/redis-username": "ray",
         "ray-ft-webhook.io/head-reconnect-timeout-s": "30"}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "rediss://r:6380",
                "REDIS_USERNAME": "ray", "REDIS_PASSWORD": {"secretKeyRef": {"name": "pw", "key": "key"}},
                "RAY_gcs_rpc_server_reconnect_timeout_s": "30"},
         flags=("--redis-username=$REDIS_USERNAME", "--redis-password=$REDIS_PASSWORD"), no_warnings=True),
    Case("ours-secret-key-defaults-to-password", raycluster(annotations={**FT, "ray-ft-webhook.io/redis-address": "r:1",
         "ray-ft-webhook.io/redis-password-secret": "pw"}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "r:1",
                "REDIS_PASSWORD": {"secretKeyRef": {"name": "pw", "key": "password"}}}),
    Case("ours-worker-timeout", raycluster(annotations={**FT, "ray-ft-webhook.io/worker-reconnect-timeout-s": "1200"}),
         "worker", added={"RAY_gcs_rpc_server_reconnect_timeout_s": "1200"}),
    Case("admin-defaults", raycluster(annotations=FT), settings=Settings(
         default_redis_address="redis.ray:6379", default_redis_password_secret=SecretRef("admin-pw", "pass")),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "redis.ray:6379",
                "REDIS_PASSWORD": {"secretKeyRef": {"name": "admin-pw", "key": "pass"}}},
         flags=("--redis-password=$REDIS_PASSWORD",), no_warnings=True),
    Case("admin-worker-timeout", raycluster(annotations=FT), "worker", settings=Settings(worker_reconnect_timeout_s=900),
         added={"RAY_gcs_rpc_server_reconnect_timeout_s": "900"}),
    Case("annotation-beats-admin", raycluster(annotations={**FT, "ray-ft-webhook.io/redis-address": "mine:1",
         "ray-ft-webhook.io/redis-password-secret": "mine"}),
         settings=Settings(default_redis_address="admin:1", default_redis_password_secret=SecretRef("admin")),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "mine:1",
                "REDIS_PASSWORD": {"secretKeyRef": {"name": "mine", "key": "password"}}}),
    Case("options-beat-annotation-and-admin", raycluster(options={"redisAddress": "opt:1", "redisPassword": {"valueFrom": SECRET_REF}},
         annotations={"ray-ft-webhook.io/redis-address": "mine:1", "ray-ft-webhook.io/redis-password-secret": "mine"}),
         settings=Settings(default_redis_address="admin:1"),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "opt:1", "REDIS_PASSWORD": SECRET_REF}),
    Case("options-username-beats-annotation", raycluster(options={"redisAddress": "opt:1",
         "redisUsername": {"value": "opt-user"}, "redisPassword": {"valueFrom": SECRET_REF}},
         annotations={"ray-ft-webhook.io/redis-username": "mine", "ray-ft-webhook.io/redis-address": "mine:1"}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "opt:1",
                "REDIS_USERNAME": "opt-user", "REDIS_PASSWORD": SECRET_REF}),
    Case("options-plain-password-beats-annotation-secret", raycluster(options={"redisAddress": "opt:1",
         "redisPassword": {"value": "opt-pw"}}, annotations={"ray-ft-webhook.io/redis-password-secret": "mine"}),
         settings=Settings(default_redis_password_secret=SecretRef("admin")),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "opt:1",
                "REDIS_PASSWORD": "opt-pw"}, warnings=("plain text",)),
    Case("options-secret-username-beats-annotation", raycluster(options={"redisAddress": "opt:1",
         "redisUsername": {"valueFrom": SECRET_REF}, "redisPassword": {"valueFrom": SECRET_REF}},
         annotations={"ray-ft-webhook.io/redis-username": "mine"}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "opt:1",
                "REDIS_USERNAME": SECRET_REF, "REDIS_PASSWORD": SECRET_REF}),
    Case("ours-secret-beats-start-param", raycluster(annotations={**FT, "ray-ft-webhook.io/redis-password-secret": "mine"},
         head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}], head_start_params={"redis-password": "plain"}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID,
                "REDIS_PASSWORD": {"secretKeyRef": {"name": "mine", "key": "password"}}}, warnings=("plain text",)),
    Case("inject-false", raycluster(annotations={**FT, "ray-ft-webhook.io/inject": "False"}), added={}, skipped="inject"),
    Case("inject-true-explicit", raycluster(annotations={**FT, "ray-ft-webhook.io/inject": "true"}), "worker",
         added={"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}),
    Case("rocksdb-backend-left-alone", raycluster(options={"backend": "rocksdb"}), added={}, skipped="rocksdb"),
    Case("unknown-annotation-warns", raycluster(annotations={**FT, "ray-ft-webhook.io/redis-adress": "x"}), "worker",
         added={"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}, warnings=("unknown annotation ray-ft-webhook.io/redis-adress",)),
    # --- denials: our annotations that cannot be parsed ---
    Case("deny-timeout-not-int", raycluster(annotations={**FT, "ray-ft-webhook.io/worker-reconnect-timeout-s": "ten"}),
         "worker", denied="annotation ray-ft-webhook.io/worker-reconnect-timeout-s: 'ten' is not a positive integer"),
    Case("deny-timeout-zero", raycluster(annotations={**FT, "ray-ft-webhook.io/head-reconnect-timeout-s": "0"}),
         denied="ray-ft-webhook.io/head-reconnect-timeout-s: '0'"),
    Case("deny-timeout-negative", raycluster(annotations={**FT, "ray-ft-webhook.io/worker-reconnect-timeout-s": "-5"}),
         "worker", denied="'-5' is not a positive integer"),
    Case("deny-timeout-fraction", raycluster(annotations={**FT, "ray-ft-webhook.io/worker-reconnect-timeout-s": "1.5"}),
         "worker", denied="'1.5'"),
    Case("deny-secret-bad", raycluster(annotations={**FT, "ray-ft-webhook.io/redis-password-secret": "a/b/c"}),
         denied="annotation ray-ft-webhook.io/redis-password-secret: 'a/b/c' is not NAME or NAME/KEY"),
    Case("deny-secret-uppercase", raycluster(annotations={**FT, "ray-ft-webhook.io/redis-password-secret": "Bad_Name"}),
         denied="'Bad_Name'"),
    Case("deny-address-empty", raycluster(annotations={**FT, "ray-ft-webhook.io/redis-address": " "}),
         denied="annotation ray-ft-webhook.io/redis-address"),
    Case("deny-inject-garbage", raycluster(annotations={**FT, "ray-ft-webhook.io/inject": "nope"}),
         denied="ray-ft-webhook.io/inject: 'nope'"),
    Case("deny-even-when-ft-off", raycluster(annotations={"ray-ft-webhook.io/worker-reconnect-timeout-s": "x"}),
         "worker", denied="'x'"),
    Case("deny-options-not-object", raycluster(options="redis:6379"),  # type: ignore[arg-type]
         denied="spec.gcsFaultToleranceOptions: expected an object"),
    Case("deny-credential-both", raycluster(options={"redisPassword": {"value": "a", "valueFrom": SECRET_REF}}),
         denied="redisPassword: give value or valueFrom, not both"),
    Case("deny-username-value-and-value-from", raycluster(options={"redisUsername": {"value": "u", "valueFrom": SECRET_REF}}),
         denied="spec.gcsFaultToleranceOptions.redisUsername: give value or valueFrom, not both"),
    Case("deny-credential-both-on-worker", raycluster(options={"redisPassword": {"value": "a", "valueFrom": SECRET_REF}}),
         "worker", denied="redisPassword: give value or valueFrom, not both"),
    Case("credential-empty-value-with-value-from-is-valid", raycluster(options={"redisAddress": "r:1",
         "redisPassword": {"value": "", "valueFrom": SECRET_REF}}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "r:1", "REDIS_PASSWORD": SECRET_REF},
         no_warnings=True),  # the apiserver's rule too: a value may not be given with valueFrom unless empty
    # --- KubeRay's seven validation conflicts, as warnings ---
    Case("conflict-1-annotation-and-options", raycluster(annotations=FT, options={"redisAddress": "r:1"}), "worker",
         warnings=("ray.io/ft-enabled must not be set together",)),
    Case("conflict-2-address-without-ft", raycluster(head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}]),
         added={}, warnings=("RAY_REDIS_ADDRESS is set but GCS fault tolerance is off",)),
    Case("conflict-3-start-param-password-with-options", raycluster(options={"redisAddress": "r:1"},
         head_start_params={"redis-password": "x"}), "worker", warnings=("rayStartParams redis-password",)),
    Case("conflict-4-env-password-with-options", raycluster(options={"redisAddress": "r:1"},
         head_env=[env_secret("REDIS_PASSWORD", "s")]), "worker", warnings=("head env REDIS_PASSWORD",)),
    Case("conflict-5-env-address-with-options", raycluster(options={"redisAddress": "r:1"},
         head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:2"}]), "worker", warnings=("head env RAY_REDIS_ADDRESS with",)),
    Case("conflict-6-storage-annotation-with-options", raycluster(options={"redisAddress": "r:1"},
         annotations={"ray.io/external-storage-namespace": "x"}), "worker", warnings=("ray.io/external-storage-namespace with",)),
    Case("conflict-7-username-without-options", raycluster(annotations=FT, head_start_params={"redis-username": "u"}),
         "worker", warnings=("needs gcsFaultToleranceOptions.redisUsername",)),
    Case("conflict-7-env-username-without-options", raycluster(annotations=FT,
         head_env=[{"name": "REDIS_USERNAME", "value": "u"}]), "worker", warnings=("redisUsername",)),
    # --- odd values the apiserver accepts: a warning or a denial naming them, never an internal error ---
    Case("worker-user-timeout-superscript-digit-warns", raycluster(annotations=FT), "worker",
         pod_env=[{"name": TIMEOUT, "value": "\u00b2"}], added={}, warnings=(f"worker env {TIMEOUT} '\u00b2' is not",)),
    Case("worker-user-timeout-fullwidth-digits-warn", raycluster(annotations=FT), "worker",
         pod_env=[{"name": TIMEOUT, "value": "\uff16\uff10\uff10"}], added={}, warnings=("is not a positive integer",)),
    Case("worker-user-timeout-too-many-digits-warns", raycluster(annotations=FT), "worker",
         pod_env=[{"name": TIMEOUT, "value": "9" * 5000}], added={}, warnings=("'999999999999'... is not a positive integer",)),
    Case("worker-user-timeout-over-int32-warns", raycluster(annotations=FT), "worker",
         pod_env=[{"name": TIMEOUT, "value": "2147483648"}], added={}, warnings=("is not a positive integer",)),
    Case("worker-head-template-timeout-arabic-digit-warns", raycluster(annotations=FT,
         head_env=[{"name": TIMEOUT, "value": "\u0663"}]), "worker", added={TIMEOUT: "600"},
         warnings=(f"head template env {TIMEOUT} '\u0663' is not",)),
    Case("worker-head-template-timeout-too-many-digits-warns", raycluster(annotations=FT,
         head_env=[{"name": TIMEOUT, "value": "1" * 4301}]), "worker", added={TIMEOUT: "600"},
         warnings=("head template env",)),
    Case("worker-head-template-duplicate-timeout-last-wins", raycluster(annotations=FT,
         head_env=[{"name": TIMEOUT, "value": "30"}, {"name": TIMEOUT, "value": "900"}]), "worker",
         added={TIMEOUT: "600"}, warnings=("600s is not above the head's 900s",)),
    Case("worker-duplicate-timeout-last-wins", raycluster(annotations=FT), "worker",
         pod_env=[{"name": TIMEOUT, "value": "900"}, {"name": TIMEOUT, "value": "30"}], added={},
         warnings=("30s is not above",)),
    Case("deny-annotation-timeout-too-many-digits", raycluster(annotations={**FT,
         "ray-ft-webhook.io/worker-reconnect-timeout-s": "7" * 5000}), "worker", denied="is not a positive integer"),
    Case("deny-annotation-timeout-fullwidth", raycluster(annotations={**FT,
         "ray-ft-webhook.io/worker-reconnect-timeout-s": "\uff16\uff10\uff10"}), "worker", denied="is not a positive integer"),
    Case("head-duplicate-password-user-secret-first-is-kept", raycluster(annotations={**FT,
         "ray-ft-webhook.io/redis-password-secret": "pw", "ray-ft-webhook.io/redis-address": "r:1"}),
         pod_env=[env_secret("REDIS_PASSWORD", "mine"), {"name": "REDIS_PASSWORD", "value": ""}],
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "r:1"}),
    Case("head-duplicate-empty-password-is-not-a-placeholder", raycluster(annotations={**FT,
         "ray-ft-webhook.io/redis-password-secret": "pw", "ray-ft-webhook.io/redis-address": "r:1"}),
         pod_env=[{"name": "REDIS_PASSWORD", "value": ""}, {"name": "REDIS_PASSWORD", "value": ""}],
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "r:1"}),
    Case("head-duplicate-gen-cmd-is-left-alone", raycluster(options={"redisAddress": "r:1",
         "redisPassword": {"valueFrom": SECRET_REF}}),
         pod_env=[{"name": "KUBERAY_GEN_RAY_START_CMD", "value": "ray start --head --mine"}],
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "r:1", "REDIS_PASSWORD": SECRET_REF},
         flags=("--redis-password=$REDIS_PASSWORD",)),
    Case("deny-ft-annotation-not-a-string", raycluster(annotations={"ray.io/ft-enabled": True}),  # type: ignore[dict-item]
         "worker", denied="metadata.annotations[ray.io/ft-enabled]: expected a string, got bool"),
    Case("deny-storage-annotation-not-a-string", raycluster(annotations={**FT, "ray.io/external-storage-namespace": 7}),  # type: ignore[dict-item]
         denied="metadata.annotations[ray.io/external-storage-namespace]: expected a string, got int"),
    Case("deny-start-param-password-not-a-string", raycluster(annotations=FT,
         head_start_params={"redis-password": 12345}),  # type: ignore[dict-item]
         denied="spec.headGroupSpec.rayStartParams[redis-password]: expected a string, got int"),
    Case("deny-head-env-entry-not-an-object", raycluster(annotations=FT, head_env=["RAY_REDIS_ADDRESS=r:1"]),  # type: ignore[list-item]
         "worker", denied="spec.headGroupSpec.template.spec.containers[0].env[0]: expected an object with a string name"),
    Case("deny-head-env-value-not-a-string", raycluster(annotations=FT, head_env=[{"name": TIMEOUT, "value": 900}]),
         "worker", denied="containers[0].env[0].value: expected a string, got int"),
    Case("deny-credential-value-from-not-an-object", raycluster(options={"redisPassword": {"valueFrom": "secret"}}),
         denied="spec.gcsFaultToleranceOptions.redisPassword.valueFrom: expected an object, got str"),
    Case("deny-annotation-value-quoted-short", raycluster(annotations={**FT,
         "ray-ft-webhook.io/redis-password-secret": "x/" * 3000}), denied="'... is not NAME or NAME/KEY"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    result = run(case.cluster, case.role, case.settings, case.pod_env)
    if case.denied is not None:
        assert result.denied is not None and case.denied in result.denied
        assert result.patch == []
        return
    assert result.denied is None
    if case.added is not None:
        assert added_env(result) == case.added
    for key, value in (case.annotations or {}).items():
        assert annotations_of(result)[key] == value
    args0 = result.pod["spec"]["containers"][0]["args"][0]
    for flag in case.flags:
        assert args0.count(flag.partition("=")[0]) == 1 and flag in args0
    for expected in case.warnings:
        assert any(expected in w for w in result.warnings), result.warnings
    if case.no_warnings:
        assert result.warnings == ()
    assert all(len(w) < 120 for w in result.warnings)
    if case.skipped is not None:
        assert result.skipped is not None and case.skipped in result.skipped
        assert result.patch == []
    # The user's own entries (put first) are never touched, not even one whose name is duplicated.
    if case.pod_env is not None:
        assert result.pod["spec"]["containers"][0]["env"][:len(case.pod_env)] == case.pod_env
    # Idempotent: the plan on its own output adds nothing.
    assert render(case.cluster, result.pod, case.settings).patch == []


def test_worker_gets_nothing_else() -> None:
    cluster = raycluster(options={"redisAddress": "r:1", "redisPassword": {"valueFrom": SECRET_REF}})
    result = run(cluster, "worker")
    assert set(env_of(result)) - set(env_of(run(raycluster(), "worker"))) == {"RAY_gcs_rpc_server_reconnect_timeout_s"}
    assert annotations_of(result) == {"ray-ft-webhook.io/injected": "RAY_gcs_rpc_server_reconnect_timeout_s"}
    init_env = result.pod["spec"]["initContainers"][0]["env"]
    assert [e["name"] for e in init_env] == ["FQ_RAY_IP", "RAY_IP"]


def test_golden_head_ops_with_options() -> None:
    cluster = raycluster(options={"redisAddress": "redis:6379", "redisPassword": {"valueFrom": SECRET_REF}})
    p = pod(cluster, "head")
    p["metadata"]["annotations"] = {"team/owner": "ml"}
    gen_index = [e["name"] for e in p["spec"]["containers"][0]["env"]].index("KUBERAY_GEN_RAY_START_CMD")
    result = render(cluster, p, Settings())
    # KubeRay writes each flag as ` --key=value `, so its flags are two spaces apart.
    cmd = "ray start --head --redis-password=$REDIS_PASSWORD  --block  --dashboard-agent-listen-port=52365  " \
          "--dashboard-host=0.0.0.0  --metrics-export-port=8080  --num-cpus=0 "
    assert result.patch == [
        {"op": "add", "path": "/metadata/annotations/ray.io~1ft-enabled", "value": "true"},
        {"op": "add", "path": "/metadata/annotations/ray.io~1external-storage-namespace", "value": QUICKSTART_UID},
        {"op": "add", "path": "/metadata/annotations/ray-ft-webhook.io~1injected",
         "value": "ray.io/ft-enabled,ray.io/external-storage-namespace,RAY_external_storage_namespace,"
                  "RAY_REDIS_ADDRESS,REDIS_PASSWORD,--redis-password"},
        {"op": "add", "path": "/spec/containers/0/env/-",
         "value": {"name": "RAY_external_storage_namespace", "value": QUICKSTART_UID}},
        {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}},
        {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "REDIS_PASSWORD", "valueFrom": SECRET_REF}},
        {"op": "replace", "path": "/spec/containers/0/args/0", "value": "ulimit -n 65536; " + cmd},
        {"op": "replace", "path": f"/spec/containers/0/env/{gen_index}/value", "value": cmd},
    ]
    assert result.pod["metadata"]["annotations"]["team/owner"] == "ml"


def test_golden_worker_without_env_or_annotations() -> None:
    cluster = raycluster(annotations=FT)
    p = pod(cluster, "worker")
    del p["spec"]["containers"][0]["env"]
    assert render(cluster, p, Settings()).patch == [
        {"op": "add", "path": "/metadata/annotations",
         "value": {"ray-ft-webhook.io/injected": "RAY_gcs_rpc_server_reconnect_timeout_s"}},
        {"op": "add", "path": "/spec/containers/0/env",
         "value": [{"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "600"}]},
    ]


def test_legacy_kuberay_empty_password_placeholder_is_replaced() -> None:
    """KubeRay <= 1.2 adds REDIS_PASSWORD="" to every Ray container when the head template has none."""
    cluster = raycluster(annotations={**FT, "ray-ft-webhook.io/redis-password-secret": "pw"})
    result = run(cluster, pod_env=[{"name": "REDIS_PASSWORD", "value": ""}])
    index = [e["name"] for e in pod(cluster, "head")["spec"]["containers"][0]["env"]].index("KUBERAY_GEN_RAY_START_CMD")
    assert {"op": "replace", "path": "/spec/containers/0/env/0",
            "value": {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "password"}}}} \
        in result.patch
    assert "--redis-password=$REDIS_PASSWORD" in result.pod["spec"]["containers"][0]["args"][0]
    assert "--redis-password" in result.pod["spec"]["containers"][0]["env"][index + 1]["value"]
    assert "REDIS_PASSWORD" in annotations_of(result)["ray-ft-webhook.io/injected"].split(",")
    assert render(cluster, result.pod, Settings()).patch == []
    # The user's own empty password (in the head template) is theirs: kept.
    mine = raycluster(annotations={**FT, "ray-ft-webhook.io/redis-password-secret": "pw"},
                      head_env=[{"name": "REDIS_PASSWORD", "value": ""}])
    assert "REDIS_PASSWORD" not in [op["value"].get("name") for op in run(mine).patch if isinstance(op["value"], dict)]
    # Workers are left as they are.
    assert not any(op["op"] == "replace" for op in run(cluster, "worker", pod_env=[
        {"name": "REDIS_PASSWORD", "value": ""}]).patch)


LEGACY_PW_SOURCES = {
    "our-secret": (raycluster(annotations={**FT, "ray-ft-webhook.io/redis-password-secret": "pw"}), Settings(),
                   {"secretKeyRef": {"name": "pw", "key": "password"}}),
    "admin-secret": (raycluster(annotations={**FT, "ray-ft-webhook.io/redis-address": "r:1"}),
                     Settings(default_redis_password_secret=SecretRef("admin-pw", "pass")),
                     {"secretKeyRef": {"name": "admin-pw", "key": "pass"}}),
}


@pytest.mark.parametrize("source", LEGACY_PW_SOURCES, ids=LEGACY_PW_SOURCES.keys())
@pytest.mark.parametrize("role", ["head", "redis-cleanup"])
def test_legacy_kuberay_pods_get_their_placeholder_replaced(source: str, role: str) -> None:
    """The pods KubeRay v1.2.2 builds (its REDIS_PASSWORD entry has no `value` at all): the head and the cleanup
    pod get the password in place of the placeholder, once."""
    cluster, settings, value_from = LEGACY_PW_SOURCES[source]
    p = pod(cluster, "head", version=LEGACY) if role == "head" else cleanup_pod(cluster, version=LEGACY)
    env = p["spec"]["containers"][0]["env"]
    index = [e["name"] for e in env].index("REDIS_PASSWORD")
    assert env[index] == {"name": "REDIS_PASSWORD"}
    result = render(cluster, p, settings)
    assert {"op": "replace", "path": f"/spec/containers/0/env/{index}",
            "value": {"name": "REDIS_PASSWORD", "valueFrom": value_from}} in result.patch
    assert [e for e in result.pod["spec"]["containers"][0]["env"] if e["name"] == "REDIS_PASSWORD"] == [
        {"name": "REDIS_PASSWORD", "valueFrom": value_from}]
    assert render(cluster, result.pod, settings).patch == []


@pytest.mark.parametrize("entry", [
    {"name": "REDIS_PASSWORD", "value": "x"},  # KubeRay <= 1.2 copied rayStartParams' password: not a placeholder
    env_secret("REDIS_PASSWORD", "theirs"),  # another webhook's Secret
], ids=["non-empty", "value-from"])
def test_password_that_is_not_a_placeholder_is_kept(entry: dict[str, Any]) -> None:
    cluster = raycluster(annotations={**FT, "ray-ft-webhook.io/redis-password-secret": "pw"})
    result = run(cluster, pod_env=[entry])
    assert not any(op["op"] == "replace" and "/env/" in op["path"] and not op["path"].endswith("/value")
                   for op in result.patch)
    assert result.pod["spec"]["containers"][0]["env"][0] == entry
    assert "REDIS_PASSWORD" not in added_env(result)


def test_existing_flag_is_kept() -> None:
    cluster = raycluster(options={"redisAddress": "r:1", "redisPassword": {"valueFrom": SECRET_REF}},
                         head_start_params={"num-cpus": "0", "redis-password": "$MY_PW"})
    result = run(cluster)
    assert "REDIS_PASSWORD" in added_env(result)
    assert not any(op["path"].endswith("/args/0") for op in result.patch)
    assert "--redis-password=$MY_PW" in result.pod["spec"]["containers"][0]["args"][0]


def test_no_ray_start_warns() -> None:
    cluster = raycluster(options={"redisAddress": "r:1", "redisPassword": {"valueFrom": SECRET_REF}})
    p = pod(cluster, "head")
    p["spec"]["containers"][0]["args"] = ["python serve.py"]
    p["spec"]["containers"][0]["env"] = [e for e in p["spec"]["containers"][0]["env"]
                                         if e["name"] != "KUBERAY_GEN_RAY_START_CMD"]
    result = render(cluster, p, Settings())
    assert any("no 'ray start'" in w for w in result.warnings)
    assert result.pod["spec"]["containers"][0]["args"] == ["python serve.py"]


def test_existing_pod_annotations_are_not_overwritten() -> None:
    cluster = raycluster(options={"redisAddress": "r:1"})
    p = pod(cluster, "head")
    p["metadata"]["annotations"] = {"ray.io/ft-enabled": "true", "ray.io/external-storage-namespace": "kept"}
    result = render(cluster, p, Settings())
    assert annotations_of(result)["ray.io/external-storage-namespace"] == "kept"
    assert env_of(result)["RAY_external_storage_namespace"] == QUICKSTART_UID


def test_injected_annotation_merges_on_reinvocation() -> None:
    """Another webhook removed an env var we added: we add it again and keep the list complete."""
    cluster = raycluster(options={"redisAddress": "r:1"})
    first = run(cluster)
    p = first.pod
    p["spec"]["containers"][0]["env"] = [e for e in p["spec"]["containers"][0]["env"] if e["name"] != "RAY_REDIS_ADDRESS"]
    second = render(cluster, p, Settings())
    assert added_env(second) == {"RAY_REDIS_ADDRESS": "r:1"}
    assert annotations_of(second)["ray-ft-webhook.io/injected"] == annotations_of(first)["ray-ft-webhook.io/injected"]


@pytest.mark.parametrize("mutate, expected", [
    (lambda p: p["metadata"]["labels"].update({"ray.io/node-type": "redis"}), None),
    (lambda p: p["metadata"]["labels"].pop("ray.io/node-type"), None),
    (lambda p: (p["metadata"].pop("ownerReferences"), p["metadata"]["labels"].pop("ray.io/cluster")), None),
    (lambda p: p["metadata"].pop("ownerReferences"), "label"),
    (lambda p: p["metadata"]["ownerReferences"][0].update({"apiVersion": "ray.io/v1alpha1"}), "owner"),
    (lambda p: p["metadata"]["ownerReferences"][0].update({"controller": False}), "label"),
], ids=["other-node-type", "no-node-type", "no-owner-no-label", "label-only", "v1alpha1-owner", "non-controller-ref"])
def test_which_pods(mutate: Any, expected: str | None) -> None:
    cluster = raycluster(annotations=FT)
    p = pod(cluster, "worker")
    mutate(p)
    result = render(cluster, p, Settings())
    if expected is None:
        assert result.patch == [] and result.skipped == "not a head, worker or redis-cleanup pod of a RayCluster"
    else:
        assert added_env(result) == {"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}


def test_label_only_pod_uses_raycluster_uid() -> None:
    cluster = raycluster(options={"redisAddress": "r:1"})
    p = pod(cluster, "head", owner=False)
    assert env_of(render(cluster, p, Settings()))["RAY_external_storage_namespace"] == QUICKSTART_UID


def test_every_warning_is_short() -> None:
    """All warnings at once, on a cluster that breaks every rule we warn about."""
    cluster = raycluster(
        annotations={**FT, "ray.io/external-storage-namespace": "", "ray-ft-webhook.io/worker-reconnect-timeout-s": "5",
                     "ray-ft-webhook.io/unknown-one": "x"},
        options={"redisPassword": {"value": "p"}, "backend": "redis"},
        head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r"}, {"name": "REDIS_PASSWORD", "value": "p"},
                  {"name": "REDIS_USERNAME", "value": "u"}],
        head_start_params={"redis-password": "p", "redis-username": "u"},
    )
    warnings = run(cluster, "worker").warnings + run(cluster, "head").warnings
    assert len(set(warnings)) >= 7
    assert all(0 < len(w) < 120 for w in warnings)
    assert not any(w == "p" for w in warnings)


SECRET = "Sup3rS3cretValue"
# Each RayCluster carries SECRET where the webhook reads it and answers with a warning or a denial about it.
SECRET_CLUSTERS = {
    "options-plain-password": raycluster(options={"redisAddress": "r:1", "redisPassword": {"value": SECRET}}),
    "start-param-password": raycluster(annotations=FT, head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}],
                                       head_start_params={"redis-password": SECRET}),
    "head-env-password-with-options": raycluster(options={"redisAddress": "r:1"},
                                                 head_env=[{"name": "REDIS_PASSWORD", "value": SECRET}],
                                                 head_start_params={"redis-password": SECRET}),
    "options-address-with-credentials": raycluster(options={"redisAddress": f"redis://ray:{SECRET}@r:6379"}),
    "head-env-address-with-credentials": raycluster(annotations=FT, head_env=[
        {"name": "RAY_REDIS_ADDRESS", "value": f"ray:{SECRET}@r:6379"}]),
    "annotation-address-with-credentials": raycluster(annotations={
        **FT, "ray-ft-webhook.io/redis-address": f"rediss://:{SECRET}@r:6380"}),
    "annotation-address-with-credentials-and-space": raycluster(annotations={
        **FT, "ray-ft-webhook.io/redis-address": f"redis://ray:{SECRET} @r:6379"}),
    "denied-password-value-and-value-from": raycluster(options={
        "redisPassword": {"value": SECRET, "valueFrom": SECRET_REF}}),
    "denied-with-plain-password": raycluster(options={"redisPassword": {"value": SECRET}},
                                             annotations={"ray-ft-webhook.io/worker-reconnect-timeout-s": "bad"}),
}


def leaks_secret(text: str) -> bool:
    """Whether `text` holds SECRET or any 6 characters of it in a row (a quoted value is cut, not hidden)."""
    return any(SECRET[i:i + 6] in text for i in range(len(SECRET) - 5))


def password_literals_removed(op: dict[str, Any]) -> Any:
    """The op's value without the literal REDIS_PASSWORD it may add: the one place a plain password belongs
    (copied as KubeRay copies it, with a warning)."""
    entries = op["value"] if op["path"] == "/spec/containers/0/env" else [op["value"]]
    if op["path"].startswith("/spec/containers/0/env") and all(isinstance(e, dict) for e in entries):
        return [e for e in entries if e.get("name") != "REDIS_PASSWORD"]
    return op["value"]


@pytest.mark.parametrize("cluster", SECRET_CLUSTERS.values(), ids=SECRET_CLUSTERS.keys())
def test_secret_values_never_in_warnings_or_denials(cluster: dict[str, Any]) -> None:
    results = [run(cluster, role) for role in ("head", "worker")]
    results.append(render(cluster, cleanup_pod(cluster), Settings()))
    # The check can fail: the head's answer talks about the password or the address that holds it.
    assert results[0].warnings or results[0].denied
    for result in results:
        assert not any(leaks_secret(w) for w in result.warnings), result.warnings
        assert not leaks_secret(result.denied or ""), result.denied
        for op in result.patch:
            assert not leaks_secret(json.dumps([op["path"], password_literals_removed(op)])), op


# --- KubeRay 1.7's empty RAY_REDIS_ADDRESS (optional gcsFaultToleranceOptions.redisAddress) ---------------------

V17_PLACEHOLDER = [{"name": "RAY_REDIS_ADDRESS", "value": ""}]


@pytest.mark.parametrize(("cluster", "settings", "address"), [
    (raycluster(options={}, annotations={"ray-ft-webhook.io/redis-address": "ours:6379"}), Settings(), "ours:6379"),
    (raycluster(options={"redisPassword": {"valueFrom": SECRET_REF}}), Settings(default_redis_address="adm:6379"),
     "adm:6379"),
], ids=["our-annotation", "admin-default"])
def test_kuberay_17_empty_address_placeholder_is_replaced(cluster: dict[str, Any], settings: Settings,
                                                           address: str) -> None:
    """KubeRay 1.7 appends RAY_REDIS_ADDRESS="" to the head when the options give no address: it is KubeRay's,
    not the user's (the head template does not set it), and kept it would leave GCS in memory."""
    p = pod(cluster, "head")
    p["spec"]["containers"][0]["env"] = V17_PLACEHOLDER + p["spec"]["containers"][0]["env"]
    result = render(cluster, p, settings)
    assert {"op": "replace", "path": "/spec/containers/0/env/0",
            "value": {"name": "RAY_REDIS_ADDRESS", "value": address}} in result.patch
    assert [e for e in result.pod["spec"]["containers"][0]["env"] if e["name"] == "RAY_REDIS_ADDRESS"] == [
        {"name": "RAY_REDIS_ADDRESS", "value": address}]
    assert "RAY_REDIS_ADDRESS" in annotations_of(result)["ray-ft-webhook.io/injected"].split(",")
    assert not any("no Redis address" in w for w in result.warnings)
    assert render(cluster, result.pod, settings).patch == []


def test_kuberay_17_empty_address_placeholder_without_a_source_warns() -> None:
    cluster = raycluster(options={})
    result = run(cluster, pod_env=V17_PLACEHOLDER)
    assert not any(op["op"] == "replace" for op in result.patch)
    assert any("no Redis address is set" in w for w in result.warnings)


@pytest.mark.parametrize("head_env, pod_env", [
    ([{"name": "RAY_REDIS_ADDRESS", "value": ""}], V17_PLACEHOLDER),  # the user's own empty value
    (None, V17_PLACEHOLDER + V17_PLACEHOLDER),  # the name twice: one entry is someone else's
], ids=["users-own-empty-address", "name-twice"])
def test_empty_address_that_is_not_kuberays_is_kept(head_env: list[dict[str, Any]] | None,
                                                    pod_env: list[dict[str, Any]]) -> None:
    cluster = raycluster(options={}, annotations={"ray-ft-webhook.io/redis-address": "ours:6379"}, head_env=head_env)
    result = run(cluster, pod_env=pod_env)
    assert not any(op["op"] == "replace" for op in result.patch)
    assert result.pod["spec"]["containers"][0]["env"][:len(pod_env)] == pod_env


# --- values Ray's GCS dies on ---------------------------------------------------------------------------------

USER_ONLY = {**FT, "ray-ft-webhook.io/redis-address": "r:6379", "ray-ft-webhook.io/redis-username": "ray"}

FATAL_CASES = [
    Case("username-without-any-password-not-injected", raycluster(annotations=USER_ONLY), added=None,
         warnings=("REDIS_USERNAME from ray-ft-webhook.io/redis-username not injected",)),
    Case("username-with-admin-password-injected", raycluster(annotations=USER_ONLY),
         settings=Settings(default_redis_password_secret=SecretRef("adm", "pw")),
         flags=("--redis-username=$REDIS_USERNAME", "--redis-password=$REDIS_PASSWORD")),
    Case("username-with-pods-own-password-injected", raycluster(annotations=USER_ONLY),
         pod_env=[{"name": "REDIS_PASSWORD", "valueFrom": SECRET_REF}], flags=("--redis-username=$REDIS_USERNAME",)),
    Case("username-with-empty-own-password-not-injected", raycluster(annotations=USER_ONLY),
         pod_env=[{"name": "REDIS_PASSWORD", "value": "x"}, {"name": "REDIS_PASSWORD", "value": ""}],
         warnings=("not injected: no Redis password either",)),
    Case("options-username-without-password-warns", raycluster(options={
         "redisAddress": "r:6379", "redisUsername": {"value": "ray"}}),
         warnings=("REDIS_USERNAME from gcsFaultToleranceOptions not injected",)),
    Case("template-username-without-password-warns", raycluster(annotations={
         **FT, "ray-ft-webhook.io/redis-address": "r:6379"}, head_env=[{"name": "REDIS_USERNAME", "value": "u"}]),
         pod_env=[{"name": "REDIS_USERNAME", "value": "u"}],
         warnings=("Redis username from the head's env but no password from any source",)),
    Case("options-address-with-other-scheme-not-injected", raycluster(options={"redisAddress": "http://r:6379"}),
         warnings=("redisAddress 'http://r:6379' not injected: it has scheme 'http', not redis or rediss",
                   "no Redis address is set")),
    Case("options-address-with-credentials-not-injected",
         raycluster(options={"redisAddress": "redis://u:p@r:6379"}),
         warnings=("not injected: it has credentials; Ray reads them only as username and password",)),
    Case("template-address-without-port-warns", raycluster(annotations=FT, head_env=[
         {"name": "RAY_REDIS_ADDRESS", "value": "redis://r"}]), pod_env=[{"name": "RAY_REDIS_ADDRESS",
         "value": "redis://r"}], warnings=("head env RAY_REDIS_ADDRESS 'redis://r' has no host:port",)),
    Case("our-address-with-credentials-denied", raycluster(annotations={
         **FT, "ray-ft-webhook.io/redis-address": "redis://u:p@r:6379"}),
         denied="ray-ft-webhook.io/redis-address: '***@r:6379' is not an address Ray can use"),
    Case("our-rediss-address-list-accepted", raycluster(annotations={
         **FT, "ray-ft-webhook.io/redis-address": "rediss://a:6380,b:6379"}),
         added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "rediss://a:6380,b:6379"}),
]


@pytest.mark.parametrize("case", FATAL_CASES, ids=[c.id for c in FATAL_CASES])
def test_never_a_combination_ray_dies_on(case: Case) -> None:
    test_plan(case)
    result = run(case.cluster, case.role, case.settings, case.pod_env)
    env = env_of(result)
    if "REDIS_USERNAME" in added_env(result):
        assert "REDIS_PASSWORD" in env and env["REDIS_PASSWORD"] != ""
    if "RAY_REDIS_ADDRESS" in added_env(result):
        from webhook.core.redis_address import address_problem
        assert address_problem(added_env(result)["RAY_REDIS_ADDRESS"]) is None


@pytest.mark.parametrize(("address", "problem"), [
    ("r:6379", None), ("redis://r:6379", None), ("rediss://r:6380", None), ("a:1, b:2", None),
    ("[::1]:6379", None), ("redis://[fd00::1]:6379", None),
    ("http://r:6379", "has scheme 'http', not redis or rediss"),
    ("redis://u:p@r:6379", "has credentials; Ray reads them only as username and password"),
    ("redis://r", "has no host:port"), ("r:port", "has no valid port"), ("r:70000", "has no valid port"),
    ("r:\uff16\uff13\uff17\uff19", "has no valid port"),  # full-width digits
    ("a:1,,b:2", "has no host:port"), (" ", "is empty"), (":6379", "has no host:port"),
])
def test_redis_address_rules(address: str, problem: str | None) -> None:
    """What Ray 2.60's get_address accepts (checked against its source: ray._private.services.get_address)."""
    from webhook.core.redis_address import address_problem
    assert address_problem(address) == problem


# --- KubeRay's Redis cleanup pod (issue 12, section 1) ---

ADDRESS_ANN = "ray-ft-webhook.io/redis-address"
PASSWORD_ANN = "ray-ft-webhook.io/redis-password-secret"
USERNAME_ANN = "ray-ft-webhook.io/redis-username"
OURS = {**FT, ADDRESS_ANN: "redis:6379", PASSWORD_ANN: "pw/key", USERNAME_ANN: "ray"}
PW_REF = {"secretKeyRef": {"name": "pw", "key": "key"}}


@dataclass
class CleanupCase:
    id: str
    cluster: dict[str, Any]
    added: dict[str, Any]                    # exactly the env the patch adds
    settings: Settings = field(default_factory=Settings)
    version: str = "v1.6.2"
    kuberay_ft: bool = True
    username_rewrite: bool = False
    replaced: dict[str, Any] | None = None   # env replaced in place (KubeRay <= 1.2's empty password)
    template_env: list[dict[str, Any]] | None = None


CLEANUP_CASES = [
    CleanupCase("annotations-give-all-three", raycluster(annotations=OURS),
                added={"RAY_REDIS_ADDRESS": "redis:6379", "REDIS_USERNAME": "ray", "REDIS_PASSWORD": PW_REF},
                username_rewrite=True),
    CleanupCase("admin-defaults", raycluster(annotations=FT),
                settings=Settings(default_redis_address="rediss://r:6380",
                                  default_redis_password_secret=SecretRef("adm", "password")),
                added={"RAY_REDIS_ADDRESS": "rediss://r:6380",
                       "REDIS_PASSWORD": {"secretKeyRef": {"name": "adm", "key": "password"}}}),
    CleanupCase("options-kuberay-gave-everything", raycluster(options={
        "redisAddress": "r:1", "redisUsername": {"value": "u"}, "redisPassword": {"valueFrom": SECRET_REF}}), added={}),
    CleanupCase("options-without-kuberay-ft-step", raycluster(options={
        "redisAddress": "r:1", "redisUsername": {"value": "u"}, "redisPassword": {"valueFrom": SECRET_REF}}),
        kuberay_ft=False, username_rewrite=True,
        added={"RAY_external_storage_namespace": QUICKSTART_UID, "RAY_REDIS_ADDRESS": "r:1", "REDIS_USERNAME": "u",
               "REDIS_PASSWORD": SECRET_REF}),
    CleanupCase("start-param-password-kuberay-copied", raycluster(annotations={**FT, ADDRESS_ANN: "r:1"},
                head_start_params={"redis-password": "pw"}), added={"RAY_REDIS_ADDRESS": "r:1"}),
    CleanupCase("present-wins", raycluster(annotations=OURS),
                template_env=[{"name": "RAY_REDIS_ADDRESS", "value": "mine:1"}, env_secret("REDIS_PASSWORD", "mine"),
                              {"name": "REDIS_USERNAME", "value": "me"}], added={}),
    CleanupCase("storage-namespace-kuberays-own", raycluster(
                annotations={**FT, ADDRESS_ANN: "r:1", "ray.io/external-storage-namespace": "kept"}),
                added={"RAY_REDIS_ADDRESS": "r:1"}),
    CleanupCase("legacy-empty-password-placeholder-replaced", raycluster(annotations=OURS), version=LEGACY,
                added={"RAY_REDIS_ADDRESS": "redis:6379", "REDIS_USERNAME": "ray"}, username_rewrite=True,
                replaced={"REDIS_PASSWORD": PW_REF}),
    # The user's empty password is kept, so no password reaches Redis: no username either (Redis refuses a
    # username without a password, and the head's GCS would abort on it).
    CleanupCase("legacy-users-empty-password-kept", raycluster(annotations=OURS), version=LEGACY,
                template_env=[{"name": "REDIS_PASSWORD", "value": ""}], added={"RAY_REDIS_ADDRESS": "redis:6379"}),
]


def _cleanup_cluster(case: CleanupCase) -> dict[str, Any]:
    cluster = case.cluster
    if case.template_env is not None:
        cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"] = case.template_env
    return cluster


@pytest.mark.parametrize("case", CLEANUP_CASES, ids=[c.id for c in CLEANUP_CASES])
def test_cleanup_pod(case: CleanupCase) -> None:
    cluster = _cleanup_cluster(case)
    p = cleanup_pod(cluster, case.version, kuberay_ft=case.kuberay_ft)
    result = render(cluster, p, case.settings)
    assert result.denied is None and result.skipped is None
    assert added_env(result) == case.added
    replaced = {op["value"]["name"]: op["value"].get("valueFrom", op["value"].get("value"))
                for op in result.patch if op["op"] == "replace" and "/env/" in op["path"]}
    assert replaced == (case.replaced or {})
    line = p["spec"]["containers"][0]["args"][0]
    args0 = result.pod["spec"]["containers"][0]["args"][0]
    if case.username_rewrite:
        assert args0 == cleanup.add_username(line) != line and args0.count("username=") == 1
    else:
        assert args0 == line
    # Nothing but the Redis values: no ray start flags, timeouts or FT annotations are added.
    assert all(op["path"] in ("/spec/containers/0/env/-", "/spec/containers/0/args/0",
                              "/metadata/annotations/ray-ft-webhook.io~1injected")
               or (op["op"] == "replace" and "/env/" in op["path"])
               or (op["path"] == "/metadata/annotations" and list(op["value"]) == ["ray-ft-webhook.io/injected"])
               for op in result.patch)
    injected = annotations_of(result).get("ray-ft-webhook.io/injected", "")
    expected = [*case.added, *(case.replaced or {})] + (["cleanup_redis_storage(username)"] if case.username_rewrite else [])
    assert injected.split(",") == (expected if expected else [""])
    # The storage namespace is KubeRay's: whatever the pod had is kept.
    if case.kuberay_ft:
        assert env_of(result)["RAY_external_storage_namespace"] == env_of(
            render(cluster, p, Settings())).get("RAY_external_storage_namespace")
    # Idempotent.
    assert render(cluster, result.pod, case.settings).patch == []


def test_cleanup_pod_golden_ops() -> None:
    cluster = raycluster(annotations=OURS)
    p = cleanup_pod(cluster)
    n = len(p["spec"]["containers"][0]["env"])
    assert render(cluster, p, Settings()).patch == [
        {"op": "add", "path": "/metadata/annotations/ray-ft-webhook.io~1injected",
         "value": "RAY_REDIS_ADDRESS,REDIS_USERNAME,REDIS_PASSWORD,cleanup_redis_storage(username)"},
        {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}},
        {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "REDIS_USERNAME", "value": "ray"}},
        {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "REDIS_PASSWORD", "valueFrom": PW_REF}},
        {"op": "replace", "path": "/spec/containers/0/args/0", "value": cleanup.add_username(cleanup_line())},
    ]
    assert n == len(p["spec"]["containers"][0]["env"])


def test_cleanup_pod_without_address_warns() -> None:
    cluster = raycluster(annotations=FT)
    result = render(cluster, cleanup_pod(cluster), Settings())
    assert added_env(result) == {} and any("no Redis address" in w for w in result.warnings)


def test_cleanup_line_without_call_warns_on_username() -> None:
    cluster = raycluster(annotations=OURS)
    p = cleanup_pod(cluster)
    p["spec"]["containers"][0]["args"] = ["echo nothing"]
    result = render(cluster, p, Settings())
    assert "REDIS_USERNAME" in added_env(result)
    assert result.pod["spec"]["containers"][0]["args"] == ["echo nothing"]
    assert any("cleanup_redis_storage" in w for w in result.warnings)


def test_cleanup_line_with_a_username_is_kept() -> None:
    cluster = raycluster(annotations=OURS)
    p = cleanup_pod(cluster)
    p["spec"]["containers"][0]["args"] = [cleanup_line(username=True)]
    result = render(cluster, p, Settings())
    assert "REDIS_USERNAME" in added_env(result)
    assert not any(op["path"].endswith("/args/0") for op in result.patch)


def _python_code(line: str) -> str:
    import shlex
    words = shlex.split(line)
    return words[words.index("-c") + 1]


@pytest.mark.parametrize("version", ["v1.2.2", "v1.6.2"])
def test_username_rewrite_is_valid_python(version: str) -> None:
    import ast
    line = cleanup_line(version)
    rewritten = cleanup.add_username(line)
    assert cleanup.add_username(rewritten) == rewritten
    call = next(n for n in ast.walk(ast.parse(_python_code(rewritten)))
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "cleanup_redis_storage")
    assert [k.arg for k in call.keywords] == ["host", "port", "password", "use_ssl", "storage_namespace", "username"]
    assert ast.unparse(call.keywords[-1].value) == "os.getenv('REDIS_USERNAME')"
    # Only the call changed.
    assert rewritten.replace(", username=os.getenv('REDIS_USERNAME')", "") == line


@pytest.mark.parametrize("line, expected", [
    ("cleanup_redis_storage()", "cleanup_redis_storage(username=os.getenv('REDIS_USERNAME'))"),
    ("cleanup_redis_storage(host=f('(')) else None", "cleanup_redis_storage(host=f('('), "
                                                     "username=os.getenv('REDIS_USERNAME')) else None"),
    ("cleanup_redis_storage(host=x", "cleanup_redis_storage(host=x"),
    ("python -c 'pass'", "python -c 'pass'"),
])
def test_add_username_edges(line: str, expected: str) -> None:
    assert cleanup.add_username(line) == expected


# --- the exact texts: what kubectl users read ---------------------------------------------------------------------

EVERY_RULE_BROKEN = raycluster(
    annotations={**FT, "ray.io/external-storage-namespace": "", "ray-ft-webhook.io/worker-reconnect-timeout-s": "5",
                 "ray-ft-webhook.io/unknown-one": "x"},
    options={"redisPassword": {"value": "p"}, "redisAddress": "http://u:p@r:1"},
    head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r"}, {"name": "REDIS_PASSWORD", "value": "p"},
              {"name": "REDIS_USERNAME", "value": "u"}],
    head_start_params={"redis-password": "p", "redis-username": "u"},
)
HEAD_WARNINGS = (
    "unknown annotation ray-ft-webhook.io/unknown-one on the RayCluster is ignored",
    "KubeRay conflict: ray.io/ft-enabled must not be set together with gcsFaultToleranceOptions",
    "KubeRay conflict: rayStartParams redis-password with gcsFaultToleranceOptions; use redisPassword",
    "KubeRay conflict: head env REDIS_PASSWORD with gcsFaultToleranceOptions; use redisPassword",
    "KubeRay conflict: head env RAY_REDIS_ADDRESS with gcsFaultToleranceOptions; use redisAddress",
    "the external storage namespace is empty; give each RayCluster its own namespace",
    "redisAddress '***@r:1' not injected: it has scheme 'http', not redis or rediss",
    "head env RAY_REDIS_ADDRESS 'r' has no host:port: GCS cannot start",
    "the Redis password is plain text in the RayCluster; keep it in a Secret",
)
OFF_WITH_CONFLICTS = raycluster(head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}],
                                head_start_params={"redis-username": "u"})
NO_ADDRESS = "GCS fault tolerance is on but no Redis address is set: Ray keeps GCS state in memory"
USERNAME_CONFLICT = "KubeRay conflict: a Redis username needs gcsFaultToleranceOptions.redisUsername"
CLEANUP_OURS = raycluster(annotations={**FT, "ray-ft-webhook.io/redis-address": "r:1",
                                       "ray-ft-webhook.io/redis-password-secret": "pw",
                                       "ray-ft-webhook.io/redis-username": "ray"})

EXACT_TEXTS = {
    "head": (EVERY_RULE_BROKEN, "head", HEAD_WARNINGS, None),
    "worker": (EVERY_RULE_BROKEN, "worker", (*HEAD_WARNINGS,
               "worker GCS reconnect timeout 5s is not above the head's 60s; workers may exit in a head restart"), None),
    "ft-off": (OFF_WITH_CONFLICTS, "worker", (
        "KubeRay conflict: head env RAY_REDIS_ADDRESS is set but GCS fault tolerance is off", USERNAME_CONFLICT),
        "GCS fault tolerance is off"),
    "inject-off": (raycluster(annotations={**FT, "ray-ft-webhook.io/inject": "false"},
                              head_start_params={"redis-username": "u"}), "worker", (USERNAME_CONFLICT,),
                   "ray-ft-webhook.io/inject is false"),
    "other-backend": (raycluster(options={"backend": "rocksdb"}, annotations=FT), "worker", (
        "KubeRay conflict: ray.io/ft-enabled must not be set together with gcsFaultToleranceOptions",
        "GCS FT backend 'rocksdb' is left to KubeRay; ray-ft-webhook handles redis"), "backend rocksdb"),
    "username-from-start-params": (raycluster(annotations={**FT, "ray-ft-webhook.io/redis-address": "r:1"},
                                              head_start_params={"redis-username": "u"}), "head", (
        USERNAME_CONFLICT, "Redis username from rayStartParams but no password from any source: Ray's GCS aborts"),
        None),
    "username-from-options": (raycluster(options={"redisAddress": "r:1", "redisUsername": {"value": "u"}}), "head", (
        "REDIS_USERNAME from gcsFaultToleranceOptions not injected: no Redis password either; Ray's GCS aborts on that",
    ), None),
    "no-address": (raycluster(annotations=FT), "worker", (NO_ADDRESS,), None),
    "storage-annotation-with-options": (raycluster(options={"redisAddress": "r:1"},
                                                   annotations={"ray.io/external-storage-namespace": "x"}), "worker", (
        "KubeRay conflict: ray.io/external-storage-namespace with gcsFaultToleranceOptions; use externalStorageNamespace",
    ), None),
    "plain-password-in-the-head-env": (raycluster(annotations=FT, head_env=[
        {"name": "REDIS_PASSWORD", "value": "p"}, {"name": "RAY_REDIS_ADDRESS", "value": "r:1"}]), "head",
        ("the Redis password is plain text in the RayCluster; keep it in a Secret",), None),
    "long-bad-addresses-cut": (raycluster(options={"redisAddress": "http://a-very-long-redis-host:6379"}, head_env=[
        {"name": "RAY_REDIS_ADDRESS", "value": "a-very-long-redis-host-without-a-port"}]), "head", (
        "KubeRay conflict: head env RAY_REDIS_ADDRESS with gcsFaultToleranceOptions; use redisAddress",
        "redisAddress 'http://a-very-long-r'... not injected: it has scheme 'http', not redis or rediss",
        "head env RAY_REDIS_ADDRESS 'a-very-long-redis-host-w'... has no host:port: GCS cannot start"), None),
    # Only a head's (or cleanup pod's) own address counts; a worker's is not where GCS reads it.
    "address-in-the-head-pod-only": (raycluster(annotations=FT), "head", (), None),
    "address-in-a-worker-pod-only": (raycluster(annotations=FT), "worker", (NO_ADDRESS,), None),
}
POD_ADDRESS = {"address-in-the-head-pod-only", "address-in-a-worker-pod-only"}


@pytest.mark.parametrize("case", EXACT_TEXTS)
def test_exact_warnings(case: str) -> None:
    cluster, role, warnings, skipped = EXACT_TEXTS[case]
    pod_env = [{"name": "RAY_REDIS_ADDRESS", "value": "r:1"}] if case in POD_ADDRESS else None
    result = run(cluster, role, pod_env=pod_env)
    assert (result.warnings, result.skipped) == (warnings, skipped)


def test_exact_denial_lists_every_error() -> None:
    cluster = raycluster(annotations={"ray-ft-webhook.io/inject": "x", "ray-ft-webhook.io/redis-address": "a b"})
    assert run(cluster, "worker").denied == (
        "RayCluster default/raycluster-external-redis: annotation ray-ft-webhook.io/inject: 'x' is not \"true\" or "
        "\"false\"; annotation ray-ft-webhook.io/redis-address: 'a b' must be non-empty and contain no spaces")


def test_exact_warnings_without_a_command_line() -> None:
    head = pod(CLEANUP_OURS, "head")
    head["spec"]["containers"][0]["args"] = ["python serve.py"]
    head["spec"]["containers"][0]["env"] = [e for e in head["spec"]["containers"][0]["env"]
                                            if e["name"] != "KUBERAY_GEN_RAY_START_CMD"]
    result = render(CLEANUP_OURS, head, Settings())
    assert result.warnings == (
        "no 'ray start' in the Ray container's args[0]: pass the Redis credentials to it yourself",)
    # No flag was added anywhere, so none is listed as injected.
    assert not any(n.startswith("--") for n in annotations_of(result)["ray-ft-webhook.io/injected"].split(","))
    for args in (["echo hi"], []):
        p = cleanup_pod(CLEANUP_OURS, kuberay_ft=False)
        p["spec"]["containers"][0]["args"] = args
        result = render(CLEANUP_OURS, p, Settings())
        assert result.warnings == (
            "no cleanup_redis_storage call in the cleanup pod's args[0]: it ignores REDIS_USERNAME",)
        assert "REDIS_USERNAME" in added_env(result) and result.pod["spec"]["containers"][0]["args"] == args


def test_both_placeholders_replaced() -> None:
    """A head with KubeRay's empty REDIS_PASSWORD and RAY_REDIS_ADDRESS both: each gets its value in place."""
    result = run(CLEANUP_OURS, pod_env=[{"name": "REDIS_PASSWORD", "value": ""}, {"name": "RAY_REDIS_ADDRESS"}])
    assert result.pod["spec"]["containers"][0]["env"][:2] == [
        {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "password"}}},
        {"name": "RAY_REDIS_ADDRESS", "value": "r:1"}]


def test_raycluster_without_uid_uses_the_owner_uid() -> None:
    """A RayCluster from a manifest file may have no uid: the pod's ownerReference gives the storage namespace."""
    cluster = raycluster(options={"redisAddress": "r:1"})
    p = pod(cluster, "head")
    del cluster["metadata"]["uid"]
    assert env_of(render(cluster, p, Settings()))["RAY_external_storage_namespace"] == QUICKSTART_UID


def test_decide_takes_the_owner_uid_too() -> None:
    """`decide` (what `check` judges a live head with) plans like `mutate`: the owner's uid stands in for the
    storage namespace of a RayCluster without one."""
    from webhook.core.plan import decide
    from webhook.core.pod import read_ray_pod

    cluster = raycluster(options={"redisAddress": "r:1"})
    facts = read_ray_pod(pod(cluster, "head"), "default")
    del cluster["metadata"]["uid"]
    assert facts is not None
    decision = decide(parse_raycluster(cluster), facts, Settings())
    env = {e.name: e.value for e in getattr(decision, "env", ())}
    assert env["RAY_external_storage_namespace"] == QUICKSTART_UID


def test_value_from_is_copied_deeply() -> None:
    """A valueFrom reaches the patch as given, lists included."""
    value_from = {"secretKeyRef": {"name": "s", "key": "k"}, "x-extension": [{"a": 1}, "b"]}
    cluster = raycluster(options={"redisAddress": "r:1", "redisPassword": {"valueFrom": value_from}})
    op = next(op for op in run(cluster).patch
              if isinstance(op["value"], dict) and op["value"].get("name") == "REDIS_PASSWORD")
    assert op["value"]["valueFrom"] == value_from


# -- sources, findings and the cleanup pod's gaps, exactly -------------------------------------------------------

def _rows(cluster: dict[str, Any], settings: Settings | None = None,
          namespace: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    from webhook.core.namespace import parse_namespace
    from webhook.core.plan import plan_cluster
    from webhook.core.validation import describe
    ns = parse_namespace({"metadata": {"name": "team", "annotations": namespace}}) if namespace else None
    v = plan_cluster(parse_raycluster(cluster), settings or Settings(), ns=ns).values
    assert v is not None
    return {name: (shown, source) for name, shown, source in describe(v)}


def test_every_value_names_its_source() -> None:
    own = _rows(raycluster(annotations={**FT, "ray.io/external-storage-namespace": "pinned",
                                        "ray-ft-webhook.io/head-reconnect-timeout-s": "45",
                                        "ray-ft-webhook.io/worker-reconnect-timeout-s": "900"},
                           head_start_params={"redis-password": "pw"}),
                Settings(head_reconnect_timeout_s=30))
    assert own["RAY_external_storage_namespace"] == ("pinned", "annotation ray.io/external-storage-namespace")
    assert own["REDIS_PASSWORD"] == ("(plain text)", "rayStartParams redis-password")
    # The RayCluster's own timeout wins over the admin's.
    assert own[f"{TIMEOUT} (head)"] == ("45", "annotation ray-ft-webhook.io/head-reconnect-timeout-s")
    assert own[f"{TIMEOUT} (workers)"] == ("900", "annotation ray-ft-webhook.io/worker-reconnect-timeout-s")
    options = _rows(raycluster(options={"redisAddress": "r:6379", "externalStorageNamespace": "opt"}))
    assert options["RAY_external_storage_namespace"] == ("opt", "gcsFaultToleranceOptions.externalStorageNamespace")
    tenant = _rows(raycluster(annotations=FT), namespace={"ray-ft-webhook.io/redis-password-secret": "pw/k"})
    assert tenant["REDIS_PASSWORD"] == ("Secret pw/k", "annotation ray-ft-webhook.io/redis-password-secret on "
                                                       "Namespace team")
    assert f"{TIMEOUT} (head)" not in _rows(raycluster(annotations=FT))


def test_a_username_without_a_password_names_where_the_username_comes_from() -> None:
    from webhook.core.plan import cluster_findings, plan_cluster

    def findings(**kwargs: Any) -> tuple[str, ...]:
        c = parse_raycluster(raycluster(annotations={**FT, "ray-ft-webhook.io/redis-address": "r:6379"}, **kwargs))
        return cluster_findings(c, plan_cluster(c, Settings()))

    def gap(source: str) -> str:
        return f"Redis username from {source} but no password from any source: Ray's GCS aborts"

    user = {"name": "REDIS_USERNAME", "value": "ray"}
    assert gap("the head's env") in findings(head_env=[user])
    assert gap("the head's env") in findings(head_env=[user, {"name": "REDIS_PASSWORD", "value": ""}])
    assert not any("no password" in f for f in findings(
        head_env=[user, {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]))
    assert gap("rayStartParams") in findings(head_start_params={"redis-username": "ray"})


def test_a_head_template_timeout_ray_cannot_read_is_named() -> None:
    from webhook.core.plan import cluster_findings, plan_cluster
    c = parse_raycluster(raycluster(annotations={**FT, "ray-ft-webhook.io/redis-address": "r:6379"},
                                    head_env=[{"name": TIMEOUT, "value": "soon"}]))
    assert f"head template env {TIMEOUT} 'soon' is not a positive integer" in cluster_findings(
        c, plan_cluster(c, Settings()))


def test_the_namespaces_username_without_a_password_is_named_on_the_head() -> None:
    cluster = raycluster(annotations={**FT, "ray-ft-webhook.io/redis-address": "r:6379"})
    ns = {"metadata": {"name": "default", "annotations": {"ray-ft-webhook.io/redis-username": "ray"}}}
    result = render(cluster, pod(cluster, "head"), Settings(), ns)
    assert result.warnings == ("REDIS_USERNAME from annotation ray-ft-webhook.io/redis-username on Namespace default "
                               "not injected: no Redis password either; Ray's GCS aborts on that",)


def test_the_cleanup_pod_without_an_address_is_a_gap() -> None:
    from webhook.core.plan import NO_ADDRESS, Plan, decide
    from webhook.core.pod import read_ray_pod
    cluster = raycluster(annotations=FT)
    facts = read_ray_pod(cleanup_pod(cluster), "default")
    assert facts is not None
    plan = decide(parse_raycluster(cluster), facts, Settings())
    assert isinstance(plan, Plan) and plan.gaps == (NO_ADDRESS,)


def test_every_error_of_a_namespace_is_in_its_denial() -> None:
    from webhook.core.namespace import parse_namespace
    from webhook.core.plan import plan_cluster
    ns = parse_namespace({"metadata": {"name": "team", "annotations": {
        "ray-ft-webhook.io/head-reconnect-timeout-s": "x", "ray-ft-webhook.io/worker-reconnect-timeout-s": "y"}}})
    denied = plan_cluster(parse_raycluster(raycluster(annotations=FT)), Settings(), ns=ns).denied
    assert denied == "Namespace team: " + "; ".join(ns.errors) and len(ns.errors) == 2
