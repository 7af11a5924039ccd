"""The `admission.k8s.io/v1` AdmissionReview codec: parse a request, build and encode responses.

Two error channels, kept apart on purpose: an unusable review (not JSON, not an AdmissionReview v1, no
uid) raises ReviewError, which the HTTP layer turns into a 4xx so the webhook's `failurePolicy` applies;
a deliberate rejection of a usable review is an `allowed: false` response built by `denied`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
# Warnings reach `kubectl` users, who read them on one terminal line: keep each under 120 characters.
MAX_WARNING_LENGTH = 119


class ReviewError(ValueError):
    """The body is not a usable AdmissionReview; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class AdmissionRequest(NamedTuple):
    """The parts of `request` the webhook reads. `object` stays a raw dict (no typed round trip). A NamedTuple:
    as immutable as a frozen dataclass and four times cheaper to build, once per request."""

    uid: str
    group: str
    kind: str
    operation: str
    namespace: str
    object: Any
    # UPDATE: the object before the change (None otherwise).
    old_object: Any = None
    # The request will not be persisted: nothing may be written because of it (Events).
    dry_run: bool = False


def parse_review(body: bytes) -> AdmissionRequest:
    """Parse an AdmissionReview v1 request body, or raise ReviewError saying precisely what is wrong."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReviewError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(review, dict):
        raise ReviewError("request body is not a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise ReviewError(
            f"expected apiVersion {API_VERSION} kind {KIND}, got "
            f"apiVersion {review.get('apiVersion')!r} kind {review.get('kind')!r}"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("AdmissionReview request has no uid")
    kind = request.get("kind")
    kind = kind if isinstance(kind, dict) else {}
    # Positional: the fields in their order (uid, group, kind, operation, namespace, object, old_object, dry_run).
    return AdmissionRequest(uid, _str(kind.get("group")), _str(kind.get("kind")), _str(request.get("operation")),
                            _str(request.get("namespace")), request.get("object"), request.get("oldObject"),
                            request.get("dryRun") is True)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _response(uid: str, allowed: bool, warnings: Sequence[str]) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if warnings:
        response["warnings"] = [w[:MAX_WARNING_LENGTH] for w in warnings]
    return response


def allowed(uid: str, warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Admit unchanged."""
    return _response(uid, True, warnings)


def json_patch(ops: Iterable[Mapping[str, Any]]) -> str | None:
    """The `patch` field for `ops`: base64 of the JSON Patch; None for no ops."""
    ops = list(ops)
    return base64.b64encode(orjson.dumps(ops)).decode("ascii") if ops else None


def patched(uid: str, patch: str | None, warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Admit with a JSON Patch (from `json_patch`); with none this is `allowed`."""
    response = _response(uid, True, warnings)
    if patch is not None:
        response["patchType"] = "JSONPatch"
        response["patch"] = patch
    return response


def denied(uid: str, message: str, code: int = 403, warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Refuse; `message` reaches the user as the admission error."""
    response = _response(uid, False, warnings)
    response["status"] = {"code": code, "message": message}
    return response


def encode(response: Mapping[str, Any]) -> bytes:
    """The AdmissionReview v1 response body."""
    return orjson.dumps({"apiVersion": API_VERSION, "kind": KIND, "response": response})
