"""The decision: RayCluster facts + pod facts + settings -> an immutable Plan (or a Deny). No I/O.

The rules follow KubeRay >= 1.3 (`configureGCSFaultTolerance`; the README's behaviour table lists them):
a value the Ray container already sets always wins; otherwise each value comes from the first source that
gives one: `spec.gcsFaultToleranceOptions`, then the RayCluster's annotations, then the admin's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.core import annotations as ann
from webhook.core import cleanup, raystart
from webhook.core.namespace import NamespaceFacts
from webhook.core.pod import PodFacts
from webhook.core.raycluster import ClusterFacts, Credential
from webhook.core.redis_address import address_problem, redacted
from webhook.core.settings import RAY_DEFAULT_RECONNECT_TIMEOUT_S, CARef, Settings, parse_positive_int, quote

ENV_STORAGE_NAMESPACE = "RAY_external_storage_namespace"
ENV_REDIS_ADDRESS = "RAY_REDIS_ADDRESS"
ENV_REDIS_USERNAME = "REDIS_USERNAME"
ENV_REDIS_PASSWORD = "REDIS_PASSWORD"
ENV_RECONNECT_TIMEOUT = "RAY_gcs_rpc_server_reconnect_timeout_s"
# Redis over TLS: Ray's RayConfig entries REDIS_CA_CERT, REDIS_CLIENT_CERT/KEY, REDIS_SERVER_NAME (ray_config_def.h).
ENV_REDIS_CA_CERT = "RAY_REDIS_CA_CERT"
ENV_REDIS_CLIENT_CERT = "RAY_REDIS_CLIENT_CERT"
ENV_REDIS_CLIENT_KEY = "RAY_REDIS_CLIENT_KEY"
ENV_REDIS_SERVER_NAME = "RAY_REDIS_SERVER_NAME"
# The key of the workers' reconnect timeout in `Values.sources` (the head's is ENV_RECONNECT_TIMEOUT).
WORKER_TIMEOUT = "worker " + ENV_RECONNECT_TIMEOUT

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
    # Pod volumes and the Ray container's mounts to add (Redis TLS files), as Kubernetes writes them.
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    # The warnings that leave GCS FT not working as meant (no Redis address, a username GCS would abort on...).
    gaps: tuple[str, ...] = ()
    skipped: str | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.annotations or self.env or self.replace_env or self.ray_start_flags
                    or self.cleanup_args0 is not None or self.volumes)

    @property
    def injected_names(self) -> tuple[str, ...]:
        """Names for the pod's `ray-ft-webhook.io/injected` annotation, in patch order."""
        return (
            tuple(k for k, _ in self.annotations)
            + tuple(e.name for e in self.env)
            + tuple(e.name for _, e in self.replace_env)
            + tuple(raystart.flag_name(f) for f in self.ray_start_flags)
            + ((cleanup.INJECTED_NAME,) if self.cleanup_args0 is not None else ())
            + tuple(str(v["name"]) for v in self.volumes)
        )


@dataclass(frozen=True)
class Deny:
    """Refuse the pod; `message` names what is wrong and the bad value."""

    message: str


Decision = Plan | Deny


# Where a value came from, for the Events and `check` (names of fields, flags and Secrets; never a secret value).
SOURCE_OPTIONS = "gcsFaultToleranceOptions"
SOURCE_ADMIN = "the admin's default"


@dataclass(frozen=True)
class Values:
    """The resolved FT values for one cluster; None where no source gives one. `sources` names, for each env
    name that has a value, where it came from."""

    storage_namespace: str | None
    redis_address: str | None
    redis_username: EnvVar | None
    redis_password: EnvVar | None
    head_timeout_s: int | None
    worker_timeout_s: int
    # Redis over TLS (only with a rediss:// address): the CA, the client certificate's Secret, the server name.
    redis_ca: CARef | None = None
    redis_client_cert_secret: str | None = None
    redis_server_name: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
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


class _Layers:
    """Our three levels of a value, highest first: the RayCluster's annotation, its Namespace's, the admin's flag;
    each value comes with the source `Values.sources` names."""

    def __init__(self, c: ClusterFacts, ns: NamespaceFacts | None, s: Settings) -> None:
        self.ours, self.ns, self.s = c.ours, ns, s

    def pick(self, field: str, key: str, flag: str | None) -> tuple[Any, str]:
        """(value, source) of our annotation `key` (OurAnnotations.`field`), else the admin's Settings.default_`field`
        set by `flag` (None: the admin has no such flag); (None, "") when no level gives one."""
        if (value := getattr(self.ours, field)) is not None:
            return value, f"annotation {key}"
        if self.ns is not None and (value := getattr(self.ns.ours, field)) is not None:
            return value, f"annotation {key} on Namespace {self.ns.name}"
        if flag is not None and (value := getattr(self.s, f"default_{field}")) is not None:
            return value, f"{SOURCE_ADMIN} {flag}"
        return None, ""


def _resolve(c: ClusterFacts, owner_uid: str | None, s: Settings, ns: NamespaceFacts | None = None) -> Values:
    opts = c.options
    layers = _Layers(c, ns, s)
    warnings: list[str] = []
    sources: dict[str, str] = {}

    storage_ns: str | None = c.uid or owner_uid or None
    if storage_ns is not None:
        sources[ENV_STORAGE_NAMESPACE] = "the RayCluster's uid"
    if c.storage_namespace_annotation is not None:
        storage_ns = c.storage_namespace_annotation
        sources[ENV_STORAGE_NAMESPACE] = f"annotation {ann.RAY_EXTERNAL_STORAGE_NAMESPACE}"
    if opts is not None and opts.external_storage_namespace:
        storage_ns = opts.external_storage_namespace
        sources[ENV_STORAGE_NAMESPACE] = f"{SOURCE_OPTIONS}.externalStorageNamespace"
    if storage_ns == "":
        warnings.append("the external storage namespace is empty; give each RayCluster its own namespace")

    if opts is not None and opts.redis_address:
        address, address_source = opts.redis_address, f"{SOURCE_OPTIONS}.redisAddress"
    else:
        address, address_source = layers.pick("redis_address", ann.REDIS_ADDRESS, "--default-redis-address")
        address = address or ""
    # Ours and the admin's are checked when parsed; one the RayCluster gives is never injected if Ray dies on it.
    problem = address_problem(address) if address else None
    if problem is not None:
        warnings.append(f"redisAddress {quote(redacted(address), 20)} not injected: it {problem}")
        address = ""
    if address:
        sources[ENV_REDIS_ADDRESS] = address_source
    template_address = c.head_env.values.get(ENV_REDIS_ADDRESS)
    problem = address_problem(template_address) if template_address else None
    if template_address and problem is not None:
        warnings.append(f"head env RAY_REDIS_ADDRESS {quote(redacted(template_address), 24)} {problem}: "
                        "GCS cannot start")

    username: EnvVar | None = None
    if opts is not None and opts.redis_username is not None:
        username = _credential_env(ENV_REDIS_USERNAME, opts.redis_username)
        sources[ENV_REDIS_USERNAME] = f"{SOURCE_OPTIONS}.redisUsername"
    elif (name := layers.pick("redis_username", ann.REDIS_USERNAME, None))[0]:
        username = EnvVar(name=ENV_REDIS_USERNAME, value=name[0])
        sources[ENV_REDIS_USERNAME] = name[1]

    start_param_password = c.head_start_params.get("redis-password")
    ns_secret = ns.ours.redis_password_secret if ns is not None else None
    password: EnvVar | None = None
    if opts is not None and opts.redis_password is not None:
        password = _credential_env(ENV_REDIS_PASSWORD, opts.redis_password)
        sources[ENV_REDIS_PASSWORD] = f"{SOURCE_OPTIONS}.redisPassword"
    elif c.ours.redis_password_secret is not None:
        ref = c.ours.redis_password_secret
        password = _secret_env(ENV_REDIS_PASSWORD, ref.name, ref.key)
        sources[ENV_REDIS_PASSWORD] = f"annotation {ann.REDIS_PASSWORD_SECRET}"
    elif opts is None and start_param_password is not None and not _is_env_reference(start_param_password):
        password = EnvVar(name=ENV_REDIS_PASSWORD, value=start_param_password)
        sources[ENV_REDIS_PASSWORD] = "rayStartParams redis-password"
    elif ns is not None and ns_secret is not None:
        password = _secret_env(ENV_REDIS_PASSWORD, ns_secret.name, ns_secret.key)
        sources[ENV_REDIS_PASSWORD] = f"annotation {ann.REDIS_PASSWORD_SECRET} on Namespace {ns.name}"
    elif s.default_redis_password_secret is not None:
        ref = s.default_redis_password_secret
        password = _secret_env(ENV_REDIS_PASSWORD, ref.name, ref.key)
        sources[ENV_REDIS_PASSWORD] = f"{SOURCE_ADMIN} --default-redis-password-secret"

    plain = (
        (opts is not None and opts.redis_password is not None and opts.redis_password.is_plain_text)
        or bool(start_param_password and not _is_env_reference(start_param_password))
        or bool(c.head_env.values.get(ENV_REDIS_PASSWORD))
    )
    if plain:
        warnings.append("the Redis password is plain text in the RayCluster; keep it in a Secret")

    head_timeout, head_source = layers.pick("head_reconnect_timeout_s", ann.HEAD_RECONNECT_TIMEOUT_S, None)
    if head_timeout is None and s.head_reconnect_timeout_s is not None:
        head_timeout, head_source = s.head_reconnect_timeout_s, f"{SOURCE_ADMIN} --head-reconnect-timeout-s"
    if head_timeout is not None:
        sources[ENV_RECONNECT_TIMEOUT] = head_source
    worker_timeout, worker_source = layers.pick("worker_reconnect_timeout_s", ann.WORKER_RECONNECT_TIMEOUT_S, None)
    if worker_timeout is None:
        worker_timeout, worker_source = s.worker_reconnect_timeout_s, f"{SOURCE_ADMIN} --worker-reconnect-timeout-s"
    sources[WORKER_TIMEOUT] = worker_source

    tls = _tls_values(layers, address or template_address or "", sources, warnings)
    return Values(
        storage_namespace=storage_ns,
        redis_address=address or None,
        redis_username=username,
        redis_password=password,
        head_timeout_s=head_timeout,
        worker_timeout_s=worker_timeout,
        redis_ca=tls[0],
        redis_client_cert_secret=tls[1],
        redis_server_name=tls[2],
        sources=sources,
        warnings=tuple(warnings),
    )


def _tls_values(layers: _Layers, address: str, sources: dict[str, str],
                warnings: list[str]) -> tuple[CARef | None, str | None, str | None]:
    """The CA, client certificate Secret and server name for Redis over TLS, with their sources; none unless the
    address is rediss:// (Ray ignores them otherwise, and a volume of a Secret that is not there would keep the
    pod from starting for nothing)."""
    ca, ca_source = layers.pick("redis_ca", "", None)
    if ca is not None:
        key = ann.REDIS_CA_SECRET if ca.kind == "Secret" else ann.REDIS_CA_CONFIGMAP
        ca_source = ca_source.replace("annotation ", f"annotation {key}", 1)
    elif layers.s.default_redis_ca is not None:
        ca = layers.s.default_redis_ca
        ca_source = f"{SOURCE_ADMIN} --default-redis-ca-{ca.kind.lower()}"
    client, client_source = layers.pick("redis_client_cert_secret", ann.REDIS_CLIENT_CERT_SECRET,
                                        "--default-redis-client-cert-secret")
    server, server_source = layers.pick("redis_server_name", ann.REDIS_SERVER_NAME, "--default-redis-server-name")
    given = [what for what, value in (("CA", ca), ("client certificate", client), ("server name", server)) if value]
    if not given:
        return None, None, None
    if not address or not all(a.strip().lower().startswith("rediss://") for a in address.split(",")):
        if address:
            warnings.append(f"Redis TLS {', '.join(given)} not injected: the address is not rediss://, Ray ignores it")
        return None, None, None
    for env, value, source in ((ENV_REDIS_CA_CERT, ca, ca_source), (ENV_REDIS_CLIENT_CERT, client, client_source),
                               (ENV_REDIS_SERVER_NAME, server, server_source)):
        if value:
            sources[env] = source
    return ca, client, server


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


def _username_source(c: ClusterFacts, pod: PodFacts, v: Values) -> str | None:
    """Where the head's Redis username comes from, for the warning; None when it gets none."""
    if ENV_REDIS_USERNAME in pod.env_names:
        return "the head's env"
    if c.head_start_params.get("redis-username"):
        return "rayStartParams"
    if c.options is not None and c.options.redis_username is not None:
        return "gcsFaultToleranceOptions"
    if c.ours.redis_username:
        return ann.REDIS_USERNAME
    return v.sources.get(ENV_REDIS_USERNAME)  # the Namespace's


def _redis_env(c: ClusterFacts, pod: PodFacts, v: Values,
               warnings: _Findings) -> tuple[tuple[EnvVar, ...], tuple[tuple[int, EnvVar], ...]]:
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
        source = _username_source(c, pod, v)
        if any(e.name == ENV_REDIS_USERNAME for e in env):
            env = tuple(e for e in env if e.name != ENV_REDIS_USERNAME)
            warnings.gap(f"REDIS_USERNAME from {source} not injected: no Redis password either; "
                         "Ray's GCS aborts on that")
        elif source is not None:
            warnings.gap(f"Redis username from {source} but no password from any source: Ray's GCS aborts")
    return env, replace_env


# Where the Redis TLS files are mounted in the Ray container: names and paths no KubeRay pod uses.
TLS_ROOT = "/etc/ray-ft-webhook"
CA_VOLUME, CA_DIR, CA_FILE = "ray-ft-webhook-redis-ca", f"{TLS_ROOT}/redis-ca", "ca.crt"
CLIENT_VOLUME, CLIENT_DIR = "ray-ft-webhook-redis-client", f"{TLS_ROOT}/redis-client"


def _tls(pod: PodFacts, v: Values, warnings: list[str]) -> tuple[tuple[EnvVar, ...], tuple[Mapping[str, Any], ...],
                                                                 tuple[Mapping[str, Any], ...]]:
    """Redis over TLS on a pod that reaches Redis (the head, the cleanup pod): (env, volumes, mounts) to add.

    Each file comes read-only from its Secret or ConfigMap, projected to a fixed name; the env names the path.
    A variable the container already sets wins (and then no volume is added). A volume name or mount path of
    ours already in the pod is someone else's: nothing is added for it, and a warning says so.
    """
    env: list[EnvVar] = []
    volumes: list[Mapping[str, Any]] = []
    mounts: list[Mapping[str, Any]] = []
    taken_paths = {path for _, path in pod.mounts or ()}

    def mount(volume: str, directory: str, source: Mapping[str, Any], what: str) -> bool:
        if volume in (pod.volumes or ()) or directory in taken_paths:
            warnings.append(f"the pod already has volume {volume} or path {directory}: Redis {what} not injected")
            return False
        volumes.append({"name": volume, **source})
        mounts.append({"name": volume, "mountPath": directory, "readOnly": True})
        return True

    ca = v.redis_ca
    if ca is not None and ENV_REDIS_CA_CERT not in pod.env_names:
        items = [{"key": ca.key, "path": CA_FILE}]
        source = ({"secret": {"secretName": ca.name, "items": items}} if ca.kind == "Secret"
                  else {"configMap": {"name": ca.name, "items": items}})
        if mount(CA_VOLUME, CA_DIR, source, "CA"):
            env.append(EnvVar(ENV_REDIS_CA_CERT, f"{CA_DIR}/{CA_FILE}"))
    client = v.redis_client_cert_secret
    if client is not None and not {ENV_REDIS_CLIENT_CERT, ENV_REDIS_CLIENT_KEY} & pod.env_names:
        source = {"secret": {"secretName": client, "items": [{"key": "tls.crt", "path": "tls.crt"},
                                                               {"key": "tls.key", "path": "tls.key"}]}}
        if mount(CLIENT_VOLUME, CLIENT_DIR, source, "client certificate"):
            env += [EnvVar(ENV_REDIS_CLIENT_CERT, f"{CLIENT_DIR}/tls.crt"),
                    EnvVar(ENV_REDIS_CLIENT_KEY, f"{CLIENT_DIR}/tls.key")]
    if v.redis_server_name is not None and ENV_REDIS_SERVER_NAME not in pod.env_names:
        env.append(EnvVar(ENV_REDIS_SERVER_NAME, v.redis_server_name))
    return tuple(env), tuple(volumes), tuple(mounts)


def _head_plan(c: ClusterFacts, pod: PodFacts, v: Values, warnings: _Findings) -> Plan:
    present = pod.env_names
    pod_annotations = pod.annotations or {}
    annotations: list[tuple[str, str]] = []
    if ann.RAY_FT_ENABLED not in pod_annotations:
        annotations.append((ann.RAY_FT_ENABLED, "true"))
    if v.storage_namespace is not None and ann.RAY_EXTERNAL_STORAGE_NAMESPACE not in pod_annotations:
        annotations.append((ann.RAY_EXTERNAL_STORAGE_NAMESPACE, v.storage_namespace))

    env, replace_env = _redis_env(c, pod, v, warnings)
    tls_env, volumes, mounts = _tls(pod, v, warnings)
    env += tls_env
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
        warnings.gap("no 'ray start' in the Ray container's args[0]: pass the Redis credentials to it yourself")
    return Plan(annotations=tuple(annotations), env=env, replace_env=replace_env, ray_start_flags=flags,
                volumes=volumes, volume_mounts=mounts, warnings=tuple(warnings), gaps=tuple(warnings.gaps))


def _worker_plan(c: ClusterFacts, pod: PodFacts, v: Values, warnings: _Findings) -> Plan:
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
        warnings.append(_short_worker_timeout(worker_timeout, head_timeout))
    return Plan(env=env, warnings=tuple(warnings))


def _cleanup_plan(c: ClusterFacts, pod: PodFacts, v: Values, warnings: _Findings) -> Plan:
    """KubeRay's Redis cleanup pod: the head's Redis-reaching values, so it reaches the Redis the head used.

    KubeRay builds it from the RayCluster, not from the admitted head pod, so whatever the webhook gave the
    head (address, password, username) is missing there. The same Redis env as the head (`_redis_env`: present
    wins, KubeRay's placeholders replaced, never a username without a password); the storage namespace is
    KubeRay's own, only added when absent. No annotations, reconnect timeouts or `ray start` flags: the pod
    runs no Ray node.
    """
    env, replace_env = _redis_env(c, pod, v, warnings)
    tls_env, volumes, mounts = _tls(pod, v, warnings)
    env += tls_env

    args0: str | None = None
    if any(e.name == ENV_REDIS_USERNAME for e in env):
        line = pod.args0 or ""
        rewritten = cleanup.add_username(line)
        if rewritten != line:
            args0 = rewritten
        elif not cleanup.has_username(line):
            warnings.append("no cleanup_redis_storage call in the cleanup pod's args[0]: it ignores REDIS_USERNAME")
    return Plan(env=env, replace_env=replace_env, cleanup_args0=args0, volumes=volumes, volume_mounts=mounts,
                warnings=tuple(warnings), gaps=tuple(warnings.gaps))


def _short_worker_timeout(worker_s: int, head_s: int, group: str = "") -> str:
    whose = f"worker group {group!r}" if group else "worker"
    return (f"{whose} GCS reconnect timeout {worker_s}s is not above the head's {head_s}s; "
            "workers may exit in a head restart")


NO_ADDRESS = "GCS fault tolerance is on but no Redis address is set: Ray keeps GCS state in memory"


class _Findings(list[str]):
    """Warnings in the order found; `gap` records one that also leaves GCS FT not working as meant."""

    def __init__(self, items: tuple[str, ...] = ()) -> None:
        super().__init__(items)
        self.gaps: list[str] = []

    def gap(self, message: str) -> None:
        self.append(message)
        self.gaps.append(message)


@dataclass(frozen=True)
class ClusterPlan:
    """The decision for a RayCluster as a whole, before any pod: every pod's plan starts from it, and so do
    `/validate` and `check`. `values` is None when the cluster is denied or skipped."""

    denied: str | None = None
    skipped: str | None = None
    values: Values | None = None
    warnings: tuple[str, ...] = ()
    # FT is on and neither a source nor the head template gives a Redis address.
    address_missing: bool = False


def plan_cluster(c: ClusterFacts, s: Settings, owner_uid: str | None = None,
                 ns: NamespaceFacts | None = None) -> ClusterPlan:
    """What the webhook makes of RayCluster `c` in Namespace `ns` (its defaults; None: it gives none) under the
    admin's settings `s`. `owner_uid` stands in for the storage namespace when `c` has no uid (a RayCluster read
    from a file)."""
    if c.errors:
        return ClusterPlan(denied="; ".join(c.errors))
    if ns is not None and ns.errors:
        return ClusterPlan(denied=f"Namespace {ns.name}: " + "; ".join(ns.errors))
    warnings = [f"unknown annotation {key} on the RayCluster is ignored" for key in c.ours.unknown_keys]
    if ns is not None:
        warnings += [f"unknown annotation {key} on Namespace {ns.name} is ignored" for key in ns.ours.unknown_keys]
    warnings += kuberay_conflicts(c)
    inject = next((i for i in (c.ours.inject, ns.ours.inject if ns is not None else None) if i is not None), True)
    if not inject:
        return ClusterPlan(skipped=f"{ann.INJECT} is false", warnings=tuple(warnings))
    if not c.ft_enabled:
        return ClusterPlan(skipped="GCS fault tolerance is off", warnings=tuple(warnings))
    if c.options is not None and c.options.backend != "redis":
        warnings.append(f"GCS FT backend {c.options.backend!r} is left to KubeRay; ray-ft-webhook handles redis")
        return ClusterPlan(skipped=f"backend {c.options.backend}", warnings=tuple(warnings))
    v = _resolve(c, owner_uid or None, s, ns)
    return ClusterPlan(values=v, warnings=(*warnings, *v.warnings),
                       address_missing=v.redis_address is None and ENV_REDIS_ADDRESS not in c.head_env.names)


def cluster_findings(c: ClusterFacts, cp: ClusterPlan) -> tuple[str, ...]:
    """Every warning about the cluster as a whole, before any pod exists: the plan's, and the pod plans' checks
    as far as the RayCluster's templates decide them (no address, a username without a password, a worker
    timeout not above the head's)."""
    return tuple(_cluster_findings(c, cp))


def cluster_gaps(c: ClusterFacts, cp: ClusterPlan) -> tuple[str, ...]:
    """The findings of `cluster_findings` that leave GCS FT not working as meant (as `Plan.gaps` for a pod):
    no Redis address, a Redis username without a password."""
    return tuple(_cluster_findings(c, cp).gaps)


def _cluster_findings(c: ClusterFacts, cp: ClusterPlan) -> _Findings:
    found = _Findings(cp.warnings)
    v = cp.values
    if v is None:
        return found
    if cp.address_missing:
        found.gap(NO_ADDRESS)
    username_source = (
        "the head's env" if ENV_REDIS_USERNAME in c.head_env.names
        else "rayStartParams" if c.head_start_params.get("redis-username")
        else v.sources.get(ENV_REDIS_USERNAME)
    )
    template_password = ENV_REDIS_PASSWORD in c.head_env.names and c.head_env.values.get(ENV_REDIS_PASSWORD) != ""
    if username_source and not template_password and not (v.redis_password and v.redis_password.gives_value):
        found.gap(f"Redis username from {username_source} but no password from any source: Ray's GCS aborts")
    head_s = (_timeout(c.head_env.values.get(ENV_RECONNECT_TIMEOUT), "head template", found)
              or v.head_timeout_s or RAY_DEFAULT_RECONNECT_TIMEOUT_S)
    for group, raw in c.worker_timeouts:
        worker_s = _timeout(raw, f"worker group {group!r}", found) if raw is not None else v.worker_timeout_s
        if worker_s is not None and worker_s <= head_s:
            found.append(_short_worker_timeout(worker_s, head_s, group))
    return found


def decide(c: ClusterFacts, pod: PodFacts, s: Settings, ns: NamespaceFacts | None = None) -> Decision:
    """What to inject into `pod` of RayCluster `c` in Namespace `ns` under the admin's settings `s`."""
    return decide_in(plan_cluster(c, s, pod.owner.uid, ns), c, pod)


def decide_in(cp: ClusterPlan, c: ClusterFacts, pod: PodFacts) -> Decision:
    """`decide` from the cluster plan `cp` already made for `pod` (`plan_cluster(c, s, pod.owner.uid, ns)`)."""
    if cp.denied is not None:
        return Deny(f"RayCluster {c.namespace}/{c.name}: {cp.denied}")
    if cp.values is None:
        return Plan(skipped=cp.skipped, warnings=cp.warnings)
    warnings = _Findings(cp.warnings)
    pod_sets_address = (pod.role != "worker" and ENV_REDIS_ADDRESS in pod.env_names
                        and _kuberay_placeholder(c, pod, ENV_REDIS_ADDRESS) is None)
    if cp.address_missing and not pod_sets_address:
        warnings.gap(NO_ADDRESS)
    if pod.role == "head":
        return _head_plan(c, pod, cp.values, warnings)
    if pod.role == "redis-cleanup":
        return _cleanup_plan(c, pod, cp.values, warnings)
    return _worker_plan(c, pod, cp.values, warnings)
