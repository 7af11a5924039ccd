"""Self-managed certificates in a cluster: the Secret, the Lease, the caBundle, and the local files.

Every replica runs `CertSync`. The one holding the Lease (`CertTarget.lease`) writes: it
creates or renews the Secret (`rotation.next_material`) and keeps the caBundle of every webhook in the
MutatingWebhookConfiguration, and in the ValidatingWebhookConfiguration of the same name when there is one,
equal to `rotation.bundle`, restoring it if something else changed it. Every
replica reads the Secret through the API and writes its serving certificate and key files, which
`tls.ReloadingTLS` picks up for new handshakes. Writes use resourceVersion, so two writers never clobber.
"""

from __future__ import annotations

import base64
import datetime
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from webhook.certs import rotation
from webhook.certs.generate import service_dns_names
from webhook.common import kubeapi
from webhook.common.kubeapi import ApiError, Client

log = logging.getLogger(__name__)

LEASE_DURATION_S = 60


@dataclass(frozen=True)
class CertTarget:
    """Where the certificate lives and whom it serves."""

    namespace: str
    secret: str
    webhook_config: str
    service: str
    ips: tuple[str, ...] = ()
    lease: str = "ray-ft-webhook-certs"

    @property
    def dns_names(self) -> list[str]:
        return service_dns_names(self.service, self.namespace)


def default_identity() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _time(value: datetime.datetime) -> str:
    """A Lease's MicroTime (RFC 3339 with microseconds, UTC)."""
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


def _bundles_of(config: Mapping[str, Any]) -> list[str | None]:
    """The caBundle of every webhook of a webhook configuration (base64, as the API has it)."""
    return [(w.get("clientConfig") or {}).get("caBundle") for w in config.get("webhooks") or []]


def _set_bundles(config: dict[str, Any], bundle: str) -> None:
    for webhook in config.get("webhooks") or []:
        webhook.setdefault("clientConfig", {})["caBundle"] = bundle


MUTATING = ("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations")
VALIDATING = ("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations")
LEASES = ("coordination.k8s.io/v1", "leases")
SECRETS = ("v1", "secrets")


class CertSync:
    """One replica's share of certificate management; `sync_once` is one full pass."""

    def __init__(self, client: Client, target: CertTarget, files: tuple[Path, Path] | None,
                 identity: str | None = None,
                 policy: rotation.Policy = rotation.DEFAULT_POLICY, interval_s: float = 30.0) -> None:
        self.client = client
        self.target, self.files, self.policy = target, files, policy
        self.identity = identity or default_identity()
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._written: bytes | None = None
        self._configured: bool | None = None

    # --- the leader's part -------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """Acquire or renew the Lease; True when this replica holds it."""
        t, now = self.target, _now()
        spec: dict[str, Any] = {"holderIdentity": self.identity, "leaseDurationSeconds": LEASE_DURATION_S,
                                "renewTime": _time(now), "acquireTime": _time(now)}
        try:
            lease = self.client.get(kubeapi.path(*LEASES, t.namespace, t.lease))
        except ApiError as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": LEASES[0], "kind": "Lease",
                    "metadata": {"name": t.lease, "namespace": t.namespace}, "spec": spec}
            try:
                self.client.create(kubeapi.path(*LEASES, t.namespace), body)
            except ApiError as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            return True
        current = lease.get("spec") or {}
        holder, renewed = current.get("holderIdentity"), _parse_time(current.get("renewTime"))
        duration = current.get("leaseDurationSeconds") or LEASE_DURATION_S
        expired = renewed is None or renewed + datetime.timedelta(seconds=duration) < now
        if holder != self.identity and not expired:
            return False
        if holder == self.identity and current.get("acquireTime"):
            spec["acquireTime"] = current["acquireTime"]
        lease["spec"] = spec
        try:  # conditional on the resourceVersion read: 409 when another replica wrote first
            self.client.replace(kubeapi.path(*LEASES, t.namespace, t.lease), lease)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _read_secret(self) -> tuple[dict[str, Any] | None, rotation.Material | None]:
        try:
            secret = self.client.get(kubeapi.path(*SECRETS, self.target.namespace, self.target.secret))
        except ApiError as exc:
            if exc.status == 404:
                return None, None
            raise
        return secret, rotation.from_secret_data(secret.get("data"))

    def _read_bundles(self) -> tuple[dict[str, Any], list[bytes]]:
        config = self.client.get(kubeapi.path(*MUTATING, name=self.target.webhook_config))
        return config, [base64.b64decode(b or "") for b in _bundles_of(config)]

    def reconcile(self, now: datetime.datetime | None = None) -> bool:
        """Create/renew the Secret and correct the caBundle; True when something was written."""
        now, t = now or _now(), self.target
        secret, current = self._read_secret()
        config, bundles = self._read_bundles()
        trusted = bundles[0] if bundles and all(b == bundles[0] for b in bundles) else b""
        wanted = rotation.next_material(current, trusted, t.dns_names, list(t.ips), now, self.policy)
        changed = False
        if wanted != current:
            data = rotation.to_secret_data(wanted)
            if secret is None:
                body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": t.secret, "namespace": t.namespace},
                        "type": "kubernetes.io/tls", "data": data}
                self.client.create(kubeapi.path(*SECRETS, t.namespace), body)
            else:
                secret["data"] = data
                self.client.replace(kubeapi.path(*SECRETS, t.namespace, t.secret), secret)
            log.info("certificate secret written",
                     extra={"secret": t.secret, "rotating_ca": wanted.next_ca is not None})
            changed = True
        desired = base64.b64encode(rotation.bundle(wanted, now)).decode("ascii")
        if any(b != desired for b in _bundles_of(config)):
            _set_bundles(config, desired)
            self.client.replace(kubeapi.path(*MUTATING, name=t.webhook_config), config)
            log.info("caBundle written", extra={"webhook_config": t.webhook_config})
            changed = True
        validating = self._read_validating()
        if validating is not None and any(b != desired for b in _bundles_of(validating)):
            _set_bundles(validating, desired)
            self.client.replace(kubeapi.path(*VALIDATING, name=t.webhook_config), validating)
            log.info("caBundle written", extra={"validating_webhook_config": t.webhook_config})
            changed = True
        return changed

    def _read_validating(self) -> dict[str, Any] | None:
        """The ValidatingWebhookConfiguration of `/validate`, or None when it is not installed (it is optional:
        the mutating webhook alone is the product; a 403 means RBAC from before it existed)."""
        try:
            return cast(dict[str, Any], self.client.get(kubeapi.path(*VALIDATING, name=self.target.webhook_config)))
        except ApiError as exc:
            if exc.status in (403, 404):
                return None
            raise

    # --- every replica's part ----------------------------------------------------------------------------

    def write_local_files(self) -> bool:
        """Write the Secret's serving pair to `files` (certificate, key) when it changed; True when written."""
        if self.files is None:
            return False
        _, material = self._read_secret()
        if material is None:
            return False
        blob = material.serving.cert_pem + material.serving.key_pem
        if blob == self._written:
            return False
        cert_path, key_path = self.files
        # Key first, then certificate, each by atomic rename; the reloader validates the pair before use.
        for path, data in ((key_path, material.serving.key_pem), (cert_path, material.serving.cert_pem)):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        self._written = blob
        return True

    def configured(self) -> bool:
        """Whether the MutatingWebhookConfiguration exists. Without it (not created yet, or uninstalled) there is
        nothing to serve for and no replica writes: no Lease, no Secret, no caBundle. So an uninstall that deleted
        the configuration, then the Secret and the Lease (`uninstall`, the chart's pre-delete hook) is not undone by
        a replica still running until its Deployment is deleted."""
        try:
            self.client.get(kubeapi.path(*MUTATING, name=self.target.webhook_config))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def sync_once(self) -> None:
        configured = self.configured()
        if configured != self._configured:
            self._configured = configured
            if not configured:
                log.info("webhook configuration not found: certificates are not managed until it exists",
                         extra={"webhook_config": self.target.webhook_config})
        if configured and self.is_leader():
            self.reconcile()
        self.write_local_files()

    def run(self) -> None:
        """Loop until `stop()`; errors are logged and retried next round."""
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:
                log.warning("certificate sync failed", extra={"reason": f"{type(exc).__name__}: {exc}"[:300]})
            self._stop.wait(self.interval_s)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="certsync", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def uninstall(client: Client, webhook_config: str, namespace: str | None, secret: str | None,
              lease: str = CertTarget.lease) -> list[str]:
    """Delete the webhook configurations first (so nothing can block pod creation), then the Secret and Lease.

    Returns what was deleted; absent objects are skipped.
    """
    steps = [("MutatingWebhookConfiguration", webhook_config, kubeapi.path(*MUTATING, name=webhook_config)),
             ("ValidatingWebhookConfiguration", webhook_config, kubeapi.path(*VALIDATING, name=webhook_config))]
    if namespace and secret:
        steps.append(("Secret", f"{namespace}/{secret}", kubeapi.path(*SECRETS, namespace, secret)))
        steps.append(("Lease", f"{namespace}/{lease}", kubeapi.path(*LEASES, namespace, lease)))
    deleted: list[str] = []
    for kind, name, url_path in steps:
        try:
            client.delete(url_path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            continue
        deleted.append(f"{kind} {name}")
    return deleted
