"""What the certificate Secret should hold next: a pure state machine over CA and serving certificates.

A CA rotation takes three steps so that the apiserver never meets a certificate it does not trust:
1. a new CA is generated and stored as `ca-next` (the serving certificate is unchanged);
2. the caBundle is extended to trust it (done by the caller, certsync);
3. once the bundle holds it, `ca-next` becomes `ca`, the old CA stays as `ca-previous` (still in the
   bundle until it expires), and a new serving certificate is issued by the new CA.
A serving certificate is re-issued when it nears expiry, when its names differ from what is wanted, or
when it was not issued by the current CA.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from webhook.certs.generate import KeyPair, generate_ca, generate_leaf

_KEYS = {"ca": ("ca.crt", "ca.key"), "serving": ("tls.crt", "tls.key"), "next_ca": ("ca-next.crt", "ca-next.key")}
PREVIOUS_CA = "ca-previous.crt"


@dataclass(frozen=True)
class Policy:
    """Lifetimes. Renewal starts `*_renew_before` ahead of expiry, long before anything can fail."""

    ca_validity: datetime.timedelta = datetime.timedelta(days=3650)
    ca_renew_before: datetime.timedelta = datetime.timedelta(days=365)
    serving_validity: datetime.timedelta = datetime.timedelta(days=90)
    serving_renew_before: datetime.timedelta = datetime.timedelta(days=30)


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Material:
    """The contents of the certificate Secret."""

    ca: KeyPair
    serving: KeyPair
    previous_ca: bytes | None = None
    next_ca: KeyPair | None = None


def from_secret_data(data: Mapping[str, str | bytes] | None) -> Material | None:
    """Read a Secret's base64 `data`; None when it does not hold a usable CA and serving pair."""
    if not data:
        return None
    raw = {k: base64.b64decode(v) for k, v in data.items()}
    pairs: dict[str, KeyPair | None] = {}
    for field, (cert, key) in _KEYS.items():
        pairs[field] = KeyPair(raw[cert], raw[key]) if cert in raw and key in raw else None
    if pairs["ca"] is None or pairs["serving"] is None:
        return None
    try:
        for pair in pairs.values():
            if pair is not None:
                _ = pair.certificate
    except ValueError:
        return None
    return Material(ca=pairs["ca"], serving=pairs["serving"], previous_ca=raw.get(PREVIOUS_CA),
                    next_ca=pairs["next_ca"])


def to_secret_data(m: Material) -> dict[str, str]:
    """The Secret's base64 `data` for `m` (a kubernetes.io/tls Secret with extra keys)."""
    out: dict[str, bytes] = {}
    for field, (cert, key) in _KEYS.items():
        pair = getattr(m, field)
        if pair is not None:
            out[cert], out[key] = pair.cert_pem, pair.key_pem
    if m.previous_ca is not None:
        out[PREVIOUS_CA] = m.previous_ca
    return {k: base64.b64encode(v).decode("ascii") for k, v in sorted(out.items())}


def bundle(m: Material, now: datetime.datetime) -> bytes:
    """The PEM CAs the apiserver must trust: current, next (during a rotation), previous (until it expires)."""
    pems = [m.ca.cert_pem]
    if m.next_ca is not None:
        pems.append(m.next_ca.cert_pem)
    if m.previous_ca is not None and x509.load_pem_x509_certificate(m.previous_ca).not_valid_after_utc > now:
        pems.append(m.previous_ca)
    return b"".join(pems)


def _expires_within(pair: KeyPair, now: datetime.datetime, window: datetime.timedelta) -> bool:
    return pair.certificate.not_valid_after_utc - now < window


def _names(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(sans.get_values_for_type(x509.DNSName)), {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def _issued_by(leaf: KeyPair, ca: KeyPair) -> bool:
    try:
        leaf.certificate.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _days(delta: datetime.timedelta) -> float:
    return delta.total_seconds() / 86400


def _new_ca(now: datetime.datetime, policy: Policy) -> KeyPair:
    return generate_ca(days=max(1, round(_days(policy.ca_validity))), now=now)


def _new_serving(ca: KeyPair, dns: Sequence[str], ips: Sequence[str], now: datetime.datetime,
                 policy: Policy) -> KeyPair:
    return generate_leaf(ca, list(dns), list(ips), days=max(1, round(_days(policy.serving_validity))), now=now)


def next_material(current: Material | None, trusted_bundle: bytes, dns: Sequence[str], ips: Sequence[str],
                  now: datetime.datetime, policy: Policy = DEFAULT_POLICY) -> Material:
    """The Secret contents to store next; `current` itself when nothing needs to change.

    `trusted_bundle` is the caBundle the webhook configuration holds now (step 3 waits for it).
    """
    if current is None or _expires_within(current.ca, now, datetime.timedelta(0)):
        ca = _new_ca(now, policy)
        return Material(ca=ca, serving=_new_serving(ca, dns, ips, now, policy))
    m = current
    if m.previous_ca is not None and x509.load_pem_x509_certificate(m.previous_ca).not_valid_after_utc <= now:
        m = replace(m, previous_ca=None)
    if m.next_ca is not None and m.next_ca.cert_pem in trusted_bundle:
        m = Material(ca=m.next_ca, serving=_new_serving(m.next_ca, dns, ips, now, policy),
                     previous_ca=m.ca.cert_pem)
    elif m.next_ca is None and _expires_within(m.ca, now, policy.ca_renew_before):
        m = replace(m, next_ca=_new_ca(now, policy))
    wanted = (set(dns), set(ips))
    serving_ok = (
        not _expires_within(m.serving, now, policy.serving_renew_before)
        and _names(m.serving.certificate) == wanted
        and _issued_by(m.serving, m.ca)
    )
    if not serving_ok:
        m = replace(m, serving=_new_serving(m.ca, dns, ips, now, policy))
    return m
