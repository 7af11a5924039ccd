"""The serving TLS context: TLS 1.2 minimum, a changed pair served to new handshakes without a restart, and a
torn or mismatched pair never published (the old one keeps serving)."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from webhook.certs import generate as certs
from webhook.certs.tls import ReloadingTLS, TLSError


def write_pair(folder: Path, ca: certs.KeyPair, name: str) -> certs.KeyPair:
    leaf = certs.generate_leaf(ca, [name], ["127.0.0.1"])
    (folder / "tls.key").write_bytes(leaf.key_pem)
    (folder / "tls.crt").write_bytes(leaf.cert_pem)
    return leaf


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[ReloadingTLS, int, certs.KeyPair, list[float]]]:
    """A TLS server thread on 127.0.0.1 that completes handshakes with the ReloadingTLS context."""
    ca = certs.generate_ca()
    write_pair(tmp_path, ca, "first")
    expiries: list[float] = []
    tls = ReloadingTLS(tmp_path / "tls.crt", tmp_path / "tls.key", check_interval_s=0, on_load=expiries.append)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with tls.context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield tls, listener.getsockname()[1], ca, expiries
    stop.set()
    thread.join(5)
    listener.close()


def served_name(port: int, ca: certs.KeyPair) -> str:
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as conn:
        cert = x509.load_der_x509_certificate(conn.getpeercert(binary_form=True))
    return cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value


def test_renewed_pair_is_served_without_restart(served: tuple[ReloadingTLS, int, certs.KeyPair, list[float]],
                                                tmp_path: Path) -> None:
    _, port, ca, expiries = served
    assert served_name(port, ca) == "first"
    write_pair(tmp_path, ca, "second")
    assert served_name(port, ca) == "second"
    assert len(expiries) == 2


def test_mismatched_pair_is_not_published(served: tuple[ReloadingTLS, int, certs.KeyPair, list[float]],
                                          tmp_path: Path) -> None:
    tls, port, ca, _ = served
    other = certs.generate_leaf(ca, ["torn"], ["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(other.cert_pem)  # the key was not written yet: a torn update
    assert tls.maybe_reload() is False
    assert served_name(port, ca) == "first"
    (tmp_path / "tls.key").write_bytes(other.key_pem)
    assert served_name(port, ca) == "torn"


def test_tls_1_2_is_the_minimum(tmp_path: Path) -> None:
    write_pair(tmp_path, certs.generate_ca(), "x")
    assert ReloadingTLS(tmp_path / "tls.crt", tmp_path / "tls.key").context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_unreadable_pair_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TLSError, match="cannot read TLS certificate"):
        ReloadingTLS(tmp_path / "nope.crt", tmp_path / "nope.key")
    (tmp_path / "tls.crt").write_text("garbage")
    (tmp_path / "tls.key").write_text("garbage")
    with pytest.raises(TLSError, match="cannot load TLS certificate"):
        ReloadingTLS(tmp_path / "tls.crt", tmp_path / "tls.key")


def test_expired_certificate_is_not_valid(tmp_path: Path) -> None:
    """Readiness reports an expired serving certificate (ssl loads it without complaint)."""
    ca = certs.generate_ca()
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    leaf = certs.generate_leaf(ca, ["old"], [], days=1, now=long_ago)
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "tls.key").write_bytes(leaf.key_pem)
    assert ReloadingTLS(tmp_path / "tls.crt", tmp_path / "tls.key").valid() is False
    write_pair(tmp_path, ca, "fresh")
    assert ReloadingTLS(tmp_path / "tls.crt", tmp_path / "tls.key").valid() is True
