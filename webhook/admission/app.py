"""The HTTP app: `/mutate`, `/validate` and `/mutate-raycluster` (bytes -> review codec -> handler -> bytes), health,
readiness, metrics.

The admission paths are served by raw ASGI routes in front of FastAPI: `/mutate` is the hot one,
and FastAPI/Starlette's middleware stack, request and response objects cost about a third of a request
there (py-spy, docs/benchmarks.md). The Content-Type is checked before reading, the read stops at
MAX_BODY_BYTES, and the JSON is parsed once with orjson. Everything else goes to FastAPI. The decision
itself never sees HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import Response

from webhook.admission import review
from webhook.admission.defaults import Defaulting
from webhook.admission.handler import Admission
from webhook.admission.limits import MAX_BODY_BYTES, Limits
from webhook.admission.lookup import RayClusterLookup
from webhook.admission.metrics import CONTENT_TYPE, Metrics, Tally
from webhook.admission.recorder import EventRecorder
from webhook.admission.validate import Validation
from webhook.core.outcome import Outcome
from webhook.core.settings import Settings

log = logging.getLogger(__name__)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Health:
    """Readiness inputs: each callable answers "is this part ready?"."""

    certificate_valid: Callable[[], bool]
    cache_synced: Callable[[], bool]


class _BadRequest(Exception):
    """An HTTP-level rejection of the request: a 4xx with a JSON `{"error": ...}` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyBudget:
    """The bytes of request bodies this process holds at once, across requests: MAX_BODY_BYTES bounds one
    request, this bounds them all (stalled bodies from many connections). One event loop: no lock needed."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class _Held:
    """What one request took from the budget, given back when it is answered."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        self.size = 0


def _busy(budget: BodyBudget) -> _BadRequest:
    return _BadRequest(503, f"server busy: {budget.limit}-byte budget for request bodies in use, retry")


async def _read_body(scope: Scope, receive: Receive, budget: BodyBudget, held: _Held) -> bytes:
    """The request body, or _BadRequest: 415 before reading, 413 as soon as the cap is passed, 503 when the
    process-wide budget cannot hold it. The declared Content-Length is taken from the budget before reading."""
    content_type = length = None  # the first of each, in one pass over the headers
    for key, value in scope["headers"]:
        if key == b"content-type" and content_type is None:
            content_type = value
        elif key == b"content-length" and length is None:
            length = value
    if content_type != b"application/json":  # what the apiserver sends; anything else is parsed
        text = content_type.decode("latin-1") if content_type is not None else ""
        if text.split(";")[0].strip().lower() != "application/json":
            raise _BadRequest(415, f"Content-Type must be application/json, got {text or 'none'!r}")
    declared = int(length) if length is not None and length.isdigit() else 0  # bytes.isdigit: ASCII digits only
    if declared > MAX_BODY_BYTES:
        raise _BadRequest(413, f"request body of {declared} bytes is over the {MAX_BODY_BYTES}-byte limit")
    if not budget.take(declared):
        raise _busy(budget)
    held.size = declared
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _BadRequest(400, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BadRequest(413, f"request body is over the {MAX_BODY_BYTES}-byte limit")
        if size > held.size:  # chunked, or more than declared (the parser stops at Content-Length)
            if not budget.take(size - held.size):
                raise _busy(budget)
            held.size = size
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


_CONTENT_TYPE = (b"content-type", b"application/json")


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [_CONTENT_TYPE, (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


Answer = Callable[[review.AdmissionRequest], Awaitable[tuple[dict[str, Any], Outcome]]]


class AdmissionRoute:
    """One admission path (`POST /mutate`, `POST /validate`) as a raw ASGI app: body -> review -> `answer` ->
    bytes, counted by outcome in `outcomes` (and timed in the latency histogram when `timed`)."""

    def __init__(self, answer: Answer, outcomes: Tally, metrics: Metrics, budget: BodyBudget, timed: bool) -> None:
        self.answer, self.outcomes, self.metrics, self.budget, self.timed = answer, outcomes, metrics, budget, timed
        self._over_budget = metrics.connections_refused.labels("body_budget")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        self.metrics.in_flight.up()
        outcome = Outcome.BAD_REQUEST
        held = _Held()
        try:
            try:
                req = review.parse_review(await _read_body(scope, receive, self.budget, held))
            except (_BadRequest, review.ReviewError) as exc:
                if exc.status == 503:
                    self._over_budget.inc()
                await _respond(send, exc.status, orjson.dumps({"error": str(exc)}))
                return
            try:
                response, outcome = await self.answer(req)
            except Exception:
                log.exception("admission failed", extra={"uid": req.uid})
                outcome = Outcome.ERROR
                response = review.denied(req.uid, "ray-ft-webhook: internal error, see the webhook's logs", code=500)
            await _respond(send, 200, review.encode(response))
        finally:
            self.budget.give(held.size)
            self.metrics.in_flight.down()
            self.outcomes.add(outcome)
            if self.timed:
                self.metrics.latency.observe(time.perf_counter() - started)


class WebhookApp:
    """The ASGI app: a POST to an admission path straight to its AdmissionRoute, everything else (and lifespan) to
    FastAPI."""

    def __init__(self, routes: dict[str, AdmissionRoute], rest: FastAPI) -> None:
        self.routes, self.rest = routes, rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is not None:
            await route(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def create_app(lookup: RayClusterLookup, settings: Settings, health: Health,
               metrics: Metrics | None = None, limits: Limits | None = None,
               recorder: EventRecorder | None = None) -> WebhookApp:
    """The webhook's ASGI app. Without OpenAPI docs routes: this is not a browsable API."""
    metrics = metrics or Metrics()
    metrics.cache_synced.set_function(lambda: 1.0 if health.cache_synced() else 0.0)
    limits = limits or Limits()
    admission = Admission(lookup, settings, metrics, recorder, memo_bytes=limits.decision_memo_bytes)
    validation = Validation(lookup, settings)
    defaulting = Defaulting(lookup, settings)
    app = FastAPI(title="ray-ft-webhook", openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/mutate")
    @app.post("/mutate-raycluster")
    @app.post("/validate")
    async def admission_unreachable() -> Response:  # pragma: no cover - WebhookApp answers these POSTs first
        """Declared so that other methods on the admission paths get FastAPI's 405."""
        raise AssertionError("POST to an admission path is served by AdmissionRoute")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"ok\n", media_type="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        checks = {"certificate": health.certificate_valid(), "rayclusters": health.cache_synced()}
        failing = [name for name, ok in checks.items() if not ok]
        if failing:
            return Response(f"not ready: {', '.join(failing)}\n".encode(), status_code=503, media_type="text/plain")
        return Response(b"ok\n", media_type="text/plain")

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    budget = BodyBudget(limits.body_budget_bytes)
    return WebhookApp({
        "/mutate": AdmissionRoute(admission.answer, metrics.admissions, metrics, budget, timed=True),
        "/validate": AdmissionRoute(validation.answer, metrics.validations, metrics, budget, timed=False),
        "/mutate-raycluster": AdmissionRoute(defaulting.answer, metrics.defaulted, metrics, budget, timed=False),
    }, app)
