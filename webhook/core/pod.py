"""Read a Pod (a raw dict) into the facts the plan and the patch builder need.

`read_ray_pod` answers "is this a Ray head/worker pod of a RayCluster (or the Redis cleanup pod KubeRay runs
when a GCS FT RayCluster is deleted), and which one?" and captures the
Ray container (`containers[0]`, KubeRay >= 1.0) exactly as it is, so patches can address it by index.
A pod that is not ours gives None; a pod whose shape is broken raises InvalidPod with a precise message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from webhook.core.raycluster import RAY_API_VERSIONS

NODE_TYPE_LABEL = "ray.io/node-type"
CLUSTER_LABEL = "ray.io/cluster"
# The env var in which KubeRay repeats the generated `ray start` command line.
GEN_RAY_START_CMD = "KUBERAY_GEN_RAY_START_CMD"

# The pod of KubeRay's Redis cleanup Job (`buildRedisCleanupJob`): the head pod's labels with this node type;
# its controller is the Job, so its RayCluster is named by the `ray.io/cluster` label.
REDIS_CLEANUP: Final = "redis-cleanup"

Role = Literal["head", "worker", "redis-cleanup"]
ROLES: tuple[Role, ...] = ("head", "worker", REDIS_CLEANUP)


class InvalidPod(ValueError):
    """The pod is a Ray pod but cannot be read safely; the message names the field."""


@dataclass(frozen=True)
class Owner:
    """The RayCluster a pod belongs to. `uid` is None when only the `ray.io/cluster` label names it."""

    namespace: str
    name: str
    uid: str | None


@dataclass(frozen=True)
class PodFacts:
    role: Role
    owner: Owner
    # None when the pod has no `metadata.annotations` at all (the patch must create the map).
    annotations: Mapping[str, str] | None
    # None when containers[0] has no `env` (the patch must create the list).
    env: tuple[Mapping[str, Any], ...] | None
    args0: str | None
    # Index and value of KUBERAY_GEN_RAY_START_CMD in env: only when it is there once, as a literal value.
    gen_cmd_index: int | None = None
    gen_cmd: str | None = None
    # Names of `spec.volumes` (None: the pod has no list, the patch must create it).
    volumes: frozenset[str] | None = None
    # (name, mountPath) of the Ray container's `volumeMounts` (None: no list).
    mounts: tuple[tuple[str, str], ...] | None = None

    @property
    def env_names(self) -> frozenset[str]:
        return frozenset(item["name"] for item in self.env or ())

    def env_indexes(self, name: str) -> list[int]:
        """Every index of env var `name`: Kubernetes allows a name twice (with a warning)."""
        return [i for i, item in enumerate(self.env or ()) if item["name"] == name]

    def env_value(self, name: str) -> str | None:
        """The literal value the container gets for `name`, or None (absent or set through valueFrom).

        With the name twice, the kubelet gives the container the last entry ("hides previous definition").
        """
        indexes = self.env_indexes(name)
        return _literal(self.env[indexes[-1]]) if self.env is not None and indexes else None


def _literal(item: Mapping[str, Any]) -> str | None:
    """An env entry's literal value ("" when absent or null), or None when it comes from `valueFrom`."""
    return None if item.get("valueFrom") is not None else item.get("value") or ""


def _owner(metadata: Mapping[str, Any], namespace: str) -> Owner | None:
    refs = metadata.get("ownerReferences") or []
    if not isinstance(refs, list):
        raise InvalidPod("metadata.ownerReferences is not a list")
    for ref in refs:
        if not isinstance(ref, Mapping):
            raise InvalidPod("metadata.ownerReferences has an entry that is not an object")
        api_version = ref.get("apiVersion")  # compared as a string: a list or object is not hashable
        is_raycluster = ref.get("kind") == "RayCluster" and isinstance(api_version, str) \
            and api_version in RAY_API_VERSIONS
        if ref.get("controller") is True and is_raycluster:
            name, uid = ref.get("name"), ref.get("uid")
            if not isinstance(name, str) or not name or not isinstance(uid, str) or not uid:
                raise InvalidPod("the RayCluster ownerReference needs a name and a uid")
            return Owner(namespace=namespace, name=name, uid=uid)
    labels = metadata.get("labels") or {}
    cluster = labels.get(CLUSTER_LABEL)
    if isinstance(cluster, str) and cluster:
        return Owner(namespace=namespace, name=cluster, uid=None)
    return None


def _env(container: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...] | None:
    env = container.get("env")
    if env is None:
        return None
    if not isinstance(env, list):
        raise InvalidPod("spec.containers[0].env is not a list")
    for i, item in enumerate(env):  # JSON objects are dicts: `dict`, not the slower ABC `Mapping` (once per entry)
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidPod(f"spec.containers[0].env[{i}] has no name")
        value, value_from = item.get("value"), item.get("valueFrom")
        if value is not None and not isinstance(value, str):
            raise InvalidPod(f"spec.containers[0].env[{i}].value is not a string")
        if value_from is not None and not isinstance(value_from, dict):
            raise InvalidPod(f"spec.containers[0].env[{i}].valueFrom is not an object")
    return tuple(env)


def _annotations(metadata: Mapping[str, Any]) -> Mapping[str, str] | None:
    annotations = metadata.get("annotations")
    if annotations is None:
        return None
    if not isinstance(annotations, Mapping):
        raise InvalidPod("metadata.annotations is not an object")
    for key, value in annotations.items():
        if not isinstance(value, str):
            raise InvalidPod(f"metadata.annotations[{key}] is not a string")
    return annotations


def _gen_cmd_index(env: tuple[Mapping[str, Any], ...]) -> int | None:
    """KubeRay's generated command line, when it is the only entry of that name and a literal: with the name
    twice, one of them is someone else's and neither is changed."""
    indexes = [i for i, item in enumerate(env) if item["name"] == GEN_RAY_START_CMD]
    if len(indexes) == 1 and env[indexes[0]].get("valueFrom") is None and isinstance(env[indexes[0]].get("value"), str):
        return indexes[0]
    return None


def _volumes(spec: Mapping[str, Any]) -> frozenset[str] | None:
    volumes = spec.get("volumes")
    if volumes is None:
        return None
    if not isinstance(volumes, list) or not all(isinstance(v, Mapping) and isinstance(v.get("name"), str)
                                                for v in volumes):
        raise InvalidPod("spec.volumes is not a list of objects with a name")
    return frozenset(v["name"] for v in volumes)


def _mounts(container: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    mounts = container.get("volumeMounts")
    if mounts is None:
        return None
    if not isinstance(mounts, list) or not all(
            isinstance(m, Mapping) and isinstance(m.get("name"), str) and isinstance(m.get("mountPath"), str)
            for m in mounts):
        raise InvalidPod("spec.containers[0].volumeMounts is not a list of objects with a name and a mountPath")
    return tuple((m["name"], m["mountPath"]) for m in mounts)


def read_inputs(pod: Any, namespace: str) -> tuple[Any, ...] | None:
    """Every part of `pod` that `read_ray_pod(pod, namespace)` reads, or None when the pod's shape is not the usual
    one: pods with equal parts get equal facts (tests/test_decisions.py records what `read_ray_pod` touches and
    checks it is all here): of the Ray container only its env, args and volumeMounts. Other labels, the name and
    the other containers are not read: KubeRay's workers of one group, which differ in their name and
    `ray.io/worker-group-replica-index`, have equal parts."""
    if not isinstance(pod, dict):
        return None
    metadata, spec = pod.get("metadata"), pod.get("spec")
    if not isinstance(metadata, dict) or not isinstance(spec, dict):
        return None
    labels, containers = metadata.get("labels"), spec.get("containers")
    if not isinstance(labels, dict) or not isinstance(containers, list) or not containers \
            or not isinstance(containers[0], dict):
        return None
    ray = containers[0]
    return (namespace or metadata.get("namespace"), labels.get(NODE_TYPE_LABEL), labels.get(CLUSTER_LABEL),
            metadata.get("ownerReferences"), metadata.get("annotations"), ray.get("env"), ray.get("args"),
            ray.get("volumeMounts"), spec.get("volumes"))


def read_ray_pod(pod: Any, namespace: str) -> PodFacts | None:
    """The Ray facts of `pod` in `namespace` (the admission request's namespace), or None if not a Ray pod."""
    if not isinstance(pod, Mapping):
        raise InvalidPod("the object is not a JSON object")
    metadata = pod.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InvalidPod("metadata is not an object")
    labels = metadata.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise InvalidPod("metadata.labels is not an object")
    node_type = labels.get(NODE_TYPE_LABEL)
    role = next((r for r in ROLES if r == node_type), None)
    if role is None:
        return None
    if not namespace:
        namespace = metadata.get("namespace") or ""
        if not isinstance(namespace, str):
            raise InvalidPod("metadata.namespace is not a string")
    owner = _owner(metadata, namespace)
    if owner is None:
        return None
    annotations = _annotations(metadata)
    spec = pod.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], Mapping):
        raise InvalidPod("spec.containers[0] (the Ray container) is missing")
    container = containers[0]
    env = _env(container)
    args = container.get("args")
    args0 = args[0] if isinstance(args, list) and args and isinstance(args[0], str) else None
    gen_index = _gen_cmd_index(env) if env is not None else None
    return PodFacts(
        role=role,
        owner=owner,
        annotations=annotations,
        env=env,
        args0=args0,
        gen_cmd_index=gen_index,
        gen_cmd=env[gen_index]["value"] if env is not None and gen_index is not None else None,
        volumes=_volumes(spec),
        mounts=_mounts(container),
    )
