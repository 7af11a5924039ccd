"""Session fixtures of the KubeRay tier: the real KubeRay operator creates the pods, the webhook configures them.

One control plane with kube-controller-manager (its Job controller runs KubeRay's Redis cleanup Jobs), the
webhook as the real `serve` with the admin defaults of the e2e tier, registered from manifests/ like there
(the MutatingWebhookConfiguration, and the ValidatingWebhookConfiguration for every namespace),
and an observer webhook that records each Ray pod as KubeRay submitted it (hack/testkit/kuberay.py). Then,
per pinned KubeRay version (hack/kuberay/): that release's CRDs and RBAC, a fresh namespace with the release's
`ray-cluster.external-redis.yaml` (everything but the RayCluster), and a fresh operator process running as
its own least-privilege identity.

Outside CI a missing Go toolchain skips the tier with one line; with CI=true any failure to build or start
fails. Build times, wall time and peak memory are printed in the terminal summary.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from testkit import kube
from testkit import kuberay as harness
from testkit.ci import in_ci
from testkit.controlplane import ControlPlane, ControlPlaneError, install_webhook_identity
from testkit.kubectl import Kubectl
from testkit.kuberay import KubeRay, KubeRayError, Observer, OperatorProcess
from testkit.webhook import ADMIN_ARGS, Webhook

NO_GO = ("KubeRay tier skipped: no Go toolchain to build the control plane and the KubeRay operator "
         "(install Go, or run with CI=true)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) the forms a KubeRay version cannot express: gcsFaultToleranceOptions before 1.3,
    whose CRD prunes the field. A skipped test in CI would read as a test that did not run."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None) and item.callspec.params  # type: ignore[attr-defined]
        forms = getattr(item.module, "FORMS", {})
        if params and "form" in params and "kuberay" in params and forms[params["form"]].needs_options \
                and not harness.supports_options(params["kuberay"]):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@dataclass
class TierReport:
    """What the terminal summary prints."""

    wall_s: float = 0.0
    builds: dict[str, str] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    startup: dict[str, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


_REPORT = pytest.StashKey[TierReport]()


def tier_report(config: pytest.Config) -> TierReport:
    return config.stash.setdefault(_REPORT, TierReport())


@pytest.fixture(scope="session")
def kr_report(request: pytest.FixtureRequest) -> TierReport:
    return tier_report(request.config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    report = config.stash.get(_REPORT, None)
    if report is None or report.wall_s == 0:
        return
    terminalreporter.section("KubeRay tier")
    terminalreporter.line(f"wall {report.wall_s:.0f} s (control plane up to torn down, builds included)")
    for version, text in report.builds.items():
        terminalreporter.line(f"ray-operator {version}: {text}")
    if report.startup:
        terminalreporter.line("startup: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.startup.items()))
    if report.peak_rss:
        total = sum(report.peak_rss.values())
        rss = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in report.peak_rss.items())
        terminalreporter.line(f"peak RSS (VmHWM, MiB): {rss}; sum {total / 2**20:.0f}")
    for line in report.lines:
        terminalreporter.line(line)


# -- session: control plane, webhook, observer ------------------------------------------------------------------


@pytest.fixture(scope="session")
def kr_controlplane(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
                    kr_report: TierReport) -> Iterator[ControlPlane]:
    if not in_ci() and shutil.which("go") is None:
        pytest.skip(NO_GO)
    began = time.monotonic()
    cp = ControlPlane(with_controller_manager=True, base_dir=tmp_path_factory.mktemp("kuberay-controlplane"))
    try:
        cp.start()
    except ControlPlaneError as exc:
        pytest.fail(f"control plane did not start: {exc}")
    kr_report.startup["control plane"] = cp.startup_seconds
    yield cp
    if request.session.testsfailed:
        print(f"\n--- control plane logs ---\n{cp.logs(tail_lines=40)}")
    kr_report.peak_rss |= {name: harness.peak_rss_bytes(pid) for name, pid in cp.pids().items()}
    kr_report.peak_rss["pytest (observer, harness)"] = harness.peak_rss_bytes(os.getpid())
    cp.stop()
    kr_report.wall_s = time.monotonic() - began


@pytest.fixture(scope="session")
def kr_admin(kr_controlplane: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kr_controlplane.admin_kubeconfig))


@pytest.fixture(scope="session")
def kr_dynamic(kr_admin: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> DynamicClient:
    return kube.dynamic_client(kr_admin, tmp_path_factory.mktemp("discovery"))


@pytest.fixture(scope="session")
def kr_crds(kr_admin: client.ApiClient, kr_dynamic: DynamicClient) -> None:
    """The oldest pinned release's CRDs, so the webhook's RayCluster watch can sync before any operator runs."""
    try:
        harness.install_crds(kr_admin, kr_dynamic, harness.module(harness.pinned_versions()[0]))
    except KubeRayError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def kr_webhook(kr_controlplane: ControlPlane, kr_admin: client.ApiClient, kr_dynamic: DynamicClient, kr_crds: None,
               tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
               kr_report: TierReport) -> Iterator[Webhook]:
    """The real `serve`, as its own identity (manifests/base RBAC: it records Events, `--events` is on by default),
    registered from manifests/ (url + caBundle) for `/mutate` and `/validate`."""
    identity = install_webhook_identity(
        kr_controlplane, kr_admin, kr_dynamic, tmp_path_factory.mktemp("identity") / "webhook.kubeconfig"
    )
    hook = Webhook(tmp_path_factory.mktemp("webhook"), ["--kubeconfig", str(identity), *ADMIN_ARGS])
    hook.start()
    registrations = client.AdmissionregistrationV1Api(kr_admin)
    registrations.create_mutating_webhook_configuration(cast(Any, hook.configuration()))
    # `/validate` for the whole tier: every RayCluster, RayService and RayJob the tests and the operators create
    # or update goes through it, so a denial of KubeRay's own requests would fail the tier.
    registrations.create_validating_webhook_configuration(cast(Any, hook.validating_configuration()))
    began = time.monotonic()
    kube.wait_until_validating(kr_admin, lambda: hook.metric("ray_ft_webhook_validations_total"))
    kr_report.startup["/validate called"] = time.monotonic() - began
    yield hook
    if hook.process is not None:
        kr_report.peak_rss["webhook"] = harness.peak_rss_bytes(hook.process.proc.pid)
        if request.session.testsfailed:
            print(f"\n--- webhook log ---\n{hook.process.logs()[-20000:]}")
    hook.stop()


@pytest.fixture(scope="session")
def kr_kubectl(kr_controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """The real kubectl as the admin: apply's `Warning:` lines and `kubectl get events`."""
    return Kubectl(kr_controlplane.admin_kubeconfig, tmp_path_factory.mktemp("kubectl"))


@pytest.fixture(scope="session")
def kr_observer(kr_admin: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observer]:
    observer = Observer(tmp_path_factory.mktemp("observer"))
    client.AdmissionregistrationV1Api(kr_admin).create_mutating_webhook_configuration(
        cast(Any, observer.configuration())  # the client sends dicts as they are
    )
    yield observer
    observer.stop()


# -- per KubeRay version ----------------------------------------------------------------------------------------


@dataclass
class Stack:
    """One KubeRay release at work: its operator process and the namespace its clusters go to."""

    kuberay: KubeRay
    operator: OperatorProcess
    namespace: str
    api: client.ApiClient
    dyn: DynamicClient
    sample_raycluster: dict[str, Any]
    clusters: dict[str, str] = field(default_factory=dict)  # form -> RayCluster name

    @property
    def version(self) -> str:
        return self.kuberay.version

    def apply_cluster(self, form: str, rc: dict[str, Any]) -> dict[str, Any]:
        self.clusters[form] = rc["metadata"]["name"]
        return kube.apply(self.dyn, copy.deepcopy(rc), self.namespace)


@pytest.fixture(scope="session", params=harness.pinned_versions())
def kuberay(request: pytest.FixtureRequest, kr_controlplane: ControlPlane, kr_admin: client.ApiClient,
            kr_dynamic: DynamicClient, kr_webhook: Webhook, kr_observer: Observer,
            tmp_path_factory: pytest.TempPathFactory, kr_report: TierReport) -> Iterator[Stack]:
    version: str = request.param
    try:
        kr = harness.build(version)
    except KubeRayError as exc:
        pytest.fail(f"KubeRay {version}: {exc}")
    kr_report.builds[version] = (f"built in {kr.build_seconds:.0f} s" if kr.built_now
                                 else f"cached (hack/kuberay.sh took {kr.build_seconds:.2f} s)")

    workdir = tmp_path_factory.mktemp(f"kuberay-{version}")
    began = time.monotonic()
    harness.install_crds(kr_admin, kr_dynamic, kr)
    kr_report.startup[f"CRDs {version}"] = time.monotonic() - began
    kubeconfig = harness.install_operator_identity(
        kr_controlplane, kr_admin, kr_dynamic, kr, workdir / "operator.kubeconfig"
    )
    began = time.monotonic()
    harness.wait_until_called(kr_admin, kr_observer)
    kr_report.startup[f"webhooks called {version}"] = time.monotonic() - began

    namespace = f"kuberay-{version.replace('.', '-')}"
    kube.ensure_namespace(kr_admin, namespace)
    sample_rc, others = harness.split_sample(kr.sample())
    for obj in others:  # Redis Deployment, Service, ConfigMaps, the password Secret
        kube.apply(kr_dynamic, obj, namespace)
    client.CoreV1Api(kr_admin).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="redis-admin"), string_data={"pw": "admin-default"}
    ))

    operator = OperatorProcess(kr, kubeconfig, workdir)
    failed_before = request.session.testsfailed
    try:
        operator.start()
    except KubeRayError as exc:
        pytest.fail(f"KubeRay {version}: {exc}")
    kr_report.startup[f"ray-operator {version}"] = operator.startup_seconds
    yield Stack(kr, operator, namespace, kr_admin, kr_dynamic, sample_rc)

    if request.session.testsfailed > failed_before:
        print(f"\n--- ray-operator {version} log ({operator.log_path}) ---\n{operator.logs(80)}")
    operator.stop()
    kr_report.peak_rss[f"ray-operator {version}"] = operator.peak_rss_bytes
    # Its Redis cleanup Jobs never finish (no kubelet), so their finalizers would keep the namespace forever.
    harness.remove_finalizers(kr_admin, namespace)
    with contextlib.suppress(ApiException):
        client.CoreV1Api(kr_admin).delete_namespace(namespace)
