"""What Ray accepts as `RAY_REDIS_ADDRESS`, so the webhook never hands its GCS an address it dies on.

Ray 2.60 (`ray._private.node` and `services.get_address`) splits the value on commas and reads each entry as
`host:port`, `redis://host:port` or `rediss://host:port` (TLS). Any other scheme raises ValueError, and an entry
without a port or with credentials (`user:pass@host:port`) fails to parse: the head's `ray start` exits and GCS
never starts. Credentials go in REDIS_USERNAME/REDIS_PASSWORD, never in the address.
"""

from __future__ import annotations

SCHEMES = ("redis", "rediss")


def _entry_problem(entry: str) -> str | None:
    scheme, sep, rest = entry.partition("://")
    if not sep:
        scheme, rest = "", entry
    elif scheme not in SCHEMES:
        return f"has scheme {scheme!r}, not redis or rediss"
    if "@" in rest:
        return "has credentials; Ray reads them only as username and password"
    host, colon, port = rest.rpartition(":")
    if not colon or not host or host in ("[", "[]"):
        return "has no host:port"
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return "has no valid port"
    return None


def address_problem(address: str) -> str | None:
    """Why Ray cannot start GCS with `address`, or None when every comma-separated entry is usable."""
    entries = [entry.strip() for entry in address.split(",")]
    if not any(entries):
        return "is empty"
    for entry in entries:
        problem = _entry_problem(entry)
        if problem is not None:
            return problem
    return None


def redacted(address: str) -> str:
    """`address` for a message: when it holds credentials, everything up to its last `@` becomes `***`.

    A password written into the address (`redis://user:pass@host:6379`) must not reach a warning or a denial,
    which kubectl shows and the audit log keeps. Up to the last `@`, not per entry: a password may hold `,` or `@`.
    """
    return "***@" + address.rpartition("@")[2] if "@" in address else address


def parse_redis_address(text: str) -> str:
    """`text` stripped, or ValueError naming what Ray would fail on (for flags and our annotation)."""
    address = text.strip()
    problem = address_problem(address)
    if problem is not None:
        raise ValueError(f"{redacted(text)!r}: {problem}")
    return address


def canonical_redis_address(address: str, namespace: str) -> str:
    """`address` as the Redis it reaches from a pod in `namespace`, to tell whether two clusters use one Redis:
    each entry without its scheme, lower-cased; a host without a dot is a Service of the pod's own namespace
    (the cluster DNS search path), so `redis:6379` in team-a and in team-b are two Redises, while
    `redis.team-a.svc.cluster.local` and `redis.team-a.svc` are written out alike."""
    entries = []
    for entry in address.split(","):
        rest = entry.strip().lower().partition("://")[2] or entry.strip().lower()
        host, _, port = rest.rpartition(":")
        if "." not in host and not host.startswith("["):
            host = f"{host}.{namespace}.svc"
        host = host.removesuffix(".cluster.local")
        entries.append(f"{host}:{port}")
    return ",".join(sorted(entries))
