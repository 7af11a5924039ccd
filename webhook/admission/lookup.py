"""Finding the RayCluster that owns a pod, and its Namespace's defaults: the `RayClusterLookup` protocol the
admission handler uses.

Two implementations: `watch.ApiLookup` (production: watch-fed caches with one bounded fallback GET) and
`StaticLookup` here (a folder of manifests, for trying the webhook without a cluster: its RayClusters, and
the Namespaces among them for their defaults). Unit tests use a
dict-backed fake. Both store parsed ClusterFacts, not raw objects, so parsing happens once per change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from webhook.common.errors import InputError
from webhook.common.manifests import load_objects
from webhook.core.namespace import NamespaceFacts, parse_namespace
from webhook.core.pod import Owner
from webhook.core.raycluster import ClusterFacts, parse_raycluster

Key = tuple[str, str]
# Namespaces named by requests but not in the folder (any name a client sends): the newest are kept.
MAX_NAMESPACES_WITHOUT_DEFAULTS = 1024


class LookupFailed(Exception):
    """The RayCluster cannot be read; the message says why (not found, forbidden, timed out...)."""


class RayClusterLookup(Protocol):
    """What the admission handler needs; a dict-backed fake implements it in unit tests."""

    def cached(self, owner: Owner) -> ClusterFacts | None:
        """The cached facts for `owner`, or None on a miss or uid mismatch. Never does I/O."""

    async def fetch(self, owner: Owner) -> ClusterFacts:
        """A fresh read, bounded in time; raises LookupFailed."""

    def ready(self) -> bool:
        """True once the cache holds a complete first listing."""

    def clusters(self) -> list[ClusterFacts]:
        """Every RayCluster known now (a snapshot): `/validate` looks for another using the same GCS storage."""

    def namespace(self, name: str) -> NamespaceFacts | None:
        """The cached defaults of Namespace `name`, or None when not seen yet. Never does I/O."""

    async def fetch_namespace(self, name: str) -> NamespaceFacts:
        """A fresh read of Namespace `name`, bounded in time; raises LookupFailed."""


def matches(facts: ClusterFacts, owner: Owner) -> bool:
    return owner.uid is None or not facts.uid or facts.uid == owner.uid


class StaticLookup:
    """RayClusters from a folder of YAML/JSON manifests, read once at start (`--rayclusters-from`)."""

    def __init__(self, clusters: Mapping[Key, ClusterFacts],
                 namespaces: Mapping[str, NamespaceFacts] | None = None) -> None:
        self._clusters = dict(clusters)
        self._namespaces = dict(namespaces or {})
        self._no_defaults: dict[str, NamespaceFacts] = {}

    @classmethod
    def from_folder(cls, folder: Path, default_namespace: str = "default") -> StaticLookup:
        if not folder.is_dir():
            raise InputError(f"{folder}: not a folder")
        clusters: dict[Key, ClusterFacts] = {}
        namespaces: dict[str, NamespaceFacts] = {}
        for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml", ".json")):
            for obj in load_objects(path):
                if obj.get("kind") == "Namespace" and obj.get("apiVersion") == "v1":
                    ns = parse_namespace(obj)
                    namespaces[ns.name] = ns
                if obj.get("kind") != "RayCluster":
                    continue
                metadata = obj.setdefault("metadata", {})
                if isinstance(metadata, dict):  # otherwise parse_raycluster names the problem
                    metadata.setdefault("namespace", default_namespace)
                facts = parse_raycluster(obj)
                clusters[(facts.namespace, facts.name)] = facts
        return cls(clusters, namespaces)

    def __len__(self) -> int:
        return len(self._clusters)

    def cached(self, owner: Owner) -> ClusterFacts | None:
        facts = self._clusters.get((owner.namespace, owner.name))
        return facts if facts is not None and matches(facts, owner) else None

    async def fetch(self, owner: Owner) -> ClusterFacts:
        facts = self.cached(owner)
        if facts is None:
            raise LookupFailed(f"RayCluster {owner.namespace}/{owner.name} not found in the manifest folder")
        return facts

    def ready(self) -> bool:
        return True

    def clusters(self) -> list[ClusterFacts]:
        return list(self._clusters.values())

    def namespace(self, name: str) -> NamespaceFacts | None:
        facts = self._namespaces.get(name) or self._no_defaults.get(name)
        if facts is None:  # a Namespace not in the folder has no defaults; kept so the decision memo sees it again
            if len(self._no_defaults) >= MAX_NAMESPACES_WITHOUT_DEFAULTS:
                del self._no_defaults[next(iter(self._no_defaults))]
            facts = self._no_defaults[name] = NamespaceFacts(name)
        return facts

    async def fetch_namespace(self, name: str) -> NamespaceFacts:
        return self.namespace(name) or NamespaceFacts(name)
