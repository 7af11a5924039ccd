"""Parse a RayCluster object (a raw dict) once into the typed facts the plan needs.

Parsing happens when the RayCluster enters the cache, not per admission: a watch-fed cache of 10,000
clusters keeps only these small frozen objects. Every problem with one of our annotations is collected
with the key and the bad value, so the plan can deny with a message that names both.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from webhook.core import annotations as ann
from webhook.core.redis_address import address_problem, redacted
from webhook.core.settings import (
    CARef,
    SecretRef,
    parse_object_name,
    parse_positive_int,
    parse_server_name,
    quote,
)

RAY_API_VERSIONS = frozenset({"ray.io/v1", "ray.io/v1alpha1"})


@dataclass(frozen=True, slots=True)
class Credential:
    """A `redisPassword`/`redisUsername` of gcsFaultToleranceOptions: a literal value or a `valueFrom`, as given."""

    value: str = ""
    value_from: Mapping[str, Any] | None = None

    @property
    def is_plain_text(self) -> bool:
        return self.value_from is None and self.value != ""


@dataclass(frozen=True, slots=True)
class FTOptions:
    """`spec.gcsFaultToleranceOptions` (KubeRay >= 1.3)."""

    redis_address: str = ""
    redis_password: Credential | None = None
    redis_username: Credential | None = None
    external_storage_namespace: str = ""
    backend: str = "redis"


@dataclass(frozen=True, slots=True)
class OurAnnotations:
    """The `ray-ft-webhook.io/*` annotations of a RayCluster (or of its Namespace), parsed; None where absent."""

    inject: bool | None = None
    redis_address: str | None = None
    redis_password_secret: SecretRef | None = None
    redis_username: str | None = None
    worker_reconnect_timeout_s: int | None = None
    head_reconnect_timeout_s: int | None = None
    redis_ca: CARef | None = None
    redis_client_cert_secret: str | None = None
    redis_server_name: str | None = None
    unknown_keys: tuple[str, ...] = ()


_NO_ANNOTATIONS = OurAnnotations()


@dataclass(frozen=True, slots=True)
class HeadEnv:
    """What the head template's Ray container sets itself, as far as the FT checks need it."""

    names: frozenset[str] = frozenset()
    # Literal values of a few variables (absent when set through valueFrom).
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    """Everything the plan reads from a RayCluster."""

    name: str
    namespace: str
    uid: str
    ft_annotation: str | None
    options: FTOptions | None
    storage_namespace_annotation: str | None
    ours: OurAnnotations
    # The rayStartParams the plan reads (redis-password, redis-username), when strings.
    head_start_params: Mapping[str, str]
    head_env: HeadEnv
    # The kind of the controller ownerReference (KubeRay's RayJob or RayService), None for a user's RayCluster.
    owner_kind: str | None = None
    # Per worker group: its name and the literal RAY_gcs_rpc_server_reconnect_timeout_s its Ray container sets, or
    # None when it sets none (the webhook injects one). Groups that set it through valueFrom are left out.
    worker_timeouts: tuple[tuple[str, str | None], ...] = ()
    # metadata.deletionTimestamp is set: the cluster is going away.
    deleting: bool = False
    errors: tuple[str, ...] = ()

    @property
    def ft_enabled(self) -> bool:
        """KubeRay's rule: the annotation is "true" in any case, or the options field is present at all."""
        return (self.ft_annotation or "").lower() == "true" or self.options is not None


class _Errors(list[str]):
    def at(self, where: str, problem: str) -> None:
        self.append(f"{where}: {problem}")


def _mapping(value: Any, where: str, errors: _Errors) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.at(where, f"expected an object, got {type(value).__name__}")
        return {}
    return value


def _optional_string(value: Any, where: str, errors: _Errors) -> str | None:
    if value is None or isinstance(value, str):
        return value
    errors.at(where, f"expected a string, got {type(value).__name__}")
    return None


def _string(value: Any, where: str, errors: _Errors) -> str:
    return _optional_string(value, where, errors) or ""


def _shared(value: str) -> str:
    """`value` kept once for every RayCluster that has it (the cache holds thousands of ClusterFacts, whose
    namespaces, env names and values, annotation values and group names mostly repeat)."""
    return sys.intern(value)


def _json_object(value: Any, where: str, errors: _Errors) -> Mapping[str, Any] | None:
    """An object copied into the patch as given (a `valueFrom`): it must serialize as JSON, so string keys only."""
    if value is None:
        return None
    stack, seen = [value], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > 1000:
            errors.at(where, "too large")
            return None
        if isinstance(node, Mapping):
            if not all(isinstance(k, str) for k in node):
                errors.at(where, "has a key that is not a string")
                return None
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    if not isinstance(value, Mapping):
        errors.at(where, f"expected an object, got {type(value).__name__}")
        return None
    return value


def _credential(value: Any, where: str, errors: _Errors) -> Credential | None:
    if value is None:
        return None
    raw = _mapping(value, where, errors)
    literal = _string(raw.get("value"), f"{where}.value", errors)
    value_from = _json_object(raw.get("valueFrom"), f"{where}.valueFrom", errors)
    if literal and value_from is not None:
        errors.at(where, "give value or valueFrom, not both")
    return Credential(value=literal, value_from=value_from)


def _options(value: Any, errors: _Errors) -> FTOptions | None:
    if value is None:
        return None
    where = "spec.gcsFaultToleranceOptions"
    raw = _mapping(value, where, errors)
    return FTOptions(
        redis_address=_string(raw.get("redisAddress"), f"{where}.redisAddress", errors),
        redis_password=_credential(raw.get("redisPassword"), f"{where}.redisPassword", errors),
        redis_username=_credential(raw.get("redisUsername"), f"{where}.redisUsername", errors),
        external_storage_namespace=_string(
            raw.get("externalStorageNamespace"), f"{where}.externalStorageNamespace", errors
        ),
        backend=_string(raw.get("backend"), f"{where}.backend", errors) or "redis",
    )


def _annotation_error(key: str, value: str, problem: str) -> str:
    return f"annotation {key}: {quote(value)} {problem}"


def parse_ours(annotations: Mapping[str, Any], errors: list[str], allowed: frozenset[str] = ann.RAYCLUSTER_KEYS,
               where: str = "metadata.annotations") -> OurAnnotations:
    """Our annotations among `annotations` (of a RayCluster, or of a Namespace with `allowed` = NAMESPACE_KEYS);
    each problem appended to `errors` with the key and the bad value. Keys in `allowed` but not parsed here
    (FT_DEFAULT) are the caller's."""
    parsed: dict[str, Any] = {}
    for key, raw in annotations.items():
        if not isinstance(key, str) or not key.startswith(ann.PREFIX):
            continue
        if key not in allowed:
            parsed.setdefault("unknown_keys", []).append(key)
            continue
        if key not in ann.RAYCLUSTER_KEYS:
            continue
        if not isinstance(raw, str):
            errors.append(f"{where}[{key}]: expected a string, got {type(raw).__name__}")
            continue
        value = raw.strip()
        if key == ann.INJECT:
            if value.lower() not in ("true", "false"):
                errors.append(_annotation_error(key, raw, 'is not "true" or "false"'))
            parsed["inject"] = value.lower() != "false"
        elif key in (ann.REDIS_ADDRESS, ann.REDIS_USERNAME):
            problem = address_problem(value) if key == ann.REDIS_ADDRESS else None
            shown = redacted(raw) if key == ann.REDIS_ADDRESS else raw  # no password from the address in a denial
            if not value or any(c.isspace() for c in value):
                errors.append(_annotation_error(key, shown, "must be non-empty and contain no spaces"))
            elif problem is not None:
                errors.append(_annotation_error(key, shown, f"is not an address Ray can use: it {problem}"))
            elif key == ann.REDIS_ADDRESS:
                parsed["redis_address"] = value
            else:
                parsed["redis_username"] = value
        elif key == ann.REDIS_PASSWORD_SECRET:
            try:
                parsed["redis_password_secret"] = SecretRef.parse(value)
            except ValueError:
                errors.append(_annotation_error(key, raw, "is not NAME or NAME/KEY of a Secret"))
        elif key in (ann.REDIS_CA_SECRET, ann.REDIS_CA_CONFIGMAP):
            kind: Literal["Secret", "ConfigMap"] = "Secret" if key == ann.REDIS_CA_SECRET else "ConfigMap"
            if "redis_ca" in parsed:
                errors.append(f"annotations {ann.REDIS_CA_SECRET} and {ann.REDIS_CA_CONFIGMAP}: give one, not both")
            try:
                parsed["redis_ca"] = CARef.parse(kind, value)
            except ValueError:
                errors.append(_annotation_error(key, raw, f"is not NAME or NAME/KEY of a {kind}"))
        elif key == ann.REDIS_CLIENT_CERT_SECRET:
            try:
                parsed["redis_client_cert_secret"] = parse_object_name(value)
            except ValueError:
                errors.append(_annotation_error(key, raw, "is not the NAME of a Secret"))
        elif key == ann.REDIS_SERVER_NAME:
            try:
                parsed["redis_server_name"] = parse_server_name(value)
            except ValueError:
                errors.append(_annotation_error(key, raw, "is not a host name"))
        else:
            try:
                seconds = parse_positive_int(value)
            except ValueError:
                errors.append(_annotation_error(key, raw, "is not a positive integer (seconds)"))
                continue
            worker = key == ann.WORKER_RECONNECT_TIMEOUT_S
            parsed["worker_reconnect_timeout_s" if worker else "head_reconnect_timeout_s"] = seconds
    if not parsed:
        return _NO_ANNOTATIONS  # most clusters have none of ours: one shared (frozen) object for them all
    parsed["unknown_keys"] = tuple(sorted(parsed.get("unknown_keys", ())))
    return OurAnnotations(**parsed)


def _controller_kind(metadata: Mapping[str, Any]) -> str | None:
    refs = metadata.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, Mapping) and ref.get("controller") is True and isinstance(ref.get("kind"), str):
            return str(ref["kind"])
    return None


# Head env variables whose literal value a check reads.
_HEAD_ENV_VALUES = ("RAY_gcs_rpc_server_reconnect_timeout_s", "REDIS_PASSWORD", "RAY_REDIS_ADDRESS")
_TIMEOUT = _HEAD_ENV_VALUES[0]


def _ray_env(group: Mapping[str, Any], where: str, errors: _Errors) -> HeadEnv:
    """The env of a group template's Ray container (`containers[0]`), as far as the FT checks need it."""
    template = _mapping(group.get("template"), f"{where}.template", errors)
    pod_spec = _mapping(template.get("spec"), f"{where}.template.spec", errors)
    containers = pod_spec.get("containers") or []
    if not isinstance(containers, list):
        errors.at(f"{where}.template.spec.containers", f"expected a list, got {type(containers).__name__}")
        return HeadEnv()
    if not containers:
        return HeadEnv()
    where = f"{where}.template.spec.containers[0]"
    env = _mapping(containers[0], where, errors).get("env") or []
    if not isinstance(env, list):
        errors.at(f"{where}.env", f"expected a list, got {type(env).__name__}")
        return HeadEnv()
    names: set[str] = set()
    values: dict[str, str] = {}
    for i, item in enumerate(env):
        at = f"{where}.env[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            errors.at(at, "expected an object with a string name")
            continue
        value = _optional_string(item.get("value"), f"{at}.value", errors)
        value_from = _mapping(item.get("valueFrom"), f"{at}.valueFrom", errors)
        name = _shared(item["name"])
        names.add(name)
        if name in _HEAD_ENV_VALUES:
            # The last entry of a name is the one the container gets; one from valueFrom has no literal value.
            values.pop(name, None)
            if not value_from:
                values[name] = _shared(value or "")
    return HeadEnv(names=frozenset(names), values=values)



def _worker_timeouts(spec: Mapping[str, Any], errors: _Errors) -> tuple[tuple[str, str | None], ...]:
    groups = spec.get("workerGroupSpecs") or []
    if not isinstance(groups, list):
        errors.at("spec.workerGroupSpecs", f"expected a list, got {type(groups).__name__}")
        return ()
    out: list[tuple[str, str | None]] = []
    for i, raw in enumerate(groups):
        where = f"spec.workerGroupSpecs[{i}]"
        group = _mapping(raw, where, errors)
        env = _ray_env(group, where, errors)
        if _TIMEOUT not in env.names or _TIMEOUT in env.values:
            out.append((_shared(_string(group.get("groupName"), f"{where}.groupName", errors)),
                        env.values.get(_TIMEOUT)))
    return tuple(out)


# rayStartParams the plan reads; the others are KubeRay's business.
_START_PARAMS_READ = ("redis-password", "redis-username")


def _start_params(head: Mapping[str, Any], errors: _Errors) -> Mapping[str, str]:
    where = "spec.headGroupSpec.rayStartParams"
    params = _mapping(head.get("rayStartParams"), where, errors)
    for key in _START_PARAMS_READ:
        _optional_string(params.get(key), f"{where}[{key}]", errors)
    return {k: _shared(v) for k, v in params.items() if k in _START_PARAMS_READ and isinstance(v, str)}


def parse_raycluster(obj: Any) -> ClusterFacts:
    """Parse a RayCluster dict. Never raises on content: problems end up in `errors`.

    Every field read is type-checked: the apiserver's CRD schema guarantees the types, so a wrong one can only
    come from a manifest file, and is named rather than guessed around.
    """
    errors = _Errors()
    if not isinstance(obj, Mapping):
        errors.at("RayCluster", f"expected an object, got {type(obj).__name__}")
        obj = {}
    metadata = _mapping(obj.get("metadata"), "metadata", errors)
    spec = _mapping(obj.get("spec"), "spec", errors)
    annotations = _mapping(metadata.get("annotations"), "metadata.annotations", errors)
    head = _mapping(spec.get("headGroupSpec"), "spec.headGroupSpec", errors)
    ft_annotation, storage_ns = (
        None if (value := _optional_string(annotations.get(key), f"metadata.annotations[{key}]", errors)) is None
        else _shared(value)
        for key in (ann.RAY_FT_ENABLED, ann.RAY_EXTERNAL_STORAGE_NAMESPACE)
    )
    return ClusterFacts(
        name=_string(metadata.get("name"), "metadata.name", errors),
        namespace=_shared(_string(metadata.get("namespace"), "metadata.namespace", errors)),
        uid=_string(metadata.get("uid"), "metadata.uid", errors),
        ft_annotation=ft_annotation,
        options=_options(spec.get("gcsFaultToleranceOptions"), errors),
        storage_namespace_annotation=storage_ns,
        ours=parse_ours(annotations, errors),
        owner_kind=_controller_kind(metadata),
        head_start_params=_start_params(head, errors),
        head_env=_ray_env(head, "spec.headGroupSpec", errors),
        worker_timeouts=_worker_timeouts(spec, errors),
        deleting=metadata.get("deletionTimestamp") is not None,
        errors=tuple(errors),
    )
