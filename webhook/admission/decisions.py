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
holds at most `max_bytes` (keys, answers and their objects), oldest out first, and skips a pod whose key is
bigger than `max_entry_bytes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.admission import review
from webhook.admission.lookup import RayClusterLookup
from webhook.core.events import EventFacts
from webhook.core.mutation import Mutation
from webhook.core.namespace import NamespaceFacts
from webhook.core.outcome import Outcome
from webhook.core.pod import ROLES, Owner, read_inputs
from webhook.core.raycluster import ClusterFacts
from webhook.core.settings import Settings

# About 600 different pods of KubeRay's size (2 KB of key, 1.5 KB answer); a RayCluster has a few (head, groups).
MAX_BYTES = 2 << 20
MAX_ENTRY_BYTES = 64 << 10
# What an entry holds besides its key and encoded response (the Decision, the dicts, the Event's facts),
# measured with tracemalloc (tests/test_decisions.py keeps the estimate honest).
ENTRY_OVERHEAD_BYTES = 1024

Key = bytes


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for a pod, without its uid, and everything besides the pod that it was decided from."""

    owner: Owner
    cluster: ClusterFacts
    namespace: NamespaceFacts | None
    settings: Settings
    # The AdmissionReview response but for its uid (the patch encoded once), its outcome and a head's Event.
    response: Mapping[str, Any]
    outcome: Outcome
    event: EventFacts | None
    # The bytes the memo counts for it besides its key: the encoded response and the objects around it.
    size: int

    @classmethod
    def of(cls, owner: Owner, cluster: ClusterFacts, namespace: NamespaceFacts | None, settings: Settings,
           result: Mutation) -> Decision:
        if result.denied is not None:
            response = review.denied("", f"ray-ft-webhook: {result.denied}")
        else:
            response = review.patched("", review.json_patch(result.ops), result.warnings)
        response.pop("uid")
        return cls(owner, cluster, namespace, settings, response, result.outcome, result.event,
                   len(orjson.dumps(response)) + ENTRY_OVERHEAD_BYTES)


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
        """The bytes held now: keys, encoded responses and an estimate of the objects around them."""
        return self._bytes

    def key(self, obj: Any, namespace: str) -> Key | None:
        """The key of the pod `obj` admitted in `namespace`, or None when it is not worth one or cannot be kept: the
        memo is off, the pod's `ray.io/node-type` label names no Ray role (answered without a lookup), an unusual
        shape (left to `read_ray_pod` to name), too big, or nested deeper than orjson encodes (it parses 1024
        levels, encodes 254)."""
        parts = read_inputs(obj, namespace) if self.max_bytes else None
        if parts is None or parts[1] not in ROLES:  # parts[1]: the node-type label
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
        """Keep `decision` under `key`, the oldest out first while over the budget; one bigger than the budget
        is not kept."""
        size = len(key) + decision.size
        if size > self.max_bytes:
            return
        key = bytes(memoryview(key))  # orjson's bytes keep their buffer's spare capacity (up to twice): trim it
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(key) + old.size
        while self._entries and self._bytes + size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._bytes -= len(oldest) + self._entries.pop(oldest).size
        self._entries[key] = decision
        self._bytes += size
