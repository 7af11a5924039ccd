"""Session fixtures of the end-to-end tier: a real etcd + kube-apiserver, the RayCluster CRD, the webhook
(the real `serve` in a subprocess, over TLS, as its own least-privilege identity bound by manifests/'s RBAC),
and the MutatingWebhookConfiguration from manifests/ with its clientConfig switched to url + caBundle.

Outside CI a missing Go toolchain skips the tier with one line; with CI=true, any failure to build or start
is a test failure. Logs of every process are printed when a test fails.
"""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.e2e.controlplane import RAYCLUSTER_CRD, WEBHOOK_USER, ControlPlane, ControlPlaneError
from tests.servers import WebhookProcess, make_certs, start_webhook
from tests.tools import in_ci
from webhook.certs import generate as certs

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
WEBHOOK_NAMESPACE = "ray-ft-webhook"
# The admin defaults the e2e webhook runs with (so "our annotations with admin defaults" can be shown);
# test_admission_e2e.admin_settings() is the same as Settings.
ADMIN_ARGS = ["--default-redis-address", "redis.ray-system:6379", "--default-redis-password-secret", "redis-admin/pw"]

def manifest(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / path).read_text()) if d]


def wait_for(what: str, check: Any, timeout: float = 30, interval: float = 0.2) -> Any:
    """Poll `check()` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiException as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if not in_ci() and shutil.which("go") is None and not os.environ.get("RAY_FT_WEBHOOK_TESTBIN"):
        pytest.skip("e2e tier skipped: no Go toolchain to build kube-apiserver/etcd (install Go, or run with CI=true)")
    cp = ControlPlane(base_dir=tmp_path_factory.mktemp("controlplane"))
    try:
        cp.start()
    except ControlPlaneError as exc:
        pytest.fail(f"control plane did not start: {exc}")
    yield cp
    cp.stop()


@pytest.fixture(scope="session")
def admin(controlplane: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(controlplane.admin_kubeconfig))


@pytest.fixture(scope="session")
def crd(admin: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(admin)
    ext.create_custom_resource_definition(RAYCLUSTER_CRD)

    def established() -> bool:
        conds = ext.read_custom_resource_definition("rayclusters.ray.io").status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conds)

    wait_for("the RayCluster CRD to be established", established)


@pytest.fixture(scope="session")
def webhook_identity(
    controlplane: ControlPlane, admin: client.ApiClient, tmp_path_factory: pytest.TempPathFactory, crd: None
) -> Path:
    """A kubeconfig for the webhook's own identity, bound by the RBAC objects from manifests/base."""
    core = client.CoreV1Api(admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=WEBHOOK_NAMESPACE)))
    rbac = client.RbacAuthorizationV1Api(admin)
    for obj in manifest("base/rbac.yaml"):
        if obj["kind"] == "ClusterRole":
            rbac.create_cluster_role(obj)
        else:
            rbac.create_cluster_role_binding(obj)
    return controlplane.write_kubeconfig(tmp_path_factory.mktemp("identity") / "webhook.kubeconfig", WEBHOOK_USER)


class Webhook:
    """The webhook process under test; restartable on the same port (the registered URL stays valid)."""

    def __init__(self, workdir: Path, args: list[str]) -> None:
        self.workdir, self.args = workdir, args
        self.process: WebhookProcess | None = None
        make_certs(workdir)
        self.port: int | None = None

    def start(self) -> WebhookProcess:
        self.process = start_webhook(self.workdir, self.args, port=self.port)
        self.port = self.process.port
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    @property
    def ca_pem(self) -> bytes:
        return (self.workdir / "ca.crt").read_bytes()

    def metric(self, name: str) -> float:
        assert self.process is not None
        with self.process.client() as c:
            text = c.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def webhook_configuration(url: str, ca_pem: bytes) -> dict[str, Any]:
    """manifests/base's MutatingWebhookConfiguration with clientConfig switched to url + caBundle."""
    (mwc,) = manifest("base/mutatingwebhookconfiguration.yaml")
    mwc = copy.deepcopy(mwc)
    for hook in mwc["webhooks"]:
        hook["clientConfig"] = {"url": url, "caBundle": certs.ca_bundle(ca_pem)}
    return mwc


@pytest.fixture(scope="session")
def webhook(
    webhook_identity: Path,
    admin: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Webhook]:
    hook = Webhook(tmp_path_factory.mktemp("webhook"), ["--kubeconfig", str(webhook_identity), *ADMIN_ARGS])
    hook.start()
    mwc = webhook_configuration(f"https://127.0.0.1:{hook.port}/mutate", hook.ca_pem)
    client.AdmissionregistrationV1Api(admin).create_mutating_webhook_configuration(mwc)
    yield hook
    if request.session.testsfailed and hook.process is not None:
        print(f"\n--- webhook log ---\n{hook.process.logs()[-20000:]}")
    hook.stop()


_counter = itertools.count()


@pytest.fixture()
def namespace(admin: client.ApiClient, webhook: Webhook) -> str:
    """A fresh namespace per test (namespaces never finish deleting without kube-controller-manager)."""
    name = f"e2e-{next(_counter)}-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def wait_until_called(api: client.ApiClient, also_called: Callable[[], int] | None = None,
                      timeout: float = 60) -> None:
    """A new MutatingWebhookConfiguration takes a moment: dry-run a Ray pod until ours mutates it (and, when
    given, the counter `also_called` of another webhook grows). The warm-up RayCluster is deleted again, so
    an operator started later never acts on it."""
    from tests.kuberay_objects import pod, raycluster

    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = "ray-ft-webhook-warmup"
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    except ApiException as exc:
        if exc.status != 409:
            raise
    rc = raycluster(name="warmup", namespace=namespace, annotations={"ray.io/ft-enabled": "true"})
    del rc["metadata"]["uid"]
    stored = custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", rc)
    try:
        rc["metadata"]["uid"] = stored["metadata"]["uid"]
        body = pod(rc, "worker")

        def called() -> bool:
            before = also_called() if also_called is not None else 0
            out = core.create_namespaced_pod(namespace, body, dry_run="All")
            mutated = "ray-ft-webhook.io/injected" in (out.metadata.annotations or {})
            return mutated and (also_called is None or also_called() > before)

        wait_for("the webhook to be called by the apiserver", called, timeout=timeout)
    finally:
        custom.delete_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", "warmup")


@pytest.fixture(scope="session")
def active(admin: client.ApiClient, webhook: Webhook) -> None:
    """Wait until the apiserver actually calls the new webhook (registration takes a moment)."""
    wait_until_called(admin)


@pytest.fixture(autouse=True)
def _print_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "controlplane" in request.fixturenames:
        cp: ControlPlane = request.getfixturevalue("controlplane")
        print(f"\n--- control plane logs ---\n{cp.logs(tail_lines=60)}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
