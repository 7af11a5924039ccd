"""Faults through the real kube-apiserver, under continuous pod creation (`testkit.podload`, FAULTS_RATE pods/s
of KubeRay head and worker pods, each answer checked against the injection `render` computes):

1. kube-apiserver restarted: cached RayClusters are served from the warm cache the moment it is back; the watch
   relists and resumes; a RayCluster created after the restart is served (fallback GET or watch);
2. rolling restart of two `serve --reuse-port` processes on one address: 0 failed admissions, an in-flight
   request finishes, an idle keep-alive connection does not hold the exit;
3. CA rotation (self-managed certificates, two replicas) under load: 0 failed admissions;
4. the webhook SIGKILLed: with failurePolicy Fail pods fail only while it is down; with Ignore they are admitted
   untouched while it is down, and counted (pods' annotations, the apiserver's fail-open metric).

The guarantees are asserted; the timings go to the figures table (`make faults`, docs/reliability.md).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from testkit import kube, podload, processes
from testkit.controlplane import ControlPlane
from testkit.podload import FAILED, OK, UNAVAILABLE, UNTOUCHED, WRONG, PodLoad, Target, count, first
from testkit.webhook import (
    ADMIN_ARGS,
    PODS_HOOK,
    Webhook,
    WebhookProcess,
    free_port,
    start_webhook,
    webhook_configuration,
)
from tests.e2e.test_install_e2e import (  # the self-managed replicas of the e2e tier, reused as they are
    SECRET,
    SM_LABEL,
    Replica,
    bundles,
    replicas,
    secret_material,
    self_managed_rbac,
)
from tests.faults.conftest import (
    NAMESPACE,
    RATE,
    create_raycluster,
    ft_clusters,
    seconds,
    targets,
)
from webhook.certs import rotation
from webhook.certs.sync import CertSync, CertTarget
from webhook.common.kube import api_client
from webhook.core.settings import Settings

pytestmark = pytest.mark.faults
__all__ = ["replicas", "self_managed_rbac"]  # fixtures

CONFIG = "ray-ft-webhook-faults"
GRACEFUL_SHUTDOWN_S = 10  # webhook.cli.serve.GRACEFUL_SHUTDOWN_S


@contextlib.contextmanager
def registered(admin: client.ApiClient, url: str, ca_pem: bytes, failure_policy: str = "Fail") -> Iterator[None]:
    """manifests/base's pod webhook pointed at the webhook at `url` (its /mutate), until the apiserver calls it."""
    mwc = webhook_configuration(url, ca_pem, only=PODS_HOOK)
    mwc["metadata"]["name"] = CONFIG
    for hook in mwc["webhooks"]:
        hook["failurePolicy"] = failure_policy
    api = client.AdmissionregistrationV1Api(admin)
    api.create_mutating_webhook_configuration(mwc)
    try:
        kube.wait_until_called(admin)
        yield
    finally:
        api.delete_mutating_webhook_configuration(CONFIG)


def metric(hook: WebhookProcess, name: str) -> float:
    with hook.client() as c:
        text = c.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def review(want: Target) -> bytes:
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "faults", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
        "namespace": want.namespace, "object": orjson.loads(want.body)}})


def answer_kind(status: int, body: bytes, want: Target) -> str:
    """OK when an AdmissionReview answer patches the pod into exactly what `render` gives."""
    if status != 200:
        return FAILED
    response = orjson.loads(body)["response"]
    if not response.get("allowed") or "patch" not in response:
        return FAILED
    pod = jsonpatch.apply_patch(orjson.loads(want.body), orjson.loads(base64.b64decode(response["patch"])))
    return OK if podload.ft_view(pod) == want.expected else WRONG


def log_lines(hook: WebhookProcess, text: str) -> int:
    return sum(text in line for line in hook.logs().splitlines())


def summary(results: list[podload.Result]) -> dict[str, Any]:
    kinds = count(results)
    return {"attempted": len(results), "failed": kinds[FAILED], "wrong": kinds[WRONG], "kinds": kinds}


def details(results: list[podload.Result], *kinds: str, limit: int = 5) -> str:
    picked = [r for r in results if r.kind in kinds][:limit]
    return "\n".join(f"  t={r.start:.2f} {r.kind} {r.target}: {r.detail}" for r in picked)


# -- 1. kube-apiserver restarted -------------------------------------------------------------------------------


def test_apiserver_restart(controlplane: ControlPlane, admin: client.ApiClient, webhook_identity: Path,
                           clusters: list[dict[str, Any]], make_load: Callable[..., PodLoad],
                           tmp_path: Path, figures: list[dict[str, Any]]) -> None:
    hook = Webhook(tmp_path / "webhook", ["--kubeconfig", str(webhook_identity), *ADMIN_ARGS])
    proc = hook.start()
    try:
        cached = targets(clusters)
        processes.wait_until("the webhook to cache the RayClusters",
                             lambda: metric(proc, "ray_ft_webhook_rayclusters_cached") >= len(clusters), 30)
        with registered(admin, proc.url, hook.ca_pem):
            lists_before = log_lines(proc, "rayclusters listed")
            load = make_load(cached)
            with load:
                time.sleep(seconds(3))
                t_stop = time.monotonic()
                stop_code = controlplane.stop_apiserver()
                t_down = time.monotonic()
                # The API is gone: the webhook still answers from its cache (nothing can call it meanwhile, so
                # it is asked directly, over its own TLS, as the apiserver would).
                direct: list[str] = []
                with proc.client() as c:
                    deadline = time.monotonic() + seconds(4)
                    while time.monotonic() < deadline:
                        want = cached[len(direct) % len(cached)]
                        r = c.post("/mutate", content=review(want), headers={"Content-Type": "application/json"})
                        direct.append(answer_kind(r.status_code, r.content, want))
                        time.sleep(0.05)
                t_start = time.monotonic()
                ready_s = controlplane.start_apiserver()
                t_up = time.monotonic()
                # A RayCluster made after the restart: its pods are served by the fallback GET or the watch.
                (late,) = [create_raycluster(admin, rc) for rc in ft_clusters(NAMESPACE, "late")[:1]]
                late_load = make_load(targets([late]), rate=max(2.0, RATE / 4))
                with late_load:
                    time.sleep(seconds(5))
            results = load.results
            late_results = late_load.results
            # The watch: a relist after the restart, then live events (a RayCluster no pod asked for is cached).
            relisted = processes.wait_until(
                "the webhook's RayCluster watch to relist after the restart",
                lambda: log_lines(proc, "rayclusters listed") > lists_before and time.monotonic(), 60)
            create_raycluster(admin, ft_clusters(NAMESPACE, "watched")[1])
            processes.wait_until("the watch to deliver a new RayCluster",
                                 lambda: metric(proc, "ray_ft_webhook_rayclusters_cached") >= len(clusters) + 2, 30)
            fallback = metric(proc, 'ray_ft_webhook_raycluster_fallback_gets_total{result="found"}')
    finally:
        log = proc.logs()
        hook.stop()

    every = results + late_results
    after = [r for r in results if r.start >= t_up]
    assert not [r for r in every if r.kind == WRONG], details(every, WRONG)
    assert after and all(r.kind == OK for r in after), \
        f"cached RayClusters after the apiserver was back:\n{details(after, FAILED, UNAVAILABLE, UNTOUCHED)}"
    assert late_results and all(r.kind == OK for r in late_results), details(late_results, FAILED, UNAVAILABLE)
    assert direct and all(k == OK for k in direct), f"direct admissions during the outage: {direct}"
    assert "raycluster watch failed" in log or "raycluster list failed" in log, "the watch saw the outage"
    during = count(r for r in results if t_down <= r.start < t_start)
    assert during[OK] == 0 and during[UNAVAILABLE] > 0, f"creates while the apiserver was down: {dict(during)}"
    first_ok = first(results, OK, t_up)
    assert first_ok is not None
    s = summary(every)
    figures.append({
        "scenario": "1. kube-apiserver restarted", **s,
        "other": f"{s['kinds'][UNAVAILABLE]} (apiserver down)",
        "recovery": f"first admission {first_ok.end - t_up:.2f} s after the apiserver was ready",
        "notes": f"apiserver down {t_start - t_down:.1f} s (its stop took {t_down - t_stop:.1f} s, "
                 f"{'SIGKILLed after 10 s of SIGTERM' if stop_code == -9 else 'SIGTERM'}), back (ready) in "
                 f"{ready_s:.1f} s; {during.total()} creates sent while it was down, none admitted; "
                 f"{len(after)} creates for cached RayClusters after it, all right; the webhook answered "
                 f"{len(direct)} direct reviews from its cache during the outage, all right; "
                 f"a RayCluster created after the restart: {len(late_results)} creates, all right "
                 f"({fallback:.0f} fallback GET(s) found it); the watch had relisted by the first check "
                 f"({relisted - t_up:.1f} s after the apiserver was ready) and delivered a new RayCluster live",
    })


# -- 2. rolling restart of two processes on one address --------------------------------------------------------


def _connect(port: int, ca: Path) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def _connection_to(pid: int, others: list[int], port: int, ca: Path) -> ssl.SSLSocket:
    """A TLS connection accepted by process `pid` (SO_REUSEPORT spreads connections by a hash of the ports)."""
    for _ in range(64):
        sock = _connect(port, ca)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200" in sock.recv(4096).split(b"\r\n", 1)[0]
        if processes.connection_owner(port, sock.getsockname()[1], [pid, *others]) == pid:
            return sock
        sock.close()
    raise AssertionError(f"no connection landed on process {pid} in 64 tries")


def _read_all(sock: ssl.SSLSocket, timeout: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection, and whether it did within `timeout`."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    except OSError:  # closed without TLS close_notify, or reset: closed all the same
        pass
    return data, True


def test_rolling_restart_reuse_port(admin: client.ApiClient, webhook_identity: Path,
                                    clusters: list[dict[str, Any]], make_load: Callable[..., PodLoad],
                                    tmp_path: Path, figures: list[dict[str, Any]]) -> None:
    port = free_port()
    workdir = tmp_path / "webhooks"
    args = ["--kubeconfig", str(webhook_identity), *ADMIN_ARGS, "--reuse-port"]
    live = {name: start_webhook(workdir, args, port=port, name=f"{name}1") for name in ("a", "b")}
    ca = live["a"].ca
    cached = targets(clusters)
    notes: list[str] = []
    try:
        with registered(admin, f"https://127.0.0.1:{port}", ca.read_bytes()):
            load = make_load(cached)
            with load:
                time.sleep(seconds(2))
                # A: our clients close when the server does (as Go's transport does): the exit is quick.
                # B: the idle client never answers the server's TLS close_notify: the grace period bounds the exit.
                for name, silent in (("a", False), ("b", True)):
                    old = live[name]
                    others = [p.proc.pid for n, p in live.items() if n != name]
                    idle = _connection_to(old.proc.pid, others, port, ca)
                    busy = _connection_to(old.proc.pid, others, port, ca)
                    want = cached[0]
                    body = review(want)
                    busy.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:len(body) // 2])
                    t_term = time.monotonic()
                    old.proc.send_signal(signal.SIGTERM)
                    idle_closed = _read_all(idle, GRACEFUL_SHUTDOWN_S + 5)[1]
                    t_idle = time.monotonic() - t_term
                    if not silent:
                        idle.close()
                    time.sleep(0.5)
                    busy.sendall(body[len(body) // 2:])
                    head, _, rest = _read_all(busy, 10)[0].partition(b"\r\n\r\n")
                    busy.close()
                    status = int(head.split(b" ", 2)[1]) if head else 0
                    in_flight = answer_kind(status, rest, want) if status == 200 else f"HTTP {status}"
                    assert in_flight == OK, f"the request in flight at SIGTERM: {in_flight} {head[:200]!r}"
                    # A bounded wait, not a speed claim: an idle connection holding the exit would keep the
                    # process up for the keep-alive timeout (KEEP_ALIVE_S, 120 s), far past this bound.
                    try:
                        code = old.proc.wait(GRACEFUL_SHUTDOWN_S + 10)
                    except subprocess.TimeoutExpired:
                        raise AssertionError(
                            f"{name} still running {GRACEFUL_SHUTDOWN_S + 10} s after SIGTERM: something held the "
                            f"exit past the {GRACEFUL_SHUTDOWN_S} s grace period:\n{old.logs()[-3000:]}") from None
                    exit_s = time.monotonic() - t_term
                    idle.close()
                    assert code == 0, f"{name} exited with {code}:\n{old.logs()[-3000:]}"
                    assert idle_closed, "the server closed the idle keep-alive connection"
                    t_new = time.monotonic()
                    live[name] = start_webhook(workdir, args, port=port, name=f"{name}2")
                    client = "an idle client that never closes" if silent else "its clients closing on close"
                    notes.append(f"{name} ({client}): server closed the idle keep-alive connection {t_idle:.2f} s "
                                 f"after SIGTERM, answered the request in flight (body finished 0.5 s later) right, "
                                 f"exited {exit_s:.2f} s after SIGTERM; new {name} ready in "
                                 f"{time.monotonic() - t_new:.1f} s")
                    time.sleep(seconds(2))
            results = load.results
    finally:
        for hook in live.values():
            hook.stop()
    s = summary(results)
    assert s["kinds"][OK] == len(results) > 0, \
        f"{dict(s['kinds'])}\n{details(results, FAILED, WRONG, UNAVAILABLE, UNTOUCHED)}"
    worst = max(r.end - r.start for r in results)
    figures.append({"scenario": "2. rolling restart, 2 processes, SO_REUSEPORT", **s, "other": "0",
                    "recovery": "none needed (never unavailable)",
                    "notes": "; ".join(notes) + f"; slowest pod create {worst * 1000:.0f} ms"})


# -- 3. certificate rotation under load ------------------------------------------------------------------------


def test_ca_rotation_under_load(admin: client.ApiClient, replicas: list[Replica], clusters: list[dict[str, Any]],
                                make_load: Callable[..., PodLoad], figures: list[dict[str, Any]],
                                controlplane: ControlPlane) -> None:
    """The e2e tier's CA rotation (tests/e2e/test_install_e2e.py), bounded, under PodLoad: the two self-managed
    replicas (no admin defaults) answer every pod of the rotation, each checked."""
    material = secret_material(admin)
    processes.wait_until("the caBundle", lambda: bundles(admin) == [material.ca.cert_pem] * 2, 30,
                         ignore=(ApiException,))
    sm = targets(clusters[:2], Settings(), labels={SM_LABEL: "on"})
    load = make_load(sm)
    with load:
        time.sleep(seconds(2))
        t_rotate = time.monotonic()
        forcing = rotation.Policy(ca_renew_before=rotation.DEFAULT_POLICY.ca_validity * 2)
        target = CertTarget(namespace="ray-ft-webhook", secret=SECRET, webhook_config="ray-ft-webhook-sm",
                            service="ray-ft-webhook", ips=("127.0.0.1",))
        rotator = CertSync(api_client(controlplane.admin_kubeconfig), target, files=None, identity="faults",
                           policy=forcing)
        kube.wait_for("the next CA to be stored", lambda: rotator.reconcile() or secret_material(admin).next_ca, 30)

        def promoted() -> rotation.Material | None:
            current = secret_material(admin)
            return current if current.ca != material.ca and current.next_ca is None else None

        new = kube.wait_for("the leader to complete the CA rotation", promoted, 60)
        fingerprint = new.serving.certificate.fingerprint(hashes.SHA256())
        for replica in replicas:
            kube.wait_for(f"{replica.name} to serve the new certificate",
                          lambda r=replica: r.served_certificate().fingerprint(hashes.SHA256()) == fingerprint, 60)
        rotated_s = time.monotonic() - t_rotate
        time.sleep(seconds(2))
    results = load.results
    s = summary(results)
    assert s["kinds"][OK] == len(results) > 0, \
        f"{dict(s['kinds'])}\n{details(results, FAILED, WRONG, UNAVAILABLE, UNTOUCHED)}"
    figures.append({"scenario": "3. CA rotation, 2 self-managed replicas", **s, "other": "0",
                    "recovery": "none needed (never unavailable)",
                    "notes": f"rotation (next CA stored, promoted, both replicas serving the new certificate) took "
                             f"{rotated_s:.1f} s under load"})


# -- 4. the webhook SIGKILLed ----------------------------------------------------------------------------------


def _kill_and_restart(hook: Webhook, load: PodLoad) -> tuple[float, float, float]:
    """Warm up, SIGKILL the webhook, leave it down, start it again on its port; (t_kill, t_restart, t_ready)."""
    time.sleep(seconds(2))
    assert hook.process is not None
    os.kill(hook.process.proc.pid, signal.SIGKILL)
    hook.process.proc.wait(10)
    t_kill = time.monotonic()
    time.sleep(seconds(3))
    t_restart = time.monotonic()
    hook.start()
    t_ready = time.monotonic()
    time.sleep(seconds(3))
    return t_kill, t_restart, t_ready


def fail_open_count(cp: ControlPlane) -> float:
    """The apiserver's apiserver_admission_webhook_fail_open_count for our webhook (absent until the first)."""
    assert cp.workdir is not None
    tls = ssl.create_default_context(cadata=cp.ca_pem.decode())
    tls.load_cert_chain(cp.workdir / "admin.crt", cp.workdir / "admin.key")
    text = httpx.get(f"{cp.url}/metrics", verify=tls, trust_env=False, timeout=10).text
    lines = [line for line in text.splitlines()
             if line.startswith("apiserver_admission_webhook_fail_open_count{") and "pods.ray-ft-webhook.io" in line]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_sigkill_failure_policy_fail(admin: client.ApiClient, webhook_identity: Path,
                                     clusters: list[dict[str, Any]], make_load: Callable[..., PodLoad],
                                     tmp_path: Path, figures: list[dict[str, Any]]) -> None:
    hook = Webhook(tmp_path / "webhook", ["--kubeconfig", str(webhook_identity), *ADMIN_ARGS])
    proc = hook.start()
    try:
        with registered(admin, proc.url, hook.ca_pem, "Fail"):
            load = make_load(targets(clusters))
            with load:
                t_kill, t_restart, t_ready = _kill_and_restart(hook, load)
            results = load.results
    finally:
        hook.stop()
    s = summary(results)
    failed = [r for r in results if r.kind == FAILED]
    assert s["wrong"] == 0 and s["kinds"][UNTOUCHED] == 0, details(results, WRONG, UNTOUCHED)
    assert failed, "with failurePolicy Fail, pods were refused while the webhook was down"
    assert all(r.end >= t_kill - 0.5 and r.start <= t_ready for r in failed), \
        f"failures outside the outage [{t_kill:.2f}, {t_ready:.2f}]:\n{details(failed, FAILED, limit=20)}"
    after = [r for r in results if r.start > t_ready]
    assert after and all(r.kind == OK for r in after), details(after, FAILED, UNAVAILABLE)
    first_ok = first(results, OK, t_restart)
    # How soon is a figure for docs/reliability.md, not a test: the restart's readiness is bounded by start_webhook.
    assert first_ok is not None, "no pod creation succeeded after the restart"
    s["kinds"].pop(OK, None)
    figures.append({"scenario": "4a. webhook SIGKILLed, failurePolicy Fail", **s,
                    "other": f"{len(failed)} refused while down",
                    "recovery": f"{first_ok.end - t_restart:.2f} s from restart to first admission",
                    "notes": f"down {t_restart - t_kill:.1f} s; new process ready (/readyz) "
                             f"{t_ready - t_restart:.2f} s after start; every refusal was sent while it was down "
                             f"or starting, every create after it was ready admitted right"})


def test_sigkill_failure_policy_ignore(controlplane: ControlPlane, admin: client.ApiClient, webhook_identity: Path,
                                       clusters: list[dict[str, Any]], make_load: Callable[..., PodLoad],
                                       tmp_path: Path, figures: list[dict[str, Any]]) -> None:
    run = "ignore"
    core = client.CoreV1Api(admin)
    hook = Webhook(tmp_path / "webhook", ["--kubeconfig", str(webhook_identity), *ADMIN_ARGS])
    proc = hook.start()
    try:
        with registered(admin, proc.url, hook.ca_pem, "Ignore"):
            fail_open_before = fail_open_count(controlplane)
            load = make_load(targets(clusters, store=True, labels={"faults/run": run}), store=True,
                             rate=min(RATE, 10.0))
            with load:
                t_kill, t_restart, t_ready = _kill_and_restart(hook, load)
            results = load.results
            fail_open_after = fail_open_count(controlplane)
    finally:
        hook.stop()
    s = summary(results)
    untouched = [r for r in results if r.kind == UNTOUCHED]
    assert s["failed"] == 0 and s["wrong"] == 0, details(results, FAILED, WRONG)
    assert untouched, "with failurePolicy Ignore, pods were admitted untouched while the webhook was down"
    assert all(r.end >= t_kill - 0.5 and r.start <= t_ready for r in untouched), details(untouched, UNTOUCHED)
    after = [r for r in results if r.start > t_ready]
    assert after and all(r.kind == OK for r in after), details(after, FAILED, UNAVAILABLE, UNTOUCHED)
    # Counted from what was stored: the pods without the webhook's annotation are exactly the untouched ones.
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"faults/run={run}").items
    stored_untouched = sum("ray-ft-webhook.io/injected" not in (p.metadata.annotations or {}) for p in pods)
    assert len(pods) == len(results) and stored_untouched == len(untouched)
    fail_open = fail_open_after - fail_open_before
    assert fail_open == len(untouched), f"apiserver fail-open count {fail_open} vs {len(untouched)} untouched"
    core.delete_collection_namespaced_pod(NAMESPACE, label_selector=f"faults/run={run}", grace_period_seconds=0)
    first_ok = first(results, OK, t_restart)
    assert first_ok is not None
    figures.append({"scenario": "4b. webhook SIGKILLed, failurePolicy Ignore", **s,
                    "other": f"0 ({len(untouched)} admitted untouched while down)",
                    "recovery": f"{first_ok.end - t_restart:.2f} s from restart to first injected pod",
                    "notes": f"down {t_restart - t_kill:.1f} s; {len(pods)} pods stored, {stored_untouched} "
                             f"without `ray-ft-webhook.io/injected`; apiserver_admission_webhook_fail_open_count "
                             f"grew by {fail_open:.0f}"})

