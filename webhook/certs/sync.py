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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.certs import rotation
from webhook.certs.generate import service_dns_names

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


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


class CertSync:
    """One replica's share of certificate management; `sync_once` is one full pass."""

    def __init__(self, api_client: Any, target: CertTarget, files: tuple[Path, Path] | None,
                 identity: str | None = None,
                 policy: rotation.Policy = rotation.DEFAULT_POLICY, interval_s: float = 30.0) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self.target, self.files, self.policy = target, files, policy
        self.identity = identity or default_identity()
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._written: bytes | None = None
        self._configured: bool | None = None

    # --- the leader's part -------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """Acquire or renew the Lease; True when this replica holds it."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        t, now = self.target, _now()
        spec = client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=LEASE_DURATION_S,
                                  renew_time=now, acquire_time=now)
        try:
            lease = self.coordination.read_namespaced_lease(t.lease, t.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=t.lease, namespace=t.namespace), spec=spec)
            try:
                self.coordination.create_namespaced_lease(t.namespace, body)
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            return True
        current = lease.spec or client.V1LeaseSpec()
        holder, renewed = current.holder_identity, current.renew_time
        duration = current.lease_duration_seconds or LEASE_DURATION_S
        expired = renewed is None or renewed + datetime.timedelta(seconds=duration) < now
        if holder != self.identity and not expired:
            return False
        if holder == self.identity:
            spec.acquire_time = current.acquire_time
        lease.spec = spec
        try:
            self.coordination.replace_namespaced_lease(t.lease, t.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _read_secret(self) -> tuple[Any | None, rotation.Material | None]:
        from kubernetes.client.exceptions import ApiException

        try:
            secret = self.core.read_namespaced_secret(self.target.secret, self.target.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise
        return secret, rotation.from_secret_data(secret.data)

    def _read_bundles(self) -> tuple[Any, list[bytes]]:
        config = self.admission.read_mutating_webhook_configuration(self.target.webhook_config)
        bundles = [base64.b64decode(w.client_config.ca_bundle or "") for w in config.webhooks or []]
        return config, bundles

    def reconcile(self, now: datetime.datetime | None = None) -> bool:
        """Create/renew the Secret and correct the caBundle; True when something was written."""
        from kubernetes import client

        now, t = now or _now(), self.target
        secret, current = self._read_secret()
        config, bundles = self._read_bundles()
        trusted = bundles[0] if bundles and all(b == bundles[0] for b in bundles) else b""
        wanted = rotation.next_material(current, trusted, t.dns_names, list(t.ips), now, self.policy)
        changed = False
        if wanted != current:
            data = rotation.to_secret_data(wanted)
            if secret is None:
                body = client.V1Secret(metadata=client.V1ObjectMeta(name=t.secret, namespace=t.namespace),
                                       type="kubernetes.io/tls", data=dict(data))
                self.core.create_namespaced_secret(t.namespace, body)
            else:
                secret.data = data
                self.core.replace_namespaced_secret(t.secret, t.namespace, secret)
            log.info("certificate secret written",
                     extra={"secret": t.secret, "rotating_ca": wanted.next_ca is not None})
            changed = True
        desired = base64.b64encode(rotation.bundle(wanted, now)).decode("ascii")
        if any(w.client_config.ca_bundle != desired for w in config.webhooks or []):
            for w in config.webhooks:
                w.client_config.ca_bundle = desired
            self.admission.replace_mutating_webhook_configuration(t.webhook_config, config)
            log.info("caBundle written", extra={"webhook_config": t.webhook_config})
            changed = True
        validating = self._read_validating()
        if validating is not None and any(w.client_config.ca_bundle != desired for w in validating.webhooks or []):
            for w in validating.webhooks:
                w.client_config.ca_bundle = desired
            self.admission.replace_validating_webhook_configuration(t.webhook_config, validating)
            log.info("caBundle written", extra={"validating_webhook_config": t.webhook_config})
            changed = True
        return changed

    def _read_validating(self) -> Any | None:
        """The ValidatingWebhookConfiguration of `/validate`, or None when it is not installed (it is optional:
        the mutating webhook alone is the product; a 403 means RBAC from before it existed)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.admission.read_validating_webhook_configuration(self.target.webhook_config)
        except ApiException as exc:
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
        from kubernetes.client.exceptions import ApiException

        try:
            self.admission.read_mutating_webhook_configuration(self.target.webhook_config)
        except ApiException as exc:
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


def uninstall(api_client: Any, webhook_config: str, namespace: str | None, secret: str | None,
              lease: str = CertTarget.lease) -> list[str]:
    """Delete the webhook configurations first (so nothing can block pod creation), then the Secret and Lease.

    Returns what was deleted; absent objects are skipped.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    deleted: list[str] = []
    admission = client.AdmissionregistrationV1Api(api_client)
    steps = [("MutatingWebhookConfiguration", webhook_config,
              lambda: admission.delete_mutating_webhook_configuration(webhook_config)),
             ("ValidatingWebhookConfiguration", webhook_config,
              lambda: admission.delete_validating_webhook_configuration(webhook_config))]
    if namespace and secret:
        steps.append(("Secret", f"{namespace}/{secret}",
                      lambda: client.CoreV1Api(api_client).delete_namespaced_secret(secret, namespace)))
        steps.append(("Lease", f"{namespace}/{lease}",
                      lambda: client.CoordinationV1Api(api_client).delete_namespaced_lease(lease, namespace)))
    for kind, name, delete in steps:
        try:
            delete()
        except ApiException as exc:
            if exc.status != 404:
                raise
            continue
        deleted.append(f"{kind} {name}")
    return deleted
