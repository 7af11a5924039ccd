"""The serving TLS context: TLS 1.2 minimum, and a renewed certificate is served without a restart.

How: one base SSLContext whose SNI callback - which runs on every
ClientHello, with or without SNI - checks the certificate and key files at most every `check_interval_s`.
When their content changed, it loads them into a brand-new context, which validates the pair, and
hands that to the handshaking socket. A torn or mismatched pair is never published: the old one stays.
Mounted Secrets do not reliably emit file events, hence polling a digest.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

log = logging.getLogger(__name__)


class TLSError(ValueError):
    """The certificate or key cannot be loaded; the message names the files."""


def _digest(cert_path: Path, key_path: Path) -> bytes:
    return hashlib.sha256(cert_path.read_bytes() + b"\0" + key_path.read_bytes()).digest()


def _context(cert_path: Path, key_path: Path) -> tuple[ssl.SSLContext, float]:
    """A server context for the pair, and the certificate's expiry as a Unix time."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_path, key_path)
        expiry = x509.load_pem_x509_certificate(cert_path.read_bytes()).not_valid_after_utc.timestamp()
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TLSError(f"cannot load TLS certificate {cert_path} with key {key_path}: {exc}") from None
    return ctx, expiry


class ReloadingTLS:
    """Owns the serving context; `context` is what the server listens with."""

    def __init__(self, cert_path: Path, key_path: Path, check_interval_s: float = 10.0,
                 on_load: Callable[[float], None] | None = None) -> None:
        self._cert, self._key = Path(cert_path), Path(key_path)
        self._interval = check_interval_s
        self._on_load = on_load or (lambda expiry: None)
        self._lock = threading.Lock()
        try:
            digest = _digest(self._cert, self._key)
        except OSError as exc:
            raise TLSError(f"cannot read TLS certificate {self._cert} or key {self._key}: {exc.strerror}") from None
        self.context, self.expiry = _context(self._cert, self._key)
        self._current, self._digest_value, self._checked = self.context, digest, time.monotonic()
        self.context.sni_callback = self._on_hello
        self._on_load(self.expiry)

    def valid(self) -> bool:
        """True while the certificate being served has not expired (readiness: an expired one fails every call)."""
        return time.time() < self.expiry

    def maybe_reload(self) -> bool:
        """Load the files again if their content changed; True when a new pair was published."""
        with self._lock:
            self._checked = time.monotonic()
            try:
                digest = _digest(self._cert, self._key)
                if digest == self._digest_value:
                    return False
                ctx, expiry = _context(self._cert, self._key)
            except (OSError, TLSError) as exc:
                log.warning("TLS reload skipped, keeping the current certificate", extra={"reason": str(exc)})
                return False
            self._current, self._digest_value, self.expiry = ctx, digest, expiry
        log.info("TLS certificate reloaded", extra={"expiry": expiry})
        self._on_load(expiry)
        return True

    def _on_hello(self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                  ctx: ssl.SSLContext) -> None:
        # Raising here aborts the handshake, so every failure falls back to the current context.
        try:
            if time.monotonic() - self._checked >= self._interval:
                self.maybe_reload()
            if self._current is not ctx:
                sock.context = self._current
        except Exception:
            log.exception("TLS SNI callback failed; serving the current certificate")
