"""The harness's promise, checked without Ray: a rendered container's env reaches Ray verbatim, and only
node IP, ports and addresses are changed. Fast and unmarked, so it runs with the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit import kuberay_pods

from . import fixtures as fx
from .container import Container, HarnessError, project_volumes, resolve_env
from .node import NodePorts, adapt_command, adapt_env

SECRETS = {(fx.SECRET, fx.SECRET_KEY): "pw-from-secret"}
HEAD_PORTS = NodePorts(flags={"--node-manager-port": 20001, "--metrics-export-port": 20006, "--port": 20007})
WORKER_PORTS = NodePorts(flags={"--node-manager-port": 20011, "--metrics-export-port": 20016})
ADDRESS_VARS = {"RAY_REDIS_ADDRESS", "RAY_ADDRESS", "RAY_PORT", "RAY_IP", "FQ_RAY_IP"}


def _head() -> Container:
    cluster = fx.raycluster("uid-1")
    return Container.from_pod(fx.hand_rendered(fx.head_pod(cluster), fx.expected_head_additions("uid-1")))


def _worker() -> Container:
    cluster = fx.raycluster("uid-1")
    return Container.from_pod(fx.hand_rendered(fx.worker_pod(cluster), fx.EXPECTED_WORKER_ADDITIONS))


def test_env_is_verbatim_except_addresses() -> None:
    resolved = resolve_env(_head(), SECRETS)
    adapted = adapt_env(resolved, "head", head_gcs_port=20007, redis_address="127.0.0.1:20000")
    assert {k: v for k, v in adapted.items() if k not in ADDRESS_VARS} == {
        k: v for k, v in resolved.items() if k not in ADDRESS_VARS
    }
    assert adapted["RAY_external_storage_namespace"] == "uid-1"
    assert adapted["REDIS_PASSWORD"] == "pw-from-secret"
    assert adapted["RAY_REDIS_ADDRESS"] == "127.0.0.1:20000"
    assert adapted["RAY_ADDRESS"] == "127.0.0.1:20007"
    assert adapted["RAY_CLOUD_INSTANCE_ID"].startswith(fx.NAME)  # fieldRef metadata.name
    assert adapted["RAY_NODE_TYPE_NAME"] == "headgroup"  # fieldRef metadata.labels['ray.io/group']


def test_worker_env_keeps_timeout_and_points_at_the_head() -> None:
    adapted = adapt_env(resolve_env(_worker(), SECRETS), "worker", head_gcs_port=20007, redis_address=None)
    assert adapted["RAY_gcs_rpc_server_reconnect_timeout_s"] == "600"
    assert adapted["RAY_ADDRESS"] == "127.0.0.1:20007"
    assert adapted["RAY_IP"] == adapted["FQ_RAY_IP"] == "127.0.0.1"


def test_redis_address_keeps_scheme_and_each_entry() -> None:
    adapted = adapt_env({"RAY_REDIS_ADDRESS": "rediss://a:6380,b:6379"}, "head", 1, "127.0.0.1:20000")
    assert adapted["RAY_REDIS_ADDRESS"] == "rediss://127.0.0.1:20000,127.0.0.1:20000"


def test_missing_secret_is_an_error() -> None:
    with pytest.raises(HarnessError, match="redis-password-secret"):
        resolve_env(_head(), {})


def test_head_command_keeps_password_flag_and_replaces_ports() -> None:
    line = adapt_command(_head().command, "head", HEAD_PORTS, head_gcs_port=20007, num_cpus=0)
    assert line.startswith("ulimit -n 65536; ray start --head --node-ip-address=127.0.0.1 ")
    assert "--redis-password=$REDIS_PASSWORD" in line  # bash expands it, as in the pod
    assert "--dashboard-host=0.0.0.0" in line and "--block" in line
    assert "--metrics-export-port=20006" in line and "8080" not in line
    assert "--port=20007" in line and "--num-cpus=0" in line
    assert "--dashboard-agent-listen-port=52365" not in line  # a port flag: removed, not ours to keep


def test_worker_command_points_at_the_head_gcs() -> None:
    line = adapt_command(_worker().command, "worker", WORKER_PORTS, head_gcs_port=20007, num_cpus=1)
    assert "--address=127.0.0.1:20007" in line and kuberay_pods.head_service_fqdn(fx.raycluster()) not in line
    assert "--num-cpus=1" in line and "--min-worker-port=15000" in line


def test_without_strips_ft_env_and_flags() -> None:
    stripped = _head().without(fx.FT_ENV, fx.FT_FLAGS)
    assert not {e["name"] for e in stripped.env} & set(fx.FT_ENV)
    assert "--redis-password" not in stripped.command and "--num-cpus=0" in stripped.command


def test_role_mismatch_is_an_error() -> None:
    with pytest.raises(HarnessError, match="--head"):
        adapt_command(_head().command, "worker", WORKER_PORTS, head_gcs_port=1, num_cpus=1)


TLS_SECRETS = {**SECRETS, ("ca", "bundle.pem"): "CA PEM", ("client", "tls.crt"): "CERT", ("client", "tls.key"): "KEY"}


def _tls_head() -> Container:
    cluster = fx.raycluster("uid-1")
    return Container.from_pod(fx.hand_rendered_tls(fx.head_pod(cluster), ("ca", "bundle.pem"), "client"))


def test_secret_volumes_become_local_folders_and_env_paths_follow(tmp_path: Path) -> None:
    container = _tls_head()
    mounts = project_volumes(container, TLS_SECRETS, {}, tmp_path)
    assert set(mounts) == {fx.TLS_CA_DIR, fx.TLS_CLIENT_DIR}  # /dev/shm's emptyDir is the node's business
    adapted = adapt_env(resolve_env(container, TLS_SECRETS), "head", 1, "127.0.0.1:2", mounts)
    assert Path(adapted["RAY_REDIS_CA_CERT"]).read_text() == "CA PEM"  # item key bundle.pem -> path ca.crt
    assert Path(adapted["RAY_REDIS_CLIENT_CERT"]).read_text() == "CERT"
    assert Path(adapted["RAY_REDIS_CLIENT_KEY"]).read_text() == "KEY"
    assert all(Path(adapted[n]).is_relative_to(tmp_path) for n in fx.TLS_ENV if n in adapted)


def test_paths_the_volumes_do_not_provide_stay_missing(tmp_path: Path) -> None:
    """An env path under a mount but naming a file the volume lacks, or outside every mount, does not
    resolve to a file: Ray fails as it would in the pod."""
    container = _tls_head().with_env("RAY_REDIS_CA_CERT", f"{fx.TLS_CA_DIR}/bundle.pem")
    container = container.with_env("OTHER", "/etc/ray-ft-webhook/redis-cax/ca.crt")
    mounts = project_volumes(container, TLS_SECRETS, {}, tmp_path)
    adapted = adapt_env(resolve_env(container, TLS_SECRETS), "head", 1, "127.0.0.1:2", mounts)
    assert not Path(adapted["RAY_REDIS_CA_CERT"]).exists()
    assert adapted["OTHER"] == "/etc/ray-ft-webhook/redis-cax/ca.crt"


def test_volume_of_a_missing_secret_or_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"'ca' has no key 'bundle\.pem'"):
        project_volumes(_tls_head(), {**SECRETS, ("client", "tls.crt"): "C", ("ca", "ca.crt"): "X"}, {}, tmp_path)
    with pytest.raises(HarnessError, match="secret 'client' is not provided"):
        project_volumes(_tls_head(), {**SECRETS, ("ca", "bundle.pem"): "X"}, {}, tmp_path)
