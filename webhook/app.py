"""The HTTP app: `/mutate` (bytes -> review -> facts -> mutation -> bytes), health, readiness and metrics.

The body is read by hand (no FastAPI body model): the Content-Type is checked before reading, the read
stops at MAX_BODY_BYTES, and the JSON is parsed once with orjson. The decision itself never sees HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from webhook import review
from webhook.lookup import LookupFailed, RayClusterLookup
from webhook.metrics import CONTENT_TYPE, Metrics
from webhook.mutation import mutate
from webhook.pod import InvalidPod, read_ray_pod
from webhook.settings import LookupFailure, Settings

log = logging.getLogger(__name__)

# The apiserver caps request bodies at 3 MiB; twice that leaves room for any encoding overhead while
# bounding what a misbehaving client can make us buffer.
MAX_BODY_BYTES = 6 * 1024 * 1024


@dataclass(frozen=True)
class Health:
    """Readiness inputs: each callable answers "is this part ready?"."""

    certificate_loaded: Callable[[], bool]
    cache_synced: Callable[[], bool]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request) -> bytes | JSONResponse:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        return _error(415, f"Content-Type must be application/json, got {content_type or 'none'!r}")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return _error(413, f"request body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return _error(413, f"request body is over the {MAX_BODY_BYTES}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


class Admission:
    """The `/mutate` handler's logic over a parsed request."""

    def __init__(self, lookup: RayClusterLookup, settings: Settings, metrics: Metrics) -> None:
        self.lookup, self.settings, self.metrics = lookup, settings, metrics

    async def answer(self, req: review.AdmissionRequest) -> tuple[dict, str]:
        """The AdmissionReview response for `req`, and an outcome label."""
        if req.operation != "CREATE" or req.group != "" or req.kind != "Pod":
            return review.allowed(req.uid), "ignored"
        try:
            pod = read_ray_pod(req.object, req.namespace)
        except InvalidPod as exc:
            return review.denied(req.uid, f"ray-ft-webhook: invalid Ray pod: {exc}", code=400), "invalid"
        if pod is None:
            return review.allowed(req.uid), "ignored"

        cluster = self.lookup.cached(pod.owner)
        self.metrics.cache.labels("hit" if cluster is not None else "miss").inc()
        if cluster is None:
            try:
                cluster = await self.lookup.fetch(pod.owner)
            except LookupFailed as exc:
                message = f"ray-ft-webhook: {exc}"
                log.warning("lookup failed", extra={"uid": req.uid, "reason": str(exc)})
                if self.settings.on_lookup_failure is LookupFailure.ALLOW:
                    warning = f"GCS FT settings not injected: {exc}"
                    return review.allowed(req.uid, [warning]), "lookup_failed"
                return review.denied(req.uid, message, code=503), "lookup_failed"

        result = mutate(cluster, pod, self.settings)
        if result.denied is not None:
            return review.denied(req.uid, f"ray-ft-webhook: {result.denied}"), "denied"
        return review.patched(req.uid, result.ops, result.warnings), result.outcome


def create_app(lookup: RayClusterLookup, settings: Settings, health: Health, metrics: Metrics | None = None) -> FastAPI:
    """The webhook's ASGI app. Without OpenAPI docs routes: this is not a browsable API."""
    metrics = metrics or Metrics()
    admission = Admission(lookup, settings, metrics)
    app = FastAPI(title="ray-ft-webhook", openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/mutate")
    async def mutate_route(request: Request) -> Response:
        started = time.perf_counter()
        metrics.in_flight.inc()
        outcome = "bad_request"
        try:
            body = await _read_body(request)
            if isinstance(body, JSONResponse):
                return body
            try:
                req = review.parse_review(body)
            except review.ReviewError as exc:
                return _error(exc.status, str(exc))
            try:
                response, outcome = await admission.answer(req)
            except Exception:
                log.exception("admission failed", extra={"uid": req.uid})
                outcome = "error"
                response = review.denied(req.uid, "ray-ft-webhook: internal error, see the webhook's logs", code=500)
            return Response(review.encode(response), media_type="application/json")
        finally:
            metrics.in_flight.dec()
            metrics.admissions.labels(outcome).inc()
            metrics.latency.observe(time.perf_counter() - started)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"ok\n", media_type="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        checks = {"certificate": health.certificate_loaded(), "rayclusters": health.cache_synced()}
        failing = [name for name, ok in checks.items() if not ok]
        if failing:
            return Response(f"not ready: {', '.join(failing)}\n".encode(), status_code=503, media_type="text/plain")
        return Response(b"ok\n", media_type="text/plain")

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app
