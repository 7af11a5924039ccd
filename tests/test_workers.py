"""`serve --workers 2`: the real command over real TLS, with settings from flags and the environment reaching
every worker, answers on many connections, and a clean stop of the parent and its workers.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import jsonpatch
import pytest
import yaml

from testkit.kuberay_pods import QUICKSTART_UID, pod, quickstart_raycluster, raycluster
from testkit.processes import children, cmdline, connection_owner, is_running, wait_until
from testkit.webhook import WebhookProcess, metric_sum, start_webhook
from webhook.cli import options as cli
from webhook.core.settings import LookupFailure, SecretRef

FT_CLUSTER = raycluster(name="ft-defaults", uid="1111-ft", annotations={"ray.io/ft-enabled": "true"})


def review(obj: dict, uid: str) -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
        "namespace": "default", "object": obj}}


def is_worker(pid: int) -> bool:
    return any("spawn_main" in arg for arg in cmdline(pid))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    folder = tmp_path_factory.mktemp("rayclusters")
    (folder / "quickstart.yaml").write_text(yaml.safe_dump(quickstart_raycluster()))
    (folder / "ft.json").write_text(json.dumps(FT_CLUSTER))
    # One setting as a flag, one from the environment: both must reach the workers.
    hook = start_webhook(tmp_path_factory.mktemp("tls"),
                         ["--rayclusters-from", str(folder), "--workers", "2", "--default-redis-address", "r:6379"],
                         env={"RAY_FT_WEBHOOK_DEFAULT_REDIS_PASSWORD_SECRET": "admin-secret/pw"})
    yield hook
    hook.stop()


def connect(server: WebhookProcess) -> tuple[http.client.HTTPSConnection, int]:
    """A new TLS connection to the server, and its client port (the handshake done: a worker has accepted it)."""
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10,
                                       context=ssl.create_default_context(cafile=str(server.ca)))
    conn.connect()
    assert conn.sock is not None
    return conn, conn.sock.getsockname()[1]


def owner(server: WebhookProcess, client_port: int, workers: list[int]) -> int:
    """The worker process holding the server end of the connection from `client_port`."""
    return wait_until(f"a worker to hold the connection from port {client_port}",
                      lambda: connection_owner(server.port, client_port, workers), 5, interval=0.05)


def get(conn: http.client.HTTPSConnection, path: str) -> str:
    conn.request("GET", path)
    answer = conn.getresponse()
    assert answer.status == 200
    return answer.read().decode()


def worker_admissions(server: WebhookProcess, workers: list[int]) -> dict[int, float]:
    """`ray_ft_webhook_admissions_total` of each worker's own registry, read over a connection that worker holds
    (the kernel picks the worker: new connections until one lands, at most 64 per worker)."""
    counts: dict[int, float] = {}
    for _ in range(64 * len(workers)):
        conn, port = connect(server)
        with contextlib.closing(conn):
            pid = owner(server, port, workers)
            if pid not in counts:
                counts[pid] = metric_sum(get(conn, "/metrics"), "ray_ft_webhook_admissions_total")
        if len(counts) == len(workers):
            return counts
    raise AssertionError(f"in {64 * len(workers)} connections only workers {sorted(counts)} of {workers} answered")


# Connections until each worker has answered this many admissions: at least ENOUGH connections, at most MOST.
EACH, ENOUGH, MOST = 3, 20, 200


def test_two_workers_serve_over_tls(server: WebhookProcess) -> None:
    """Both workers answer: which worker accepted each connection is read from /proc (the process holding the
    server socket), and each worker's own /metrics counts exactly the admissions it answered."""
    workers = [pid for pid in children(server.proc.pid) if is_worker(pid)]
    assert len(workers) == 2, server.logs()
    before = worker_admissions(server, workers)
    p = pod(quickstart_raycluster(), "head")
    served = dict.fromkeys(workers, 0)
    # A new connection each time: the kernel spreads them over the workers sharing the socket.
    for i in range(MOST):
        if i >= ENOUGH and min(served.values()) >= EACH:
            break
        conn, port = connect(server)
        with contextlib.closing(conn):
            served[owner(server, port, workers)] += 1
            conn.request("POST", "/mutate", body=json.dumps(review(p, f"uid-{i}")),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.status == 200
            resp = json.loads(r.read())["response"]
        assert resp["uid"] == f"uid-{i}" and resp["allowed"] is True
        patched = jsonpatch.apply_patch(p, json.loads(base64.b64decode(resp["patch"])))
        env = {e["name"]: e.get("value") for e in patched["spec"]["containers"][0]["env"]}
        assert env["RAY_external_storage_namespace"] == QUICKSTART_UID
    assert min(served.values()) >= EACH, \
        f"after {sum(served.values())} connections, admissions answered per worker pid: {served}\n{server.logs()}"
    print(f"admissions answered per worker pid: {served}")
    after = worker_admissions(server, workers)
    assert {pid: after[pid] - before[pid] for pid in workers} == served, f"{before} -> {after}, served {served}"


def test_settings_reach_the_workers(server: WebhookProcess) -> None:
    for i in range(6):
        with server.client() as client:
            resp = client.post("/mutate", json=review(pod(FT_CLUSTER, "head"), f"d-{i}")).json()["response"]
        added = {op["value"]["name"]: op["value"] for op in json.loads(base64.b64decode(resp["patch"]))
                 if op["path"] == "/spec/containers/0/env/-"}
        assert added["RAY_REDIS_ADDRESS"]["value"] == "r:6379"
        assert added["REDIS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "admin-secret", "key": "pw"}}


def test_health_and_metrics_per_worker(server: WebhookProcess) -> None:
    with server.client() as client:
        assert client.get("/readyz").text == "ok\n"
        assert "ray_ft_webhook_certificate_expiry_timestamp_seconds" in client.get("/metrics").text


def test_sigterm_stops_parent_and_workers(tmp_path: Path) -> None:
    folder = tmp_path / "rc"
    folder.mkdir()
    (folder / "quickstart.yaml").write_text(yaml.safe_dump(quickstart_raycluster()))
    hook = start_webhook(tmp_path / "tls", ["--rayclusters-from", str(folder), "--workers", "2"])
    workers = [pid for pid in children(hook.proc.pid) if is_worker(pid)]
    assert len(workers) == 2
    assert hook.stop() == 0, hook.logs()
    assert not [pid for pid in workers if is_running(pid) and is_worker(pid)]


def test_bad_folder_fails_before_forking(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not a folder"):
        start_webhook(tmp_path / "tls", ["--rayclusters-from", str(tmp_path / "missing"), "--workers", "2"],
                      ready_timeout=20)


def test_worker_environment_round_trips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What the parent writes is read back by a worker as the same options and settings."""
    for name in [n for n in list(os.environ) if n.startswith(cli.ENV_PREFIX)]:
        monkeypatch.delenv(name)
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--tls-cert", str(tmp_path / "c"), "--namespaces", "a,b", "--workers", "3",
                              "--lookup-timeout-s", "1.5", "--on-lookup-failure", "allow",
                              "--default-redis-password-secret", "s/k", "--head-reconnect-timeout-s", "90"])
    cli.resolve_env(parser, args)
    expected = (cli.serve_options(args, None), cli.settings_from(args))
    for name, value in cli.worker_environment(args).items():
        if value is not None:
            monkeypatch.setenv(name, value)
    opts, settings = cli.options_from_env()
    assert (opts, settings) == expected
    assert opts.namespaces == ("a", "b") and opts.workers == 3 and opts.lookup_timeout_s == 1.5
    assert settings.on_lookup_failure is LookupFailure.ALLOW
    assert settings.default_redis_password_secret == SecretRef("s", "k")
    assert settings.head_reconnect_timeout_s == 90


def test_reuse_port_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`--reuse-port` (or RAY_FT_WEBHOOK_REUSE_PORT=true) reaches the options; it refuses --workers > 1."""
    for name in [n for n in list(os.environ) if n.startswith(cli.ENV_PREFIX)]:
        monkeypatch.delenv(name)
    parser = cli.build_parser()
    for argv, env, expected in ((["serve"], None, False), (["serve", "--reuse-port"], None, True),
                                (["serve"], "true", True), (["serve", "--reuse-port", "false"], "true", False)):
        if env is not None:
            monkeypatch.setenv("RAY_FT_WEBHOOK_REUSE_PORT", env)
        args = parser.parse_args(argv)
        cli.resolve_env(parser, args)
        assert cli.serve_options(args, None).reuse_port is expected, (argv, env)
    args = parser.parse_args(["serve", "--reuse-port", "--workers", "2"])
    cli.resolve_env(parser, args)
    with pytest.raises(SystemExit) as exc:
        cli.serve_options(args, None)
    assert exc.value.code == 2 and "--reuse-port needs --workers 1" in capsys.readouterr().err
