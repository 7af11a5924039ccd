"""Session fixtures of the end-to-end tier: a real etcd + kube-apiserver, the RayCluster CRD, the webhook
(the real `serve` in a subprocess, over TLS, as its own least-privilege identity bound by manifests/'s RBAC),
and the MutatingWebhookConfiguration from manifests/ with its clientConfig switched to url + caBundle.

Outside CI a missing Go toolchain skips the tier with one line; with CI=true, any failure to build or start
is a test failure. Logs of every process are printed when a test fails.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from testkit import kube
from testkit.ci import in_ci
from testkit.controlplane import RAYCLUSTER_CRD, ControlPlane, ControlPlaneError, install_webhook_identity
from testkit.webhook import ADMIN_ARGS, Webhook

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if not in_ci() and shutil.which("go") is None and not os.environ.get("RAY_FT_WEBHOOK_TESTBIN"):
        pytest.skip("tier skipped: no Go toolchain to build kube-apiserver/etcd (install Go, or run with CI=true)")
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
    client.ApiextensionsV1Api(admin).create_custom_resource_definition(RAYCLUSTER_CRD)
    kube.wait_established(admin, ["rayclusters.ray.io"])


@pytest.fixture(scope="session")
def webhook_identity(
    controlplane: ControlPlane, admin: client.ApiClient, tmp_path_factory: pytest.TempPathFactory, crd: None
) -> Path:
    """A kubeconfig for the webhook's own identity, bound by the RBAC objects from manifests/base."""
    folder = tmp_path_factory.mktemp("identity")
    dyn = kube.dynamic_client(admin, folder)
    return install_webhook_identity(controlplane, admin, dyn, folder / "webhook.kubeconfig")


@pytest.fixture(scope="session")
def webhook(
    webhook_identity: Path,
    admin: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Webhook]:
    hook = Webhook(tmp_path_factory.mktemp("webhook"), ["--kubeconfig", str(webhook_identity), *ADMIN_ARGS])
    hook.start()
    client.AdmissionregistrationV1Api(admin).create_mutating_webhook_configuration(hook.configuration())
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


@pytest.fixture(scope="session")
def active(admin: client.ApiClient, webhook: Webhook) -> None:
    """Wait until the apiserver actually calls the new webhook (registration takes a moment)."""
    kube.wait_until_called(admin)


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
