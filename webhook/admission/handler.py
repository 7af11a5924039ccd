"""The admission handler: one parsed AdmissionRequest -> an AdmissionReview response and its Outcome.

Like controller-runtime's `Handler`: it never sees HTTP (that is `app`). It reads the pod, finds its
RayCluster through the lookup (cache first, one bounded GET on a miss), runs the one mutation shared with
`render`, hands a head pod's Event to the recorder (queued, never awaited; none for a dry run), and builds the
answer with the codec's `allowed`/`patched`/`denied`.
"""

from __future__ import annotations

import logging
from typing import Any

from webhook.admission import review
from webhook.admission.decisions import MAX_BYTES, Decision, Decisions
from webhook.admission.lookup import LookupFailed, RayClusterLookup
from webhook.admission.metrics import Metrics
from webhook.admission.recorder import EventRecorder
from webhook.core.events import INCOMPLETE
from webhook.core.mutation import mutate
from webhook.core.outcome import Outcome
from webhook.core.pod import InvalidPod, read_ray_pod
from webhook.core.settings import LookupFailure, Settings

log = logging.getLogger(__name__)


class Admission:
    """The `/mutate` handler's logic over a parsed request."""

    def __init__(self, lookup: RayClusterLookup, settings: Settings, metrics: Metrics,
                 recorder: EventRecorder | None = None, memo_bytes: int = MAX_BYTES) -> None:
        self.lookup, self.settings, self.metrics, self.recorder = lookup, settings, metrics, recorder
        self.decisions = Decisions(max_bytes=memo_bytes)

    async def answer(self, req: review.AdmissionRequest) -> tuple[dict[str, Any], Outcome]:
        """The AdmissionReview response for `req`, and an outcome label."""
        if req.operation != "CREATE" or req.group != "" or req.kind != "Pod":
            return review.allowed(req.uid), Outcome.IGNORED
        key = self.decisions.key(req.object, req.namespace)
        if key is not None:
            kept = self.decisions.recall(key, self.lookup, self.settings)
            self.metrics.decisions.add("miss" if kept is None else "hit")
            if kept is not None:
                self.metrics.cache.add("hit")
                return self._answer(req, kept)
        try:
            pod = read_ray_pod(req.object, req.namespace)
        except InvalidPod as exc:
            return review.denied(req.uid, f"ray-ft-webhook: invalid Ray pod: {exc}", code=400), Outcome.INVALID
        if pod is None:
            return review.allowed(req.uid), Outcome.IGNORED

        cluster = self.lookup.cached(pod.owner)
        self.metrics.cache.add("miss" if cluster is None else "hit")
        namespace = self.lookup.namespace(pod.owner.namespace)
        try:
            if cluster is None:
                cluster = await self.lookup.fetch(pod.owner)
            if namespace is None:
                namespace = await self.lookup.fetch_namespace(pod.owner.namespace)
        except LookupFailed as exc:
            message = f"ray-ft-webhook: {exc}"
            log.warning("lookup failed", extra={"uid": req.uid, "reason": str(exc)})
            if self.settings.on_lookup_failure is LookupFailure.ALLOW:
                warning = f"GCS FT settings not injected: {exc}"
                return review.allowed(req.uid, [warning]), Outcome.LOOKUP_FAILED
            return review.denied(req.uid, message, code=503), Outcome.LOOKUP_FAILED

        decision = Decision.of(pod.owner, cluster, namespace, self.settings,
                               mutate(cluster, pod, self.settings, namespace))
        if key is not None:
            self.decisions.put(key, decision)
        return self._answer(req, decision)

    def _answer(self, req: review.AdmissionRequest, decision: Decision) -> tuple[dict[str, Any], Outcome]:
        """The response for a decided pod; a head pod's Event goes to the recorder (none for a dry run)."""
        event = decision.event
        if event is not None and not req.dry_run:
            if event.reason == INCOMPLETE:
                self.metrics.incomplete_heads.inc()
            if self.recorder is not None:
                self.recorder.record(decision.cluster, event)
        return {"uid": req.uid, **decision.response}, decision.outcome
