"""Fixtures of the faults tier: a control plane of its own (its kube-apiserver gets restarted), the webhook's
identity, a namespace with FT RayClusters, continuous pod creation (`testkit.podload`) and the figures table.

FAULTS_SCALE (default 1) multiplies every phase's duration and FAULTS_RATE (default 20) sets pods per second;
`make faults` raises both. Each scenario appends a row to the table printed at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from kubernetes import client

from testkit import kube, podload
from testkit.controlplane import ControlPlane
from testkit.kuberay_pods import quickstart_raycluster, raycluster
from tests.e2e import conftest as e2e
from webhook.core.settings import SecretRef, Settings

pytestmark = pytest.mark.faults

SCALE = float(os.environ.get("FAULTS_SCALE", "1") or 1)
RATE = float(os.environ.get("FAULTS_RATE", "20") or 20)
NAMESPACE = "faults"
# The settings of tests/e2e and testkit.webhook.ADMIN_ARGS (the webhook runs with those flags).
ADMIN_SETTINGS = Settings(default_redis_address="redis.ray-system:6379",
                          default_redis_password_secret=SecretRef("redis-admin", "pw"))

FIGURES: list[dict[str, Any]] = []


def seconds(base: float) -> float:
    """A phase's duration at this run's scale."""
    return base * SCALE


# The control plane, its admin client, the RayCluster CRD and the webhook's identity: e2e's fixtures, bound
# here again, so this tier gets a control plane of its own (its kube-apiserver gets restarted).
controlplane = e2e.controlplane
admin = e2e.admin
crd = e2e.crd
webhook_identity = e2e.webhook_identity


def create_raycluster(admin: client.ApiClient, rc: dict[str, Any]) -> dict[str, Any]:
    """Store `rc` (its uid dropped) and return it as stored."""
    body = {**rc, "metadata": {k: v for k, v in rc["metadata"].items() if k != "uid"}}
    return client.CustomObjectsApi(admin).create_namespaced_custom_object(  # type: ignore[no-any-return]
        "ray.io", "v1", body["metadata"]["namespace"], "rayclusters", body)


def ft_clusters(namespace: str, prefix: str) -> list[dict[str, Any]]:
    """Four FT RayClusters in the forms the webhook reads: the quick start, gcsFaultToleranceOptions,
    annotations over admin defaults, and admin defaults alone."""
    return [
        quickstart_raycluster(name=f"{prefix}-quickstart", namespace=namespace),
        raycluster(name=f"{prefix}-options", namespace=namespace,
                   options={"redisAddress": "redis.options:6379",
                            "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "redis-opt", "key": "pw"}}}}),
        raycluster(name=f"{prefix}-annotated", namespace=namespace,
                   annotations={"ray.io/ft-enabled": "true", "ray-ft-webhook.io/redis-address": "redis.ann:6379",
                                "ray-ft-webhook.io/worker-reconnect-timeout-s": "900"}),
        raycluster(name=f"{prefix}-defaults", namespace=namespace, annotations={"ray.io/ft-enabled": "true"}),
    ]


@pytest.fixture(scope="session")
def clusters(admin: client.ApiClient, crd: None) -> list[dict[str, Any]]:
    """The tier's FT RayClusters, stored before any webhook starts (so every webhook has them cached)."""
    kube.ensure_namespace(admin, NAMESPACE)
    return [create_raycluster(admin, rc) for rc in ft_clusters(NAMESPACE, "cached")]


def targets(stored: Sequence[dict[str, Any]], settings: Settings = ADMIN_SETTINGS, **kwargs: Any
            ) -> list[podload.Target]:
    """A head and a worker pod of each stored RayCluster."""
    return [podload.target(rc, role, settings, **kwargs) for rc in stored for role in ("head", "worker")]


@pytest.fixture(scope="session")
def make_load(controlplane: ControlPlane) -> Callable[..., podload.PodLoad]:
    """PodLoad against this control plane as the admin, at the run's rate unless given."""
    assert controlplane.workdir is not None
    cert = (controlplane.workdir / "admin.crt", controlplane.workdir / "admin.key")

    def make(load_targets: Sequence[podload.Target], **kwargs: Any) -> podload.PodLoad:
        kwargs.setdefault("rate", RATE)
        return podload.PodLoad(controlplane.url, controlplane.ca_pem, cert, load_targets, **kwargs)

    return make


@pytest.fixture(scope="session")
def figures() -> list[dict[str, Any]]:
    return FIGURES


def _table(rows: list[dict[str, Any]]) -> list[str]:
    head = ["scenario", "attempted", "failed", "wrong", "not admitted (why)", "recovery"]
    body = [[r["scenario"], str(r["attempted"]), str(r["failed"]), str(r["wrong"]), r.get("other", ""),
             r.get("recovery", "")] for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section(f"faults: figures (FAULTS_SCALE={SCALE:g}, FAULTS_RATE={RATE:g} pods/s)")
    for line in _table(FIGURES):
        terminalreporter.write_line(line)
    for row in FIGURES:
        if row.get("notes"):
            terminalreporter.write_line(f"- {row['scenario']}: {row['notes']}")


# The control plane's logs printed when a test fails: the same autouse fixture and report hook as e2e's.
_print_logs_on_failure = e2e._print_logs_on_failure
pytest_runtest_makereport = e2e.pytest_runtest_makereport
