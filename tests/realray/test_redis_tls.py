"""Redis over TLS (issue 14): the webhook's rendered pods on real Ray 2.60 against a TLS-only redis-server 7.

The test makes the certificates (tls.py): a CA, Redis's server certificate for 127.0.0.1, a client
certificate, and an unrelated CA. Two Redis servers listen on TLS only (`--port 0 --tls-port`): one that checks
no client certificate, with a password for the `default` user; one with `--tls-auth-clients yes` whose
`default` user is disabled and whose only user is `ray` with a password (section 2: ACLs).

The RayClusters carry only our annotations (address `rediss://`, password Secret, username, CA Secret,
client certificate Secret); the pods are the webhook's rendered ones. The Secrets' keys become files the way a
kubelet projects a Secret volume (container.project_volumes), and the harness maps the container's mount
paths to those folders (node.adapt_env): a volume, item or path the webhook gets wrong leaves Ray without its
file.

- TLS: the head starts and GCS writes its tables; controls: the CA Secret holds an unrelated CA (GCS does
  not start, and says the certificate did not verify), no CA at all (likewise: the system's CAs do not
  know ours).
- Ray checks the certificate's chain, not its name (pinned: a certificate for another host is accepted).
- Mutual TLS + the ACL user: without the client certificate GCS does not start; with it, the guide's
  detached actor survives a GCS kill (1, then 2), and the cleanup pod KubeRay creates (rendered) removes
  the cluster's keys over mutual TLS; the same pod without the CA fails and leaves them.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from testkit import kuberay_pods, processes
from webhook.cli.render import render
from webhook.core.settings import Settings

from . import fixtures as fx
from .cluster import Cluster, Tier
from .container import Container, Secrets
from .node import STARTED_MARKER
from .redis_server import Redis
from .scenario import (
    HEAD_EXIT_AFTER_SIGKILL_S,
    INCREMENT,
    create_actor,
    kill_gcs_and_wait_head_exit,
    ok,
    run_pod,
    start,
)
from .tls import MISNAMED_HOST, TlsMaterial

pytestmark = pytest.mark.realray

ACL_USER = "ray"
PASSWORD_SECRET = ("redis-ray", "password")
CA_SECRET = ("redis-ca", "ca.crt")
OTHER_CA_SECRET = ("redis-other-ca", "ca.crt")
CLIENT_SECRET = "redis-client"
CA_CONFIGMAP = ("redis-ca-bundle", "bundle.pem")
# A head that cannot reach Redis ends by itself; bounded generously for a loaded 2-core machine.
HEAD_FAILS_WITHIN_S = 180
HEAD_UP_WITHIN_S = 240
# What Ray's Redis client (hiredis over Ray's BoringSSL) reports when Redis's certificate does not chain to
# the CA it trusts; Ray 2.60 logs it from `ray start` itself (see _head_does_not_start).
VERIFY_FAILED = "SSL_connect failed: CERTIFICATE_VERIFY_FAILED"
# What redis-server (OpenSSL 3) logs when a client without a certificate meets `--tls-auth-clients yes`.
PEER_NO_CERT = "peer did not return a certificate"


@pytest.fixture(scope="module")
def material() -> TlsMaterial:
    return TlsMaterial.generate(client_name=ACL_USER)


@pytest.fixture(scope="module")
def pod_secrets(material: TlsMaterial) -> dict[tuple[str, str], str]:
    """The Secrets in the pods' namespace: the password, both CAs, the client certificate (kubernetes.io/tls)."""
    return {
        PASSWORD_SECRET: secrets.token_urlsafe(18),
        CA_SECRET: material.ca.cert_pem.decode(),
        OTHER_CA_SECRET: material.other_ca.cert_pem.decode(),
        (CLIENT_SECRET, "tls.crt"): material.client.cert_pem.decode(),
        (CLIENT_SECRET, "tls.key"): material.client.key_pem.decode(),
    }


@pytest.fixture(scope="module")
def tls_redis(tier: Tier, material: TlsMaterial, pod_secrets: Secrets) -> Iterator[Redis]:
    """TLS only, no client certificate asked for, the `default` user with the password."""
    redis = Redis(tier.netns, tier.workdir, tier.ports.take()[0], pod_secrets[PASSWORD_SECRET], name="redis-tls",
                  tls=material.redis_tls(tier.workdir / "redis-tls-files", auth_clients=False))
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def misnamed_redis(tier: Tier, material: TlsMaterial, pod_secrets: Secrets) -> Iterator[Redis]:
    """Like tls_redis, but its certificate names only MISNAMED_HOST."""
    tls = material.redis_tls(tier.workdir / "redis-misnamed-files", auth_clients=False, misnamed=True)
    redis = Redis(tier.netns, tier.workdir, tier.ports.take()[0], pod_secrets[PASSWORD_SECRET],
                  name="redis-misnamed", tls=tls)
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def mtls_redis(tier: Tier, material: TlsMaterial, pod_secrets: Secrets) -> Iterator[Redis]:
    """TLS only with `--tls-auth-clients yes`; `default` disabled, the ACL user `ray` with the password."""
    redis = Redis(tier.netns, tier.workdir, tier.ports.take()[0], pod_secrets[PASSWORD_SECRET], name="redis-mtls",
                  tls=material.redis_tls(tier.workdir / "redis-mtls-files", auth_clients=True), username=ACL_USER)
    yield redis
    redis.stop()


def _raycluster(uid: str, ca: tuple[str, str] | None = CA_SECRET, client_cert: bool = False,
                username: bool = False, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """FT on with KubeRay's annotation; Redis address (rediss://), password, username and TLS files only from
    our annotations. The head has no CPUs, the worker one: the actor lives on the worker."""
    annotations = {kuberay_pods.FT_ENABLED: "true", "ray-ft-webhook.io/redis-address": "rediss://redis:6379",
                   "ray-ft-webhook.io/redis-password-secret": "/".join(PASSWORD_SECRET), **(extra or {})}
    if ca is not None:
        annotations["ray-ft-webhook.io/redis-ca-secret"] = "/".join(ca)
    if client_cert:
        annotations["ray-ft-webhook.io/redis-client-cert-secret"] = CLIENT_SECRET
    if username:
        annotations["ray-ft-webhook.io/redis-username"] = ACL_USER
    return kuberay_pods.raycluster(name="raycluster-tls", uid=uid, annotations=annotations,
                                   resources={"limits": {"cpu": "1"}, "requests": {"cpu": "1"}})


def _render(cluster: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    """The webhook's answer for a pod KubeRay builds from `cluster`."""
    rendered = render(cluster, pod, Settings())
    assert rendered.denied is None and rendered.skipped is None, rendered
    return rendered.pod


def _cluster(tier: Tier, redis: Redis, name: str, cluster: dict[str, Any], pod_secrets: Secrets) -> Cluster:
    head = Container.from_pod(_render(cluster, fx.head_pod(cluster)))
    worker = Container.from_pod(_render(cluster, fx.worker_pod(cluster)))
    config_maps = {CA_CONFIGMAP: pod_secrets[CA_SECRET]}  # the same CA, also published in a ConfigMap
    return Cluster(tier, name, head, worker, pod_secrets, redis=redis, config_maps=config_maps)


def _head_log_text(cluster: Cluster) -> str:
    """The head's `ray start` output and GCS's own logs: where a failed Redis connection is explained."""
    parts = [cluster.head.log.read_text(errors="replace")]
    parts += [cluster.head.ray_log(name) for name in ("gcs_server.out", "gcs_server.err")]
    return "\n".join(parts)


def _head_does_not_start(cluster: Cluster, redis: Redis, uid: str) -> str:
    """Start only the head; it must end without `ray start` reporting it up and without a key in Redis.
    Returns the head's logs.

    Ray 2.60's head reaches Redis first from `ray start` itself (node.py: the head's
    `check_persisted_session_name` -> `get_session_key_from_storage`, hiredis in `_raylet`), before it spawns
    gcs_server: a TLS failure aborts there, at once, and the reason is in the container's log (what
    `kubectl logs` shows); GCS is never started.
    """
    cluster.head.start()
    # Ends at the head's exit or as soon as `ray start` reports it up (a broken control fails at once).
    with contextlib.suppress(processes.WaitTimeout):
        processes.wait_until("the head to exit or come up",
                             lambda: not cluster.head.running() or STARTED_MARKER in cluster.head.log.read_text(),
                             HEAD_FAILS_WITHIN_S, interval=0.25)
    text = _head_log_text(cluster)
    assert STARTED_MARKER not in text, f"the head started\n{cluster.diagnostics()}"
    assert not cluster.head.running(), (
        f"the head was still running {HEAD_FAILS_WITHIN_S}s after its start\n{cluster.diagnostics()}"
    )
    assert redis.storage_keys(uid) == [], "GCS wrote to Redis"
    return text


def _head_starts(cluster: Cluster) -> float:
    """Start only the head and wait for `ray start` to report it up; seconds it took."""
    cluster.head.start()
    try:
        return cluster.head.wait_ready(HEAD_UP_WITHIN_S)
    except Exception as exc:
        pytest.fail(f"the head did not start: {exc}\n{cluster.diagnostics()}", pytrace=False)


def test_tls_head_starts_with_the_rendered_ca(tier: Tier, tls_redis: Redis, pod_secrets: Secrets,
                                              clusters: list[Cluster], note: list[str]) -> None:
    """Only the head: `ray start` and GCS reach Redis over TLS with the mounted CA and write the tables. The CA
    from a ConfigMap under a key of its own (the Secret form is the mTLS scenario's), a server name set."""
    uid = str(uuid.uuid4())
    extra = {"ray-ft-webhook.io/redis-ca-configmap": "/".join(CA_CONFIGMAP),
             "ray-ft-webhook.io/redis-server-name": "localhost"}
    cluster = _cluster(tier, tls_redis, "tls", _raycluster(uid, ca=None, extra=extra), pod_secrets)
    assert cluster.head.container.env_value("RAY_REDIS_SERVER_NAME") == "localhost"
    clusters.append(cluster)
    up_s = _head_starts(cluster)
    keys = tls_redis.storage_keys(uid)
    assert keys, f"no keys of {uid} in Redis\n{cluster.diagnostics()}"
    # Ray read the CA from the folder standing in for the rendered volume, not from some other file.
    assert Path(cluster.head.env["RAY_REDIS_CA_CERT"]).parent.parent == cluster.head.dir / "volumes"
    note.append(f"head up {up_s:.1f}s over TLS; keys: {', '.join(keys)}")


def test_tls_wrong_ca_gcs_does_not_start(tier: Tier, tls_redis: Redis, pod_secrets: Secrets,
                                         clusters: list[Cluster], note: list[str]) -> None:
    uid = str(uuid.uuid4())
    cluster = _cluster(tier, tls_redis, "tls-wrong-ca", _raycluster(uid, ca=OTHER_CA_SECRET), pod_secrets)
    clusters.append(cluster)
    text = _head_does_not_start(cluster, tls_redis, uid)
    assert VERIFY_FAILED in text, f"no {VERIFY_FAILED!r} in the head's logs\n{cluster.diagnostics()}"
    note.append(_first_line(text, VERIFY_FAILED)[-160:])


def test_tls_no_ca_gcs_does_not_start(tier: Tier, tls_redis: Redis, pod_secrets: Secrets,
                                      clusters: list[Cluster], note: list[str]) -> None:
    uid = str(uuid.uuid4())
    cluster = _cluster(tier, tls_redis, "tls-no-ca", _raycluster(uid, ca=None), pod_secrets)
    assert cluster.head.container.env_value("RAY_REDIS_CA_CERT") is None
    clusters.append(cluster)
    text = _head_does_not_start(cluster, tls_redis, uid)
    assert VERIFY_FAILED in text, f"no {VERIFY_FAILED!r} in the head's logs\n{cluster.diagnostics()}"
    note.append(_first_line(text, VERIFY_FAILED)[-160:])


def test_ray_does_not_check_the_redis_host_name(tier: Tier, misnamed_redis: Redis, pod_secrets: Secrets,
                                                 material: TlsMaterial, clusters: list[Cluster],
                                                 note: list[str]) -> None:
    """A fact of Ray 2.60, pinned: its Redis client (hiredis) checks the certificate's chain but not its name.
    A certificate for another host only, reached at 127.0.0.1 with a server name that is not in it either, is
    accepted: RAY_REDIS_SERVER_NAME is sent as SNI and nothing more. Should a Ray upgrade start checking the
    name, this test fails and the server-name annotation's documentation must change with it."""
    names = material.misnamed_server.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert [str(n.value) for n in names.value] == [MISNAMED_HOST]  # no IP, not `redis`
    uid = str(uuid.uuid4())
    extra = {"ray-ft-webhook.io/redis-server-name": "redis"}
    cluster = _cluster(tier, misnamed_redis, "tls-misnamed", _raycluster(uid, extra=extra), pod_secrets)
    clusters.append(cluster)
    up_s = _head_starts(cluster)
    assert misnamed_redis.storage_keys(uid), cluster.diagnostics()
    note.append(f"certificate for {MISNAMED_HOST} only, server name 'redis', address 127.0.0.1: up {up_s:.1f}s")


def test_mtls_without_client_certificate_gcs_does_not_start(
    tier: Tier, mtls_redis: Redis, pod_secrets: Secrets, clusters: list[Cluster], note: list[str]
) -> None:
    uid = str(uuid.uuid4())
    cluster = _cluster(tier, mtls_redis, "mtls-no-client", _raycluster(uid, username=True), pod_secrets)
    assert cluster.head.container.env_value("RAY_REDIS_CLIENT_CERT") is None
    clusters.append(cluster)
    refused_before = _refusals(mtls_redis)
    text = _head_does_not_start(cluster, mtls_redis, uid)
    # Ray only says "Failed to connect to Redis" (under TLS 1.3 the client's handshake completes before the
    # server refuses); Redis's log says why.
    assert "Failed to connect to Redis" in text, f"no Redis error in the head's logs\n{cluster.diagnostics()}"
    assert _refusals(mtls_redis) > refused_before, processes.tail(mtls_redis.log)
    note.append(f"Redis: {PEER_NO_CERT!r}; head: {_first_line(text, 'Failed to connect to Redis')[-120:]}")


def _refusals(redis: Redis) -> int:
    return redis.log.read_text(errors="replace").count(PEER_NO_CERT)


def _first_line(text: str, needle: str) -> str:
    return next((line for line in text.splitlines() if needle in line), "")


def test_mtls_acl_actor_survives_gcs_kill_and_cleanup_removes_keys(
    tier: Tier, mtls_redis: Redis, pod_secrets: Secrets, clusters: list[Cluster], note: list[str],
    tmp_path: Path,
) -> None:
    """The guide's steps 5-8 over mutual TLS as the ACL user, then KubeRay's cleanup pod (rendered)."""
    uid = str(uuid.uuid4())
    cluster_obj = _raycluster(uid, client_cert=True, username=True)
    cluster = start(clusters, _cluster(tier, mtls_redis, "mtls", cluster_obj, pod_secrets))
    created = create_actor(cluster)
    assert mtls_redis.actor_table_size(uid) >= 1, mtls_redis.storage_keys(uid)

    outage = kill_gcs_and_wait_head_exit(cluster, signal.SIGKILL, HEAD_EXIT_AFTER_SIGKILL_S)
    cluster.restart_head()
    after = ok(cluster, cluster.run_driver(INCREMENT), "increment after the GCS restart")
    assert after["value"] == 2
    assert after["actor_node"] == created["actor_node"]
    cluster.stop()  # KubeRay runs the cleanup Job once the head pod is gone

    keys = mtls_redis.storage_keys(uid)
    other = f"RAY{uid}-other@ACTOR"  # another cluster whose namespace starts with this one's
    mtls_redis.cli("HSET", other, "k", "v")
    cleanup_pod = _render(cluster_obj, kuberay_pods.cleanup_pod(cluster_obj, kuberay_ft=True))

    # Control: the same pod without RAY_REDIS_CA_CERT: Ray's Python side (cleanup_redis_storage) reads it too.
    no_ca_log = tmp_path / "cleanup-no-ca" / "cleanup.log"
    no_ca_code = run_pod(tier.netns, _without_env(cleanup_pod, "RAY_REDIS_CA_CERT"), pod_secrets,
                         mtls_redis.address, no_ca_log)
    assert no_ca_code != 0, f"the cleanup without the CA succeeded\n{processes.tail(no_ca_log)}"
    assert VERIFY_FAILED in no_ca_log.read_text(errors="replace"), processes.tail(no_ca_log)
    assert mtls_redis.storage_keys(uid) == keys

    log = tmp_path / "cleanup" / "cleanup.log"
    code = run_pod(tier.netns, cleanup_pod, pod_secrets, mtls_redis.address, log)
    assert code == 0, f"the rendered cleanup pod failed\n{processes.tail(log)}"
    assert mtls_redis.storage_keys(uid) == [], "keys left after the cleanup"
    assert mtls_redis.keys(other) == [other], "the cleanup removed another cluster's key"
    note.append(
        f"head up {cluster.timings['head_up_s']:.1f}s, worker {cluster.timings['worker_up_s']:.1f}s, head down "
        f"{outage:.1f}s after SIGKILL, restart up {cluster.timings['head_restart_2_up_s']:.1f}s, then 2; cleanup: "
        f"{len(keys)} keys removed over mutual TLS, without the CA exit {no_ca_code} and all kept"
    )


def _without_env(pod: dict[str, Any], name: str) -> dict[str, Any]:
    out = copy.deepcopy(pod)
    container = out["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != name]
    return out
