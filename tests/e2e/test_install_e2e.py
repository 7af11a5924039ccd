"""Installing for real on the local control plane: the overlays apply to a real apiserver, and the
self-managed certificate mode (Secret, Lease, caBundle, rotation without restart, uninstall) works with two
replicas of the real `serve`, each authenticated as the webhook's least-privilege identity."""

from __future__ import annotations

import base64
import copy
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from testkit import kube
from testkit.ci import crds, kubectl
from testkit.controlplane import ControlPlane
from testkit.kube import wait_for
from testkit.kuberay_pods import pod, quickstart_raycluster
from testkit.paths import MANIFESTS
from testkit.processes import start, stop_process
from testkit.webhook import WEBHOOK_NAMESPACE, free_port, manifest
from webhook.certs import rotation
from webhook.certs.sync import CertSync, CertTarget
from webhook.common.kube import api_client

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("active")]

SM_CONFIG = "ray-ft-webhook-sm"   # not the main e2e configuration, which other tests use
SECRET = "ray-ft-webhook-tls"
SM_LABEL = "e2e/self-managed"
# Pod creations (dry runs through both replicas) made before the rotation starts and after both replicas serve
# the new certificate; about 1 s each on 2 loaded cores.
AFTER_ROTATION = 50
LOCAL_ENV = {**os.environ, "NO_PROXY": "127.0.0.1"}


@pytest.fixture(scope="module")
def cert_manager(admin: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> None:
    """cert-manager's own Issuer and Certificate CRDs (hack/crds.sh, from its Go module): the
    overlay's objects are validated against cert-manager's schema, not a schema that accepts anything."""
    folder = crds("cert-manager")
    dyn = kube.dynamic_client(admin, tmp_path_factory.mktemp("cert-manager"))
    for plural in ("issuers", "certificates"):
        for crd in yaml.safe_load_all((folder / f"cert-manager.io_{plural}.yaml").read_text()):
            if crd:
                kube.apply(dyn, crd)
    kube.wait_established(admin, ["issuers.cert-manager.io", "certificates.cert-manager.io"])


def rendered_overlay(overlay: str) -> list[dict[str, Any]]:
    rendered = subprocess.run([kubectl(), "kustomize", str(MANIFESTS / "overlays" / overlay)],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    objs = [o for o in yaml.safe_load_all(rendered) if o]
    for obj in objs:  # the e2e tier's own configuration already holds this name (with a url clientConfig)
        if obj["kind"] == "MutatingWebhookConfiguration":
            obj["metadata"]["name"] = "ray-ft-webhook-dry-run"
    return objs


def server_dry_run(controlplane: ControlPlane, objs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --server-side --dry-run=server` (strict field validation, kubectl's default)."""
    return subprocess.run(
        [kubectl(), "--kubeconfig", str(controlplane.admin_kubeconfig), "apply", "--server-side",
         "--dry-run=server", "-f", "-"],
        input=yaml.safe_dump_all(objs), capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("overlay", ["cert-manager", "self-managed"])
def test_overlay_applies_to_a_real_apiserver(controlplane: ControlPlane, cert_manager: None, overlay: str) -> None:
    objs = rendered_overlay(overlay)
    out = server_dry_run(controlplane, objs)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == len(objs)
    assert all(line.endswith("serverside-applied (server dry run)") for line in out.stdout.splitlines()), out.stdout


# Mistakes a schema that accepts anything lets through; cert-manager's schema must refuse each (the negative
# control of the test above: it shows the real CRDs are the ones installed).
BROKEN = {
    "Issuer with a misspelt issuer type": ("Issuer", "/spec", {"selfsigned": {}}, "selfsigned"),
    "Certificate with a misspelt field": ("Certificate", "/spec/dnsName", "x.svc", "dnsName"),
    "Certificate with an unknown key algorithm": ("Certificate", "/spec/privateKey/algorithm", "DSA", "algorithm"),
    "Certificate with renewBefore a number": ("Certificate", "/spec/renewBefore", 720, "renewBefore"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_cert_manager_objects_are_refused(controlplane: ControlPlane, cert_manager: None, case: str) -> None:
    kind, path, value, named = BROKEN[case]
    objs = [o for o in rendered_overlay("cert-manager") if o["kind"] in ("Issuer", "Certificate")]
    (target,) = [o for o in objs if o["kind"] == kind]
    *parents, key = path.strip("/").split("/")
    node = target
    for part in parents:
        node = node[part]
    node[key] = value
    out = server_dry_run(controlplane, objs)
    assert out.returncode != 0 and named in out.stderr, f"{case}: accepted\n{out.stdout}{out.stderr}"


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    cert: Path

    def serving(self) -> bool:
        try:
            return self.cert.exists() and self.served_certificate() is not None
        except OSError:
            return False

    def served_certificate(self) -> x509.Certificate:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))

    def stop(self) -> int | None:
        return stop_process(self.proc)


@pytest.fixture()
def self_managed_rbac(admin: client.ApiClient) -> None:
    """overlays/self-managed/rbac.yaml, with the configuration name switched to this test's."""
    rbac = client.RbacAuthorizationV1Api(admin)
    for obj in manifest("overlays/self-managed/rbac.yaml"):
        obj = copy.deepcopy(obj)
        for rule in obj.get("rules", []):
            if rule.get("resourceNames") == ["ray-ft-webhook"]:
                rule["resourceNames"] = [SM_CONFIG]
        create = {"Role": rbac.create_namespaced_role, "RoleBinding": rbac.create_namespaced_role_binding}
        try:
            if obj["kind"] in create:
                create[obj["kind"]](WEBHOOK_NAMESPACE, obj)
            elif obj["kind"] == "ClusterRole":
                rbac.create_cluster_role(obj)
            else:
                rbac.create_cluster_role_binding(obj)
        except ApiException as exc:
            assert exc.status == 409


@pytest.fixture()
def replicas(controlplane: ControlPlane, admin: client.ApiClient, self_managed_rbac: None, webhook_identity: Path,
             tmp_path: Path) -> Iterator[list[Replica]]:
    ports = [free_port(), free_port()]
    hooks = [{
        "name": f"{name}.sm.ray-ft-webhook.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "failurePolicy": "Fail", "timeoutSeconds": 5, "reinvocationPolicy": "IfNeeded",
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        "objectSelector": {"matchLabels": {SM_LABEL: "on"}},
        "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate"},
    } for name, port in zip("ab", ports, strict=True)]
    admission = client.AdmissionregistrationV1Api(admin)
    admission.create_mutating_webhook_configuration({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": SM_CONFIG}, "webhooks": hooks})
    started: list[Replica] = []
    for name, port in zip(("replica-a", "replica-b"), ports, strict=True):
        folder = tmp_path / name
        folder.mkdir()
        log = folder / "webhook.log"
        cmd = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--kubeconfig", str(webhook_identity), "--tls-cert", str(folder / "tls.crt"),
               "--tls-key", str(folder / "tls.key"), "--cert-secret", SECRET, "--webhook-config", SM_CONFIG,
               "--service", "ray-ft-webhook", "--cert-namespace", WEBHOOK_NAMESPACE, "--cert-sync-interval-s", "2",
               "--cert-ips", "127.0.0.1"]
        proc = start(cmd, log=log, env={**os.environ, "POD_NAME": name, "NO_PROXY": "127.0.0.1"})
        started.append(Replica(name, port, proc, log, folder / "tls.crt"))
    try:
        for replica in started:
            wait_for(f"{replica.name} to serve", replica.serving, 60)
        yield started
    finally:
        for replica in started:
            replica.stop()
            print(f"\n--- {replica.name} ---\n{replica.log.read_text()[-5000:]}")
        for delete in (lambda: admission.delete_mutating_webhook_configuration(SM_CONFIG),
                       lambda: client.CoreV1Api(admin).delete_namespaced_secret(SECRET, WEBHOOK_NAMESPACE),
                       lambda: client.CoordinationV1Api(admin).delete_namespaced_lease("ray-ft-webhook-certs",
                                                                                       WEBHOOK_NAMESPACE)):
            try:
                delete()
            except ApiException as exc:
                assert exc.status == 404


def secret_material(admin: client.ApiClient) -> rotation.Material:
    data = client.CoreV1Api(admin).read_namespaced_secret(SECRET, WEBHOOK_NAMESPACE).data
    material = rotation.from_secret_data(data)
    assert material is not None
    return material


def bundles(admin: client.ApiClient) -> list[bytes]:
    config = client.AdmissionregistrationV1Api(admin).read_mutating_webhook_configuration(SM_CONFIG)
    return [base64.b64decode(w.client_config.ca_bundle or "") for w in config.webhooks]


def create_labelled_pod(admin: client.ApiClient, namespace: str, rc: dict[str, Any], suffix: str) -> None:
    body = pod(rc, "worker", suffix=suffix)
    body["metadata"]["labels"][SM_LABEL] = "on"
    body["metadata"].pop("generateName")
    client.CoreV1Api(admin).create_namespaced_pod(namespace, body, dry_run="All")


def test_self_managed_certificates(admin: client.ApiClient, namespace: str, replicas: list[Replica],
                                   webhook_identity: Path, controlplane: ControlPlane) -> None:
    custom = client.CustomObjectsApi(admin)
    rc = quickstart_raycluster()
    rc["metadata"] = {**rc["metadata"], "name": "sm", "namespace": namespace}
    del rc["metadata"]["uid"]
    rc = custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", rc)

    # One Secret, one writer: the Lease holder; the caBundle of both webhooks trusts the Secret's CA.
    material = secret_material(admin)
    lease = client.CoordinationV1Api(admin).read_namespaced_lease("ray-ft-webhook-certs", WEBHOOK_NAMESPACE)
    leader = lease.spec.holder_identity
    assert leader in ("replica-a", "replica-b")
    writers = [r.name for r in replicas if "certificate secret written" in r.log.read_text()]
    assert writers == [leader]
    wait_for("the caBundle", lambda: bundles(admin) == [material.ca.cert_pem] * 2)
    for replica in replicas:
        assert replica.served_certificate().fingerprint(hashes.SHA256()) == \
            material.serving.certificate.fingerprint(hashes.SHA256())
    # The apiserver trusts both replicas (failurePolicy Fail: an untrusted certificate would fail the create).
    create_labelled_pod(admin, namespace, rc, "first")

    # Drift: something else changes the caBundle; the leader restores it.
    admission = client.AdmissionregistrationV1Api(admin)
    config = admission.read_mutating_webhook_configuration(SM_CONFIG)
    config.webhooks[0].client_config.ca_bundle = base64.b64encode(b"garbage").decode()
    admission.replace_mutating_webhook_configuration(SM_CONFIG, config)
    wait_for("the caBundle to be restored", lambda: bundles(admin) == [material.ca.cert_pem] * 2, 30)

    # CA rotation while pods are being created: no admission fails, replicas serve the new pair unrestarted.
    # One thread creates pods one after another for the whole rotation (no cap that could end it early on a
    # fast machine), tallied by the rotation's phase; it ends AFTER_ROTATION creations after both replicas
    # serve the new certificate, a count (not a race) that 2 loaded cores reach in a few seconds.
    failures: list[str] = []
    phase = "old CA"
    tally: dict[str, int] = {}
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            current = phase
            try:
                create_labelled_pod(admin, namespace, rc, f"c{sum(tally.values())}")
            except ApiException as exc:
                failures.append(f"{current}: {json.loads(exc.body).get('message', str(exc))}")
            tally[current] = tally.get(current, 0) + 1

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        wait_for("pod creations with the old CA", lambda: tally.get("old CA", 0) >= AFTER_ROTATION)
        # The CA is declared due (a policy whose renewal window exceeds the CA's life): one reconcile stores the
        # next CA and extends the caBundle; the leader, on its default policy, completes the rotation.
        forcing = rotation.Policy(ca_renew_before=rotation.DEFAULT_POLICY.ca_validity * 2)
        target = CertTarget(namespace=WEBHOOK_NAMESPACE, secret=SECRET, webhook_config=SM_CONFIG,
                            service="ray-ft-webhook", ips=("127.0.0.1",))
        rotator = CertSync(api_client(controlplane.admin_kubeconfig), target, files=None, identity="test",
                           policy=forcing)
        wait_for("the next CA to be stored", lambda: rotator.reconcile() or secret_material(admin).next_ca, 30)
        phase = "next CA stored"

        def promoted() -> rotation.Material | None:
            current = secret_material(admin)
            return current if current.ca != material.ca and current.next_ca is None else None

        new = wait_for("the leader to complete the CA rotation", promoted, 30)
        phase = "new CA promoted"
        assert new.previous_ca == material.ca.cert_pem
        new.serving.certificate.verify_directly_issued_by(new.ca.certificate)
        wait_for("the caBundle to trust the new and the old CA",
                 lambda: bundles(admin) == [new.ca.cert_pem + material.ca.cert_pem] * 2)
        fingerprint = new.serving.certificate.fingerprint(hashes.SHA256())
        for replica in replicas:
            wait_for(f"{replica.name} to serve the new certificate",
                     lambda r=replica: r.served_certificate().fingerprint(hashes.SHA256()) == fingerprint, 30)
        phase = "new certificate served"
        wait_for(f"{AFTER_ROTATION} pod creations with the new certificate",
                 lambda: tally.get("new certificate served", 0) >= AFTER_ROTATION or failures, 60)
    finally:
        stop.set()
        thread.join(30)
    print(f"pods created during the rotation, by phase: {tally}; failed: {len(failures)}")
    assert failures == [], f"{len(failures)} of {sum(tally.values())} creations failed: {failures[:5]}"
    assert all(r.proc.poll() is None for r in replicas), "no replica restarted"
    with_expiry = [line for line in replicas[0].log.read_text().splitlines() if "TLS certificate reloaded" in line]
    assert with_expiry, "the replica reloaded its certificate"


def test_uninstall_removes_the_configuration_first(admin: client.ApiClient, namespace: str, replicas: list[Replica],
                                                   controlplane: ControlPlane) -> None:
    rc = client.CustomObjectsApi(admin).create_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayclusters",
        {**quickstart_raycluster(), "metadata": {"name": "un", "annotations": {"ray.io/ft-enabled": "true"}}})
    for replica in replicas:
        replica.stop()
    # With the webhook gone and failurePolicy Fail, its pods cannot be created...
    with pytest.raises(ApiException):
        create_labelled_pod(admin, namespace, rc, "blocked")
    out = subprocess.run([sys.executable, "-m", "webhook", "certs", "uninstall", "--kubeconfig",
                          str(controlplane.admin_kubeconfig), "--webhook-config", SM_CONFIG,
                          "--namespace", WEBHOOK_NAMESPACE, "--secret", SECRET],
                                 capture_output=True, text=True, timeout=60, env=LOCAL_ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"deleted MutatingWebhookConfiguration {SM_CONFIG}", f"deleted Secret {WEBHOOK_NAMESPACE}/{SECRET}",
        f"deleted Lease {WEBHOOK_NAMESPACE}/ray-ft-webhook-certs"]
    # ...and after uninstall nothing blocks them.
    wait_for("pod creation to be unblocked", lambda: create_labelled_pod(admin, namespace, rc, "free") is None, 30)


def test_certs_install_writes_secret_and_ca_bundle(admin: client.ApiClient, controlplane: ControlPlane) -> None:
    """`certs install` (certgen's create+patch) writes the Secret and caBundle an admin can serve from."""
    config_name = "ray-ft-webhook-installed"
    client.AdmissionregistrationV1Api(admin).create_mutating_webhook_configuration(yaml.safe_load(f"""
        apiVersion: admissionregistration.k8s.io/v1
        kind: MutatingWebhookConfiguration
        metadata: {{name: {config_name}}}
        webhooks:
          - name: x.ray-ft-webhook.io
            admissionReviewVersions: [v1]
            sideEffects: None
            objectSelector: {{matchLabels: {{never: match}}}}
            clientConfig: {{url: "https://127.0.0.1:1/mutate"}}
        """))
    try:
        for _ in range(2):  # the second run changes nothing
            out = subprocess.run([sys.executable, "-m", "webhook", "certs", "install", "--kubeconfig",
                                  str(controlplane.admin_kubeconfig), "--namespace", WEBHOOK_NAMESPACE,
                                  "--secret", "installed-tls", "--webhook-config", config_name, "--ip", "127.0.0.1"],
                                 capture_output=True, text=True, timeout=60, env=LOCAL_ENV)
            assert out.returncode == 0, out.stderr
        data = client.CoreV1Api(admin).read_namespaced_secret("installed-tls", WEBHOOK_NAMESPACE).data
        material = rotation.from_secret_data(data)
        assert material is not None
        bundle = client.AdmissionregistrationV1Api(admin).read_mutating_webhook_configuration(
            config_name).webhooks[0].client_config.ca_bundle
        assert base64.b64decode(bundle) == material.ca.cert_pem
        sans = material.serving.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "ray-ft-webhook.ray-ft-webhook.svc" in sans.get_values_for_type(x509.DNSName)
    finally:
        client.AdmissionregistrationV1Api(admin).delete_mutating_webhook_configuration(config_name)
        client.CoreV1Api(admin).delete_namespaced_secret("installed-tls", WEBHOOK_NAMESPACE)
