"""`Limits`: the bounds one server process puts on its clients (connections, deadlines, header and body sizes).

Enforced by `guard.GuardedProtocol` (connections, TLS, head, body deadline) and `app` (body sizes); set by the
`serve` flags of the same names. What happens beyond each is in the README's "Limits" table.
"""

from __future__ import annotations

from dataclasses import dataclass

# The apiserver caps request bodies at 3 MiB; twice that leaves room for any encoding overhead while
# bounding what a misbehaving client can make us buffer.
MAX_BODY_BYTES = 6 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The bounds of one server process; the defaults suit the kube-apiserver as the only real client."""

    # The apiserver keeps a handful of connections per replica; 256 leaves room for bursts of admissions.
    max_connections: int = 256
    tls_handshake_timeout_s: float = 5.0
    head_timeout_s: float = 10.0
    # The apiserver sends a body of at most 3 MiB at once; ten seconds is its own default webhook timeout.
    body_timeout_s: float = 10.0
    # Go's net/http allows 1 MiB of headers; an admission request carries a few hundred bytes in ~10 headers.
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    # All request bodies held at once (413 bounds one request at MAX_BODY_BYTES; this bounds them all -> 503).
    body_budget_bytes: int = 32 * 1024 * 1024
    # Keys of the memo of /mutate decisions (admission/decisions.py): ~700 distinct pods of KubeRay's size; 0: off.
    decision_memo_bytes: int = 2 * 1024 * 1024
