"""`Outcome`: every way one admission request can end, as the label `/metrics` counts it and logs carry."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The result of one admission request. The values are the `outcome` label of `admissions_total` (`/mutate`)
    and `validations_total` (`/validate`)."""

    PATCHED = "patched"  # FT settings were injected
    UNCHANGED = "unchanged"  # FT is on and the pod already had everything
    SKIPPED = "skipped"  # a Ray pod of a RayCluster with FT off, injection off, or another backend
    ALLOWED = "allowed"  # /validate: admitted, nothing to say
    WARNED = "warned"  # /validate: admitted with warnings
    IGNORED = "ignored"  # not a request the path handles (a CREATE of a Ray pod; a RayCluster, RayService, RayJob)
    DENIED = "denied"  # refused: one of our annotations cannot be parsed (or, /validate, what the admin made a denial)
    INVALID = "invalid"  # refused: a Ray pod whose shape cannot be read
    LOOKUP_FAILED = "lookup_failed"  # the owning RayCluster could not be read
    BAD_REQUEST = "bad_request"  # not a usable AdmissionReview: answered with an HTTP 4xx
    ERROR = "error"  # a bug: an exception escaped the handler (answered as a denial with code 500)
