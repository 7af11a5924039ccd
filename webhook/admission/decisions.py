"""A bounded memo of `/mutate` decisions, so the workers of a scale-up are planned once, not once each.

KubeRay creates the pods of one worker group from one template: the apiserver sends their AdmissionReviews with
pods that differ only in what the plan does not read (the generated name, the replica index label). The decision
is a pure function of its inputs, so it can be kept for the next such pod, provided every input is in the key:

- the pod: the request's namespace and every part of the pod `read_ray_pod` reads (`pod.read_inputs`),
  encoded by orjson. Equal bytes mean equal parts, hence equal `PodFacts`, which is all the plan sees of a pod;
- the RayCluster: the `ClusterFacts` object the lookup gives now must be the one the decision was made with
  (`is`). The watch cache stores a new object for every watch event, and each event carries a new
  resourceVersion, so any change, deletion or re-creation (a new uid) misses;
- the Namespace's defaults: the same object, or an equal one (`NamespaceFacts` is a frozen dataclass: equal
  fields are equal inputs);
- the admin's settings: the same object (they are fixed for the life of the process).

Only complete decisions (a Mutation) are kept; invalid pods, failed lookups and non-Ray pods are not. The memo
holds at most `max_bytes` of keys, oldest out first, and skips a pod bigger than `max_entry_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from webhook.admission.lookup import RayClusterLookup
from webhook.core.mutation import Mutation
from webhook.core.namespace import NamespaceFacts
from webhook.core.pod import NODE_TYPE_LABEL, ROLES, Owner, read_inputs
from webhook.core.raycluster import ClusterFacts
from webhook.core.settings import Settings

# About 700 different pods of KubeRay's size (3 KB of parts); a RayCluster has a few (its head, one per group).
MAX_BYTES = 2 << 20
MAX_ENTRY_BYTES = 64 << 10

Key = bytes


@dataclass(frozen=True, slots=True)
class Decision:
    """A decision and everything besides the pod that it was made from."""

    owner: Owner
    cluster: ClusterFacts
    namespace: NamespaceFacts | None
    settings: Settings
    mutation: Mutation
    # The mutation's ops as the response's `patch` field (review.json_patch), encoded once.
    patch: str | None


def labelled_ray_pod(obj: Any) -> bool:
    """Whether the pod's `ray.io/node-type` label names a Ray role, read without validation. Only those are
    worth a key: any other pod is answered without a lookup (by `read_ray_pod`, which also names what is
    wrong with a broken one)."""
    try:
        return obj["metadata"]["labels"][NODE_TYPE_LABEL] in ROLES
    except (KeyError, TypeError, IndexError):
        return False


class Decisions:
    """The memo. One event loop uses it: no lock."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_entry_bytes: int = MAX_ENTRY_BYTES) -> None:
        self.max_bytes, self.max_entry_bytes = max_bytes, max_entry_bytes
        self._entries: dict[Key, Decision] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """The bytes of the keys held now."""
        return self._bytes

    def key(self, obj: Any, namespace: str) -> Key | None:
        """The key of the pod `obj` admitted in `namespace`, or None when it cannot be kept: an unusual shape (left
        to `read_ray_pod` to name), too big, or nested deeper than orjson encodes (it parses 1024 levels, encodes
        254)."""
        parts = read_inputs(obj, namespace)
        if parts is None:
            return None
        try:
            encoded = orjson.dumps(parts)
        except orjson.JSONEncodeError:
            return None
        return encoded if len(encoded) <= self.max_entry_bytes else None

    def recall(self, key: Key, lookup: RayClusterLookup, settings: Settings) -> Decision | None:
        """The decision kept for `key` if the lookup's facts now are those it was made from, else None."""
        kept = self._entries.get(key)
        if kept is None or kept.settings is not settings or lookup.cached(kept.owner) is not kept.cluster:
            return None
        namespace = lookup.namespace(kept.owner.namespace)
        if namespace is not kept.namespace and namespace != kept.namespace:
            return None
        return kept

    def put(self, key: Key, decision: Decision) -> None:
        size = len(key)
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= size
        while self._entries and self._bytes + size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._bytes -= len(oldest)
            del self._entries[oldest]
        self._entries[key] = decision
        self._bytes += size
