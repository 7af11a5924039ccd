"""The admin's settings: one frozen object, built once from flags and environment, passed whole."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

# Ray's own default for RAY_gcs_rpc_server_reconnect_timeout_s when nobody sets it.
RAY_DEFAULT_RECONNECT_TIMEOUT_S = 60
# What KubeRay puts on workers: long enough for a head pod to be rescheduled and restart GCS.
KUBERAY_WORKER_RECONNECT_TIMEOUT_S = 600


class LookupFailure(StrEnum):
    """What to answer when the owning RayCluster cannot be read."""

    DENY = "deny"
    ALLOW = "allow"


@dataclass(frozen=True)
class SecretRef:
    """A key of a Secret in the pod's namespace, parsed from `NAME` or `NAME/KEY`."""

    name: str
    key: str = "password"

    @classmethod
    def parse(cls, text: str, default_key: str = "password") -> SecretRef:
        """Parse `NAME` or `NAME/KEY`; raises ValueError with a message that quotes the bad value."""
        name, sep, key = text.strip().partition("/")
        if not name or (sep and not key) or not _is_dns_subdomain(name) or not _is_secret_key(key or "x"):
            raise ValueError(f"{quote(text)} is not NAME or NAME/KEY (a Secret name and an optional key)")
        return cls(name=name, key=key or default_key)

    def __str__(self) -> str:
        return f"{self.name}/{self.key}"


CA_KEY = "ca.crt"


@dataclass(frozen=True)
class CARef:
    """The CA bundle Redis's certificate is checked against: a key of a Secret or a ConfigMap in the pod's
    namespace."""

    kind: Literal["Secret", "ConfigMap"]
    name: str
    key: str = CA_KEY

    @classmethod
    def parse(cls, kind: Literal["Secret", "ConfigMap"], text: str) -> CARef:
        """Parse `NAME` or `NAME/KEY` (key default ca.crt); ValueError quoting the bad value."""
        try:
            ref = SecretRef.parse(text, default_key=CA_KEY)
        except ValueError:
            raise ValueError(f"{quote(text)} is not NAME or NAME/KEY (a {kind} name and an optional key)") from None
        return cls(kind=kind, name=ref.name, key=ref.key)

    def __str__(self) -> str:
        return f"{self.kind} {self.name}/{self.key}"


def parse_object_name(text: str) -> str:
    """A Kubernetes object name (DNS subdomain); ValueError quoting the bad value."""
    name = text.strip()
    if not name or not _is_dns_subdomain(name):
        raise ValueError(f"{quote(text)} is not an object name (lower-case letters, digits, '-' and '.')")
    return name


def parse_server_name(text: str) -> str:
    """A TLS server name: a host name, no spaces; ValueError quoting the bad value."""
    name = text.strip()
    if not name or len(name) > 253 or any(c.isspace() or c in "/:@" for c in name) or not name.isascii():
        raise ValueError(f"{quote(text)} is not a host name")
    return name


def _is_dns_subdomain(name: str) -> bool:
    if len(name) > 253:
        return False
    return all(
        part and part[0].isalnum() and part[-1].isalnum() and all(c.isalnum() or c == "-" for c in part)
        for part in name.split(".")
    ) and name == name.lower()


def _is_secret_key(key: str) -> bool:
    return len(key) <= 253 and all(c.isalnum() or c in "-._" for c in key)


# Ray reads its reconnect timeouts as int32; a larger number would not reach it intact.
MAX_POSITIVE_INT = 2**31 - 1


def quote(text: str, limit: int = 40) -> str:
    """`repr(text)`, cut to about `limit` characters: messages name a bad value without echoing megabytes."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def parse_positive_int(text: str) -> int:
    """1..MAX_POSITIVE_INT in ASCII digits (no sign, no spaces); ValueError otherwise.

    ASCII only: `str.isdigit()` also accepts full-width and Arabic-Indic digits (which int() reads but Ray does
    not) and superscripts (which int() refuses); the length check comes first so int() never meets more digits
    than it converts (4300).
    """
    if not (0 < len(text) <= 10 and text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_POSITIVE_INT:
        raise ValueError(f"{quote(text)} is not a positive integer")
    return int(text)


@dataclass(frozen=True)
class Settings:
    """What the admin configured for `serve` and `render`; the plan reads it, never mutates it."""

    default_redis_address: str | None = None
    default_redis_password_secret: SecretRef | None = None
    default_redis_ca: CARef | None = None
    default_redis_client_cert_secret: str | None = None
    default_redis_server_name: str | None = None
    worker_reconnect_timeout_s: int = KUBERAY_WORKER_RECONNECT_TIMEOUT_S
    head_reconnect_timeout_s: int | None = None
    on_lookup_failure: LookupFailure = LookupFailure.DENY
    # `/validate`: deny a RayCluster KubeRay would refuse, or one sharing another's GCS storage (default: warn).
    deny_kuberay_conflicts: bool = False
    deny_shared_storage_namespace: bool = False
