"""The certificate state machine (pure): creation, serving renewal, the three-step CA rotation, drift."""

from __future__ import annotations

import datetime
from dataclasses import replace

from cryptography import x509

from webhook.certs.rotation import Policy, bundle, from_secret_data, next_material, to_secret_data

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)
DNS = ["svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local"]
DAY = datetime.timedelta(days=1)


def test_creates_when_missing() -> None:
    m = next_material(None, b"", DNS, ["127.0.0.1"], NOW)
    m.serving.certificate.verify_directly_issued_by(m.ca.certificate)
    assert bundle(m, NOW) == m.ca.cert_pem
    assert from_secret_data(to_secret_data(m)) == m


def test_stable_when_nothing_is_due() -> None:
    m = next_material(None, b"", DNS, [], NOW)
    assert next_material(m, bundle(m, NOW), DNS, [], NOW + 10 * DAY) is m


def test_serving_renewed_before_expiry_and_on_new_names() -> None:
    m = next_material(None, b"", DNS, [], NOW)
    later = NOW + 61 * DAY  # 90-day certificate, renewed 30 days ahead
    renewed = next_material(m, bundle(m, later), DNS, [], later)
    assert renewed.ca == m.ca and renewed.serving != m.serving
    renamed = next_material(m, bundle(m, NOW), [*DNS, "extra"], [], NOW)
    assert "extra" in renamed.serving.certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_ca_rotation_keeps_old_and_new_trusted_throughout() -> None:
    policy = Policy(ca_validity=400 * DAY, ca_renew_before=100 * DAY)
    m0 = next_material(None, b"", DNS, [], NOW, policy)
    t = NOW + 350 * DAY
    # Step 1: a next CA appears; the serving certificate stays.
    m1 = next_material(m0, bundle(m0, t), DNS, [], t, policy)
    assert m1.next_ca is not None and m1.ca == m0.ca
    assert bundle(m1, t) == m0.ca.cert_pem + m1.next_ca.cert_pem
    # Not promoted until the caBundle trusts it.
    assert next_material(m1, bundle(m0, t), DNS, [], t, policy).next_ca == m1.next_ca
    # Step 3: promoted, old CA kept as previous, serving re-issued by the new CA.
    m2 = next_material(m1, bundle(m1, t), DNS, [], t, policy)
    assert m2.ca == m1.next_ca and m2.previous_ca == m0.ca.cert_pem and m2.next_ca is None
    m2.serving.certificate.verify_directly_issued_by(m2.ca.certificate)
    assert bundle(m2, t) == m2.ca.cert_pem + m0.ca.cert_pem
    # The previous CA leaves the bundle once it has expired.
    after = NOW + 401 * DAY
    m3 = next_material(m2, bundle(m2, after), DNS, [], after, policy)
    assert m3.previous_ca is None and bundle(m3, after) == m2.ca.cert_pem


def test_garbage_secret_is_replaced() -> None:
    assert from_secret_data({"tls.crt": "bm90IGEgY2VydA==", "tls.key": "", "ca.crt": "", "ca.key": ""}) is None
    assert from_secret_data(None) is None


def test_serving_signed_by_a_same_named_foreign_ca_is_reissued() -> None:
    """Every CA we make has the same subject, so a serving certificate from another CA (a restored backup, a
    second installation) fails only the signature check; that must mean "re-issue", not a crash."""
    m = next_material(None, b"", DNS, [], NOW)
    foreign = next_material(None, b"", DNS, [], NOW)
    assert m.ca.certificate.subject == foreign.ca.certificate.subject
    mixed = replace(m, serving=foreign.serving)
    renewed = next_material(mixed, bundle(mixed, NOW), DNS, [], NOW)
    renewed.serving.certificate.verify_directly_issued_by(m.ca.certificate)


# -- CertSync without its webhook configuration ------------------------------------------------------------------

def test_no_configuration_no_writes() -> None:
    """A replica whose MutatingWebhookConfiguration is gone (uninstalled: the chart's pre-delete hook or `certs
    uninstall` deleted it, then the Secret and Lease) takes no Lease and writes nothing, so it brings none of them
    back; once the configuration exists it leads again. The real apiserver: tests/e2e/test_helm_e2e.py."""
    from webhook.certs.sync import CertSync, CertTarget
    from webhook.common.kubeapi import ApiError, Client

    calls: list[str] = []

    class Admission(Client):
        """The API client with its GET answered here: only the MutatingWebhookConfiguration may be read."""

        present = False

        def __init__(self) -> None:
            pass

        def get(self, path: str, query: object = None, timeout: object = None) -> dict:
            assert path == "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/cfg", path
            calls.append("read cfg")
            if not self.present:
                raise ApiError(404, "Not Found")
            return {}

    sync = CertSync(Admission(), CertTarget("ns", "tls", "cfg", "svc"), files=None, identity="a")
    sync.is_leader = lambda: calls.append("lease") or False  # type: ignore[method-assign]
    sync.sync_once()
    assert calls == ["read cfg"]
    Admission.present = True
    sync.sync_once()
    assert calls == ["read cfg", "read cfg", "lease"]
