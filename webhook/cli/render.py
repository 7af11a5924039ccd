"""`render`: the offline preview of one pod. Runs the very mutation the server runs and applies its patch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch

from webhook.common.errors import InputError
from webhook.core.events import EventFacts
from webhook.core.mutation import mutate
from webhook.core.namespace import parse_namespace
from webhook.core.patches import Op
from webhook.core.pod import InvalidPod, read_ray_pod
from webhook.core.raycluster import parse_raycluster
from webhook.core.settings import Settings


@dataclass(frozen=True)
class Rendered:
    pod: dict[str, Any]
    patch: list[Op]
    warnings: tuple[str, ...] = ()
    denied: str | None = None
    skipped: str | None = None
    # The Event the server would record on the RayCluster (head pods).
    event: EventFacts | None = None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def render(raycluster: Mapping[str, Any], pod: Mapping[str, Any], settings: Settings,
           namespace_object: Mapping[str, Any] | None = None) -> Rendered:
    """The patch the server would answer for `pod` (owned by `raycluster`, in the Namespace `namespace_object`
    whose annotations give defaults), and the patched pod.

    The namespace is the pod's, else the RayCluster's, else `default`. Raises InputError when the pod is not
    a Ray pod of this RayCluster or cannot be read.
    """
    cluster_meta = _mapping(raycluster.get("metadata"))
    namespace = next((ns for ns in (_mapping(pod.get("metadata")).get("namespace"), cluster_meta.get("namespace"))
                      if isinstance(ns, str) and ns), "default")
    cluster = parse_raycluster({**raycluster, "metadata": {**cluster_meta, "namespace": namespace}})
    try:
        facts = read_ray_pod(pod, namespace)
    except InvalidPod as exc:
        raise InputError(f"invalid pod: {exc}") from None
    if facts is None:
        return Rendered(pod=dict(pod), patch=[], skipped="not a head, worker or redis-cleanup pod of a RayCluster")
    if facts.owner.name != cluster.name or (facts.owner.uid and cluster.uid and facts.owner.uid != cluster.uid):
        raise InputError(
            f"the pod belongs to RayCluster {facts.owner.name!r} (uid {facts.owner.uid}), "
            f"not to {cluster.name!r} (uid {cluster.uid or 'unset'})"
        )
    ns = parse_namespace(namespace_object) if namespace_object is not None else None
    if ns is not None and ns.name != facts.owner.namespace:
        raise InputError(f"the Namespace object is {ns.name!r}, the pod's namespace is {facts.owner.namespace!r}")
    result = mutate(cluster, facts, settings, ns)
    patch = list(result.ops)
    return Rendered(
        pod=jsonpatch.apply_patch(pod, patch) if patch else dict(pod),
        patch=patch,
        warnings=result.warnings,
        denied=result.denied,
        skipped=result.skipped,
        event=result.event,
    )
