"""Certificates: make a CA and ECDSA P-256 serving (or client) certificates signed by it, and write a serving
set (ca.crt, tls.crt, tls.key) to a folder. Key material lives only in memory until written.

Go's TLS client (the kube-apiserver) ignores the CN, so every name the webhook is reached by must be a SAN:
the Service's short and qualified DNS names and, for local use, IP addresses such as 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Issued certificates start this far in the past so a peer with a slightly slow clock accepts them.
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the kube-apiserver may use to reach a Service."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _validity(days: int, now: datetime.datetime | None) -> tuple[datetime.datetime, datetime.datetime]:
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    start = (now or datetime.datetime.now(datetime.UTC)) - _BACKDATE
    return start, start + _BACKDATE + datetime.timedelta(days=days)


def generate_ca(common_name: str = "ray-ft-webhook-ca", days: int = 3650,
                now: datetime.datetime | None = None) -> KeyPair:
    """A self-signed CA allowed to sign leaf certificates only (path length 0)."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(days, now)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def generate_leaf(ca: KeyPair, dns_names: list[str], ips: list[str], days: int = 365,
                  client: bool = False, common_name: str | None = None,
                  organizations: list[str] | None = None,
                  now: datetime.datetime | None = None) -> KeyPair:
    """A certificate signed by `ca`: a server certificate for `dns_names`/`ips`, or a client one.

    Client certificates carry the user in the CN and groups in O, as the kube-apiserver reads them.
    """
    if not client and not (dns_names or ips):
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    ca_cert = ca.certificate
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an ECDSA key")
    key = _new_key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name or (dns_names or ips)[0])]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations or []]
    not_before, not_after = _validity(days, now)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def ca_bundle(*cas: bytes) -> str:
    """The MutatingWebhookConfiguration `caBundle`: base64 of the concatenated PEM CA certificates."""
    return base64.b64encode(b"".join(cas)).decode("ascii")


def write_serving_set(out: Path, ca: KeyPair, serving: KeyPair) -> None:
    """Write `ca.crt`, `tls.crt` and `tls.key` (0600) into `out`, the names a kubernetes.io/tls Secret uses."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.crt").write_bytes(ca.cert_pem)
    (out / "tls.crt").write_bytes(serving.cert_pem)
    key_path = out / "tls.key"
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)
    key_path.write_bytes(serving.key_pem)
