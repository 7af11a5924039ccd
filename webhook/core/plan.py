"""The decision: RayCluster facts + pod facts + settings -> an immutable Plan (or a Deny). No I/O.

The rules follow KubeRay >= 1.3 (`configureGCSFaultTolerance`; the README's behaviour table lists them):
a value the Ray container already sets always wins; otherwise each value comes from the first source that
gives one: `spec.gcsFaultToleranceOptions`, then the RayCluster's annotations, then the admin's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.core import annotations as ann
from webhook.core import cleanup, raystart
from webhook.core.pod import PodFacts
from webhook.core.raycluster import ClusterFacts, Credential
from webhook.core.redis_address import address_problem, redacted
from webhook.core.settings import RAY_DEFAULT_RECONNECT_TIMEOUT_S, Settings, parse_positive_int, quote

ENV_STORAGE_NAMESPACE = "RAY_external_storage_namespace"
ENV_REDIS_ADDRESS = "RAY_REDIS_ADDRESS"
ENV_REDIS_USERNAME = "REDIS_USERNAME"
ENV_REDIS_PASSWORD = "REDIS_PASSWORD"
ENV_RECONNECT_TIMEOUT = "RAY_gcs_rpc_server_reconnect_timeout_s"

FLAG_REDIS_PASSWORD = "--redis-password=$REDIS_PASSWORD"
FLAG_REDIS_USERNAME = "--redis-username=$REDIS_USERNAME"
# A credential the webhook injects is useless unless `ray start` is told to read it.
_CREDENTIAL_FLAGS = ((ENV_REDIS_USERNAME, FLAG_REDIS_USERNAME), (ENV_REDIS_PASSWORD, FLAG_REDIS_PASSWORD))


@dataclass(frozen=True)
class EnvVar:
    """One env entry to add, as Kubernetes writes it: a literal `value` or a `valueFrom` copied as given."""

    name: str
    value: str = ""
    value_from: Mapping[str, Any] | None = None

    @property
    def gives_value(self) -> bool:
        """The container gets something: a `valueFrom` (resolved later) or a non-empty literal."""
        return self.value_from is not None or self.value != ""

    def to_k8s(self) -> dict[str, Any]:
        if self.value_from is not None:
            return {"name": self.name, "valueFrom": _deep_copy(self.value_from)}
        return {"name": self.name, "value": self.value}


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


@dataclass(frozen=True)
class Plan:
    """What to add to one pod. Empty when nothing is missing; `skipped` says why nothing applies at all."""

    annotations: tuple[tuple[str, str], ...] = ()
    env: tuple[EnvVar, ...] = ()
    # Env entries to replace in place, by index: only KubeRay's own empty placeholders (`_kuberay_placeholder`).
    replace_env: tuple[tuple[int, EnvVar], ...] = ()
    ray_start_flags: tuple[str, ...] = ()
    # The Redis cleanup pod's rewritten args[0] (told to pass the injected REDIS_USERNAME), or None.
    cleanup_args0: str | None = None
    warnings: tuple[str, ...] = ()
    skipped: str | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.annotations or self.env or self.replace_env or self.ray_start_flags
                    or self.cleanup_args0 is not None)

    @property
    def injected_names(self) -> tuple[str, ...]:
        """Names for the pod's `ray-ft-webhook.io/injected` annotation, in patch order."""
        return (
            tuple(k for k, _ in self.annotations)
            + tuple(e.name for e in self.env)
            + tuple(e.name for _, e in self.replace_env)
            + tuple(raystart.flag_name(f) for f in self.ray_start_flags)
            + ((cleanup.INJECTED_NAME,) if self.cleanup_args0 is not None else ())
        )


@dataclass(frozen=True)
class Deny:
    """Refuse the pod; `message` names what is wrong and the bad value."""

    message: str


Decision = Plan | Deny


@dataclass(frozen=True)
class _Values:
    """The resolved FT values for one cluster; None where no source gives one."""

    storage_namespace: str | None
    redis_address: str | None
    redis_username: EnvVar | None
    redis_password: EnvVar | None
    head_timeout_s: int | None
    worker_timeout_s: int
    warnings: tuple[str, ...] = ()


# KubeRay >= 1.3's validation of the RayCluster; KubeRay refuses to create pods for these.
def kuberay_conflicts(c: ClusterFacts) -> list[str]:
    """Warnings for each of KubeRay's seven FT validation rules (`ValidateRayClusterSpec`, KubeRay >= 1.3) that
    `c` breaks."""
    out: list[str] = []
    opts = c.options is not None
    if opts and c.ft_annotation:
        out.append("KubeRay conflict: ray.io/ft-enabled must not be set together with gcsFaultToleranceOptions")
    if not c.ft_enabled and ENV_REDIS_ADDRESS in c.head_env.names:
        out.append("KubeRay conflict: head env RAY_REDIS_ADDRESS is set but GCS fault tolerance is off")
    if opts and c.head_start_params.get("redis-password"):
        out.append("KubeRay conflict: rayStartParams redis-password with gcsFaultToleranceOptions; use redisPassword")
    if opts and ENV_REDIS_PASSWORD in c.head_env.names:
        out.append("KubeRay conflict: head env REDIS_PASSWORD with gcsFaultToleranceOptions; use redisPassword")
    if opts and ENV_REDIS_ADDRESS in c.head_env.names:
        out.append("KubeRay conflict: head env RAY_REDIS_ADDRESS with gcsFaultToleranceOptions; use redisAddress")
    if opts and c.storage_namespace_annotation:
        out.append(
            "KubeRay conflict: ray.io/external-storage-namespace with gcsFaultToleranceOptions; "
            "use externalStorageNamespace"
        )
    if not opts and (c.head_start_params.get("redis-username") or ENV_REDIS_USERNAME in c.head_env.names):
        out.append("KubeRay conflict: a Redis username needs gcsFaultToleranceOptions.redisUsername")
    return out


def _credential_env(name: str, cred: Credential) -> EnvVar:
    return EnvVar(name=name, value=cred.value, value_from=cred.value_from)


def _secret_env(name: str, secret_name: str, key: str) -> EnvVar:
    return EnvVar(name=name, value_from={"secretKeyRef": {"name": secret_name, "key": key}})


def _is_env_reference(value: str) -> bool:
    """`$REDIS_PASSWORD` in rayStartParams names a variable for bash; it is not a password."""
    return value.startswith("$")


def _resolve(c: ClusterFacts, owner_uid: str | None, s: Settings) -> _Values:
    opts, ours = c.options, c.ours
    warnings: list[str] = []

    storage_ns: str | None = c.uid or owner_uid or None
    if c.storage_namespace_annotation is not None:
        storage_ns = c.storage_namespace_annotation
    if opts is not None and opts.external_storage_namespace:
        storage_ns = opts.external_storage_namespace
    if storage_ns == "":
        warnings.append("the external storage namespace is empty; give each RayCluster its own namespace")

    address = (opts.redis_address if opts else "") or ours.redis_address or s.default_redis_address or ""
    # Ours and the admin's are checked when parsed; one the RayCluster gives is never injected if Ray dies on it.
    problem = address_problem(address) if address else None
    if problem is not None:
        warnings.append(f"redisAddress {quote(redacted(address), 20)} not injected: it {problem}")
        address = ""
    template_address = c.head_env.values.get(ENV_REDIS_ADDRESS)
    problem = address_problem(template_address) if template_address else None
    if template_address and problem is not None:
        warnings.append(f"head env RAY_REDIS_ADDRESS {quote(redacted(template_address), 24)} {problem}: "
                        "GCS cannot start")

    username: EnvVar | None = None
    if opts is not None and opts.redis_username is not None:
        username = _credential_env(ENV_REDIS_USERNAME, opts.redis_username)
    elif ours.redis_username:
        username = EnvVar(name=ENV_REDIS_USERNAME, value=ours.redis_username)

    start_param_password = c.head_start_params.get("redis-password")
    password: EnvVar | None = None
    if opts is not None and opts.redis_password is not None:
        password = _credential_env(ENV_REDIS_PASSWORD, opts.redis_password)
    elif ours.redis_password_secret is not None:
        ref = ours.redis_password_secret
        password = _secret_env(ENV_REDIS_PASSWORD, ref.name, ref.key)
    elif opts is None and start_param_password is not None and not _is_env_reference(start_param_password):
        password = EnvVar(name=ENV_REDIS_PASSWORD, value=start_param_password)
    elif s.default_redis_password_secret is not None:
        ref = s.default_redis_password_secret
        password = _secret_env(ENV_REDIS_PASSWORD, ref.name, ref.key)

    plain = (
        (opts is not None and opts.redis_password is not None and opts.redis_password.is_plain_text)
        or bool(start_param_password and not _is_env_reference(start_param_password))
        or bool(c.head_env.values.get(ENV_REDIS_PASSWORD))
    )
    if plain:
        warnings.append("the Redis password is plain text in the RayCluster; keep it in a Secret")

    return _Values(
        storage_namespace=storage_ns,
        redis_address=address or None,
        redis_username=username,
        redis_password=password,
        head_timeout_s=ours.head_reconnect_timeout_s or s.head_reconnect_timeout_s,
        worker_timeout_s=ours.worker_reconnect_timeout_s or s.worker_reconnect_timeout_s,
        warnings=tuple(warnings),
    )


def _timeout(value: str | None, whose: str, warnings: list[str]) -> int | None:
    """The reconnect timeout in an env value someone else wrote, or None; a warning when Ray cannot read it."""
    if value is None:
        return None
    try:
        return parse_positive_int(value.strip())
    except ValueError:
        warnings.append(f"{whose} env {ENV_RECONNECT_TIMEOUT} {quote(value, 12)} is not a positive integer")
        return None


def _kuberay_placeholder(c: ClusterFacts, pod: PodFacts, name: str) -> int | None:
    """The index of an empty `name` that KubeRay added to the pod itself, or None.

    KubeRay <= 1.2 gives every Ray container `REDIS_PASSWORD=""` when the head template has none, and KubeRay 1.7
    (where `gcsFaultToleranceOptions.redisAddress` is optional) appends `RAY_REDIS_ADDRESS=""` to the head. Kept,
    they would leave the head without a password, or GCS in memory. Not the user's when the head template does
    not set the name; only a lone entry qualifies: with the name twice, one is someone else's, and neither is
    touched.
    """
    indexes = pod.env_indexes(name)
    if len(indexes) != 1 or name in c.head_env.names or pod.env_value(name) != "":
        return None
    return indexes[0]


def _username_source(c: ClusterFacts, pod: PodFacts) -> str | None:
    """Where the head's Redis username comes from, for the warning; None when it gets none."""
    if ENV_REDIS_USERNAME in pod.env_names:
        return "the head's env"
    if c.head_start_params.get("redis-username"):
        return "rayStartParams"
    if c.options is not None and c.options.redis_username is not None:
        return "gcsFaultToleranceOptions"
    if c.ours.redis_username:
        return ann.REDIS_USERNAME
    return None


def _redis_env(c: ClusterFacts, pod: PodFacts, v: _Values,
               warnings: list[str]) -> tuple[tuple[EnvVar, ...], tuple[tuple[int, EnvVar], ...]]:
    """The env that reaches Redis, shared by the head and the cleanup pod: (entries to add, entries to replace).

    Storage namespace, address, username, password; a name already present wins, except KubeRay's own empty
    placeholders (<= 1.2's REDIS_PASSWORD, 1.7's RAY_REDIS_ADDRESS), which are replaced. Never a username
    without a password: Ray's GCS aborts on it (RAY_CHECK in AuthenticateRedis), and Redis refuses it.
    """
    candidates: list[EnvVar] = []
    if v.storage_namespace is not None:
        candidates.append(EnvVar(ENV_STORAGE_NAMESPACE, v.storage_namespace))
    if v.redis_address is not None:
        candidates.append(EnvVar(ENV_REDIS_ADDRESS, v.redis_address))
    if v.redis_username is not None:
        candidates.append(v.redis_username)
    if v.redis_password is not None:
        candidates.append(v.redis_password)
    env = tuple(e for e in candidates if e.name not in pod.env_names)
    replace_env: tuple[tuple[int, EnvVar], ...] = ()
    for wanted in (v.redis_password, EnvVar(ENV_REDIS_ADDRESS, v.redis_address or "")):
        slot = _kuberay_placeholder(c, pod, wanted.name) if wanted is not None and wanted.gives_value else None
        if wanted is not None and slot is not None:
            replace_env += ((slot, wanted),)

    # The pod's own REDIS_PASSWORD counts when the container gets a value from it (the last entry, valueFrom or
    # non-empty); otherwise only one the webhook adds or puts in KubeRay's placeholder.
    added = (*env, *(e for _, e in replace_env))
    has_password = any(e.name == ENV_REDIS_PASSWORD and e.gives_value for e in added) or (
        ENV_REDIS_PASSWORD in pod.env_names and pod.env_value(ENV_REDIS_PASSWORD) != "")
    if not has_password:
        source = _username_source(c, pod)
        if any(e.name == ENV_REDIS_USERNAME for e in env):
            env = tuple(e for e in env if e.name != ENV_REDIS_USERNAME)
            warnings.append(f"REDIS_USERNAME from {source} not injected: no Redis password either; "
                            "Ray's GCS aborts on that")
        elif source is not None:
            warnings.append(f"Redis username from {source} but no password from any source: Ray's GCS aborts")
    return env, replace_env


def _head_plan(c: ClusterFacts, pod: PodFacts, v: _Values, warnings: list[str]) -> Plan:
    present = pod.env_names
    pod_annotations = pod.annotations or {}
    annotations: list[tuple[str, str]] = []
    if ann.RAY_FT_ENABLED not in pod_annotations:
        annotations.append((ann.RAY_FT_ENABLED, "true"))
    if v.storage_namespace is not None and ann.RAY_EXTERNAL_STORAGE_NAMESPACE not in pod_annotations:
        annotations.append((ann.RAY_EXTERNAL_STORAGE_NAMESPACE, v.storage_namespace))

    env, replace_env = _redis_env(c, pod, v, warnings)
    if v.head_timeout_s is not None and ENV_RECONNECT_TIMEOUT not in present:
        env += (EnvVar(ENV_RECONNECT_TIMEOUT, str(v.head_timeout_s)),)

    added = {e.name for e in env} | {e.name for _, e in replace_env}
    wanted = [flag for var, flag in _CREDENTIAL_FLAGS if var in added]
    commands = [cmd for cmd in (pod.args0, pod.gen_cmd) if cmd is not None]
    flags = tuple(
        f for f in wanted
        if any(raystart.has_ray_start(c) and not raystart.has_flag(c, raystart.flag_name(f)) for c in commands)
    )
    if wanted and not any(raystart.has_ray_start(cmd) for cmd in commands):
        warnings.append("no 'ray start' in the Ray container's args[0]: pass the Redis credentials to it yourself")
    return Plan(annotations=tuple(annotations), env=env, replace_env=replace_env, ray_start_flags=flags,
                warnings=tuple(warnings))


def _worker_plan(c: ClusterFacts, pod: PodFacts, v: _Values, warnings: list[str]) -> Plan:
    env: tuple[EnvVar, ...] = ()
    worker_timeout: int | None = v.worker_timeout_s
    if ENV_RECONNECT_TIMEOUT in pod.env_names:
        worker_timeout = _timeout(pod.env_value(ENV_RECONNECT_TIMEOUT), "worker", warnings)
    else:
        env = (EnvVar(ENV_RECONNECT_TIMEOUT, str(v.worker_timeout_s)),)
    head_timeout = (
        _timeout(c.head_env.values.get(ENV_RECONNECT_TIMEOUT), "head template", warnings)
        or v.head_timeout_s
        or RAY_DEFAULT_RECONNECT_TIMEOUT_S
    )
    if worker_timeout is not None and worker_timeout <= head_timeout:
        warnings.append(
            f"worker GCS reconnect timeout {worker_timeout}s is not above the head's {head_timeout}s; "
            "workers may exit in a head restart"
        )
    return Plan(env=env, warnings=tuple(warnings))


def _cleanup_plan(c: ClusterFacts, pod: PodFacts, v: _Values, warnings: list[str]) -> Plan:
    """KubeRay's Redis cleanup pod: the head's Redis-reaching values, so it reaches the Redis the head used.

    KubeRay builds it from the RayCluster, not from the admitted head pod, so whatever the webhook gave the
    head (address, password, username) is missing there. The same Redis env as the head (`_redis_env`: present
    wins, KubeRay's placeholders replaced, never a username without a password); the storage namespace is
    KubeRay's own, only added when absent. No annotations, reconnect timeouts or `ray start` flags: the pod
    runs no Ray node.
    """
    env, replace_env = _redis_env(c, pod, v, warnings)

    args0: str | None = None
    if any(e.name == ENV_REDIS_USERNAME for e in env):
        line = pod.args0 or ""
        rewritten = cleanup.add_username(line)
        if rewritten != line:
            args0 = rewritten
        elif not cleanup.has_username(line):
            warnings.append("no cleanup_redis_storage call in the cleanup pod's args[0]: it ignores REDIS_USERNAME")
    return Plan(env=env, replace_env=replace_env, cleanup_args0=args0, warnings=tuple(warnings))


def decide(c: ClusterFacts, pod: PodFacts, s: Settings) -> Decision:
    """What to inject into `pod` of RayCluster `c` under the admin's settings `s`."""
    if c.errors:
        return Deny(f"RayCluster {c.namespace}/{c.name}: " + "; ".join(c.errors))
    warnings = [f"unknown annotation {key} on the RayCluster is ignored" for key in c.ours.unknown_keys]
    warnings += kuberay_conflicts(c)
    if not c.ours.inject:
        return Plan(skipped=f"{ann.INJECT} is false", warnings=tuple(warnings))
    if not c.ft_enabled:
        return Plan(skipped="GCS fault tolerance is off", warnings=tuple(warnings))
    if c.options is not None and c.options.backend != "redis":
        warnings.append(f"GCS FT backend {c.options.backend!r} is left to KubeRay; ray-ft-webhook handles redis")
        return Plan(skipped=f"backend {c.options.backend}", warnings=tuple(warnings))

    v = _resolve(c, pod.owner.uid, s)
    warnings += v.warnings
    pod_sets_address = (pod.role != "worker" and ENV_REDIS_ADDRESS in pod.env_names
                        and _kuberay_placeholder(c, pod, ENV_REDIS_ADDRESS) is None)
    if v.redis_address is None and ENV_REDIS_ADDRESS not in c.head_env.names and not pod_sets_address:
        warnings.append("GCS fault tolerance is on but no Redis address is set: Ray keeps GCS state in memory")
    if pod.role == "head":
        return _head_plan(c, pod, v, warnings)
    if pod.role == "redis-cleanup":
        return _cleanup_plan(c, pod, v, warnings)
    return _worker_plan(c, pod, v, warnings)
