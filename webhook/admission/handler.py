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
                 recorder: EventRecorder | None = None) -> None:
        self.lookup, self.settings, self.metrics, self.recorder = lookup, settings, metrics, recorder
        # Both series exist from the start (a miss count of 0 is information), looked up once.
        self._hit, self._miss = metrics.cache.labels("hit"), metrics.cache.labels("miss")

    async def answer(self, req: review.AdmissionRequest) -> tuple[dict[str, Any], Outcome]:
        """The AdmissionReview response for `req`, and an outcome label."""
        if req.operation != "CREATE" or req.group != "" or req.kind != "Pod":
            return review.allowed(req.uid), Outcome.IGNORED
        try:
            pod = read_ray_pod(req.object, req.namespace)
        except InvalidPod as exc:
            return review.denied(req.uid, f"ray-ft-webhook: invalid Ray pod: {exc}", code=400), Outcome.INVALID
        if pod is None:
            return review.allowed(req.uid), Outcome.IGNORED

        cluster = self.lookup.cached(pod.owner)
        (self._hit if cluster is not None else self._miss).inc()
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

        result = mutate(cluster, pod, self.settings, namespace)
        if result.event is not None and not req.dry_run:
            if result.event.reason == INCOMPLETE:
                self.metrics.incomplete_heads.inc()
            if self.recorder is not None:
                self.recorder.record(cluster, result.event)
        if result.denied is not None:
            return review.denied(req.uid, f"ray-ft-webhook: {result.denied}"), Outcome.DENIED
        return review.patched(req.uid, result.ops, result.warnings), result.outcome
