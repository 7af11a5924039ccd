"""The `/validate` handler: a RayCluster, RayService or RayJob being applied -> allowed with warnings, or denied.

The decision is `core.validation.validate`; this adapter decodes the objects of the request, gives it the live
RayClusters the lookup knows (for the shared storage namespace check) and encodes the verdict. Registered with
`failurePolicy: Ignore`: validation is advice, and must never stand between a user and the apiserver.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from webhook.admission import review
from webhook.admission.lookup import LookupFailed, RayClusterLookup
from webhook.core.outcome import Outcome
from webhook.core.raycluster import ClusterFacts, parse_raycluster
from webhook.core.settings import Settings
from webhook.core.validation import EMBEDDED_SPEC, embedded_raycluster, validate

GROUP = "ray.io"


class Validation:
    """The `/validate` handler's logic over a parsed request."""

    def __init__(self, lookup: RayClusterLookup, settings: Settings) -> None:
        self.lookup, self.settings = lookup, settings

    def _facts(self, kind: str, obj: Any, namespace: str) -> ClusterFacts | None:
        raycluster = embedded_raycluster(kind, obj)
        if raycluster is None:
            return None
        facts = parse_raycluster(raycluster)
        return facts if facts.namespace else replace(facts, namespace=namespace)

    async def answer(self, req: review.AdmissionRequest) -> tuple[dict[str, Any], Outcome]:
        if req.group != GROUP or req.kind not in EMBEDDED_SPEC or req.operation not in ("CREATE", "UPDATE"):
            return review.allowed(req.uid), Outcome.IGNORED
        new = self._facts(req.kind, req.object, req.namespace)
        if new is None:
            return review.allowed(req.uid), Outcome.IGNORED
        old = self._facts(req.kind, req.old_object, req.namespace) if req.operation == "UPDATE" else None
        namespace = self.lookup.namespace(new.namespace)
        if namespace is None:
            try:
                namespace = await self.lookup.fetch_namespace(new.namespace)
            except LookupFailed as exc:
                return review.allowed(req.uid, [f"not checked: {exc}"]), Outcome.LOOKUP_FAILED
        verdict = validate(req.kind, new, old, self.lookup.clusters(), self.settings, namespace, self.lookup.namespace)
        if verdict.denied is not None:
            return review.denied(req.uid, f"ray-ft-webhook: {verdict.denied}"), Outcome.DENIED
        return review.allowed(req.uid, verdict.warnings), Outcome.WARNED if verdict.warnings else Outcome.ALLOWED

