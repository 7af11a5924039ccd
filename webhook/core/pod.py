"""Read a Pod (a raw dict) into the facts the plan and the patch builder need.

`read_ray_pod` answers "is this a Ray head/worker pod of a RayCluster, and which one?" and captures the
Ray container (`containers[0]`, KubeRay >= 1.0) exactly as it is, so patches can address it by index.
A pod that is not ours gives None; a pod whose shape is broken raises InvalidPod with a precise message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from webhook.core.raycluster import RAY_API_VERSIONS

NODE_TYPE_LABEL = "ray.io/node-type"
CLUSTER_LABEL = "ray.io/cluster"
# The env var in which KubeRay repeats the generated `ray start` command line.
GEN_RAY_START_CMD = "KUBERAY_GEN_RAY_START_CMD"

Role = Literal["head", "worker"]


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
    # Index and value of KUBERAY_GEN_RAY_START_CMD in env, when it is a literal value.
    gen_cmd_index: int | None = None
    gen_cmd: str | None = None

    @property
    def env_names(self) -> frozenset[str]:
        return frozenset(item["name"] for item in self.env or ())

    def env_index(self, name: str) -> int | None:
        return next((i for i, item in enumerate(self.env or ()) if item["name"] == name), None)

    def env_value(self, name: str) -> str | None:
        """The literal value of env var `name`, or None (absent or set through valueFrom)."""
        for item in self.env or ():
            if item["name"] == name and "valueFrom" not in item:
                value = item.get("value", "")
                return value if isinstance(value, str) else None
        return None


def _owner(metadata: Mapping[str, Any], namespace: str) -> Owner | None:
    refs = metadata.get("ownerReferences") or []
    if not isinstance(refs, list):
        raise InvalidPod("metadata.ownerReferences is not a list")
    for ref in refs:
        if not isinstance(ref, Mapping):
            raise InvalidPod("metadata.ownerReferences has an entry that is not an object")
        is_raycluster = ref.get("kind") == "RayCluster" and ref.get("apiVersion") in RAY_API_VERSIONS
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
    for i, item in enumerate(env):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise InvalidPod(f"spec.containers[0].env[{i}] has no name")
    return tuple(env)


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
    role = labels.get(NODE_TYPE_LABEL)
    if role not in ("head", "worker"):
        return None
    owner = _owner(metadata, namespace or metadata.get("namespace") or "")
    if owner is None:
        return None
    annotations = metadata.get("annotations")
    if annotations is not None and not isinstance(annotations, Mapping):
        raise InvalidPod("metadata.annotations is not an object")
    spec = pod.get("spec")
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], Mapping):
        raise InvalidPod("spec.containers[0] (the Ray container) is missing")
    container = containers[0]
    env = _env(container)
    args = container.get("args")
    args0 = args[0] if isinstance(args, list) and args and isinstance(args[0], str) else None
    gen_index = next(
        (i for i, item in enumerate(env or ()) if item["name"] == GEN_RAY_START_CMD
         and isinstance(item.get("value"), str) and "valueFrom" not in item),
        None,
    )
    return PodFacts(
        role=role,
        owner=owner,
        annotations=annotations,
        env=env,
        args0=args0,
        gen_cmd_index=gen_index,
        gen_cmd=env[gen_index]["value"] if env is not None and gen_index is not None else None,
    )
