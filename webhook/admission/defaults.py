"""The `/mutate-raycluster` handler: a RayCluster being created in a Namespace with `ft-default` -> the patch that
turns GCS FT on (the decision is `core.defaulting.ft_default`).

Registered with `failurePolicy: Ignore` and `sideEffects: None`: a RayCluster created while the webhook is down
simply keeps its own FT setting, and a dry run is answered like any other request (the answer writes nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from webhook.admission import review
from webhook.admission.lookup import LookupFailed, RayClusterLookup
from webhook.core.defaulting import ft_default
from webhook.core.outcome import Outcome
from webhook.core.raycluster import parse_raycluster
from webhook.core.settings import Settings

log = logging.getLogger(__name__)


class Defaulting:
    """The `/mutate-raycluster` handler's logic over a parsed request."""

    def __init__(self, lookup: RayClusterLookup, settings: Settings) -> None:
        self.lookup, self.settings = lookup, settings

    async def answer(self, req: review.AdmissionRequest) -> tuple[dict[str, Any], Outcome]:
        if req.group != "ray.io" or req.kind != "RayCluster" or req.operation != "CREATE" \
                or not isinstance(req.object, Mapping):
            return review.allowed(req.uid), Outcome.IGNORED
        cluster = parse_raycluster(req.object)
        name = cluster.namespace or req.namespace
        namespace = self.lookup.namespace(name)
        if namespace is None:
            try:
                namespace = await self.lookup.fetch_namespace(name)
            except LookupFailed as exc:
                log.warning("lookup failed", extra={"uid": req.uid, "reason": str(exc)})
                return review.allowed(req.uid, [f"{exc}: GCS FT not turned on by default"]), Outcome.LOOKUP_FAILED
        metadata = req.object.get("metadata")
        has_annotations = isinstance(metadata, Mapping) and isinstance(metadata.get("annotations"), Mapping)
        result = ft_default(cluster, namespace, self.settings, has_annotations)
        warnings = [result.warning] if result.warning else []
        if not result.ops:
            return review.allowed(req.uid, warnings), Outcome.SKIPPED if result.skipped else Outcome.UNCHANGED
        return review.patched(req.uid, review.json_patch(result.ops), warnings), Outcome.PATCHED
