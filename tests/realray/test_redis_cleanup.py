"""KubeRay's Redis cleanup pod, rendered by the webhook, run on a real Redis against real Ray's GCS keys (issue 12).

A RayCluster whose Redis address, password and username come only from our annotations: a real Ray 2.60 head
started with the webhook's rendered head env writes its GCS tables into the tier's redis-server under the
cluster's storage namespace (its uid). Then, the head gone as when KubeRay deletes the cluster, the cleanup
pod KubeRay v1.6.2 builds (testkit.kuberay_pods.cleanup_pod, from `buildRedisCleanupJob`) runs its own
command line (`command` + `args[0]`, its env with the Secret resolved) in the tier's namespace:

- rendered by the webhook: it exits 0, no key of that storage namespace is left, and another cluster's keys
  (another namespace, and one whose name starts with this one's) are untouched;
- as KubeRay submitted it (control): it has no Redis address or password, exits 1, and every key stays.

The Redis credentials are an ACL user of their own (`ACL SETUSER`, its password in another Secret), so the
username matters: a second control, the webhook's pod with KubeRay's line left as it was (no `username=`),
authenticates as the `default` user with the ACL user's password, fails, and the keys stay.
"""

from __future__ import annotations

import copy
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest

from testkit import kuberay_pods, processes
from webhook.cli.render import render
from webhook.core import cleanup
from webhook.core.settings import Settings

from . import fixtures as fx
from .cluster import Tier
from .container import Container
from .node import RayNode, allocate_node_ports
from .redis_server import Redis
from .scenario import run_pod

pytestmark = pytest.mark.realray

ACL_USER = "raygcs"
ACL_SECRET = ("redis-acl", "password")


def _raycluster(uid: str) -> dict[str, Any]:
    """FT on with KubeRay's annotation, every Redis value from our annotations (nothing in the template)."""
    return kuberay_pods.raycluster(
        name="raycluster-cleanup", uid=uid,
        annotations={kuberay_pods.FT_ENABLED: "true", "ray-ft-webhook.io/redis-address": "redis:6379",
                     "ray-ft-webhook.io/redis-password-secret": "/".join(ACL_SECRET),
                     "ray-ft-webhook.io/redis-username": ACL_USER},
        resources={"limits": {"cpu": "1"}, "requests": {"cpu": "1"}},
    )


def _run_pod(tier: Tier, pod: dict[str, Any], secret_values: dict[tuple[str, str], str], log: Path) -> int:
    assert tier.redis is not None
    return run_pod(tier.netns, pod, secret_values, tier.redis.address, log)


def _write_other_cluster(redis: Redis, namespace: str) -> list[str]:
    """Keys of another cluster, in Ray 2.60's layout (`RAY<namespace>@<TABLE>`)."""
    for table in ("ACTOR", "NODE", "KV"):
        redis.cli("HSET", f"RAY{namespace}@{table}", "k", "v")
    return redis.storage_keys(namespace)


def _head_writes_keys(tier: Tier, cluster: dict[str, Any], uid: str, workdir: Path,
                      secret_values: dict[tuple[str, str], str]) -> list[str]:
    """A real Ray head from the webhook's rendered head pod; its GCS keys in Redis once it is up. Stopped."""
    assert tier.redis is not None
    rendered = render(cluster, kuberay_pods.pod(cluster, "head"), Settings())
    assert rendered.denied is None and rendered.skipped is None, rendered
    head = Container.from_pod(rendered.pod)
    assert head.env_value("RAY_REDIS_ADDRESS") == "redis:6379" and head.env_value("REDIS_USERNAME") == ACL_USER
    ports = allocate_node_ports(tier.ports, "head")
    node = RayNode("head", "head", head, netns=tier.netns, workdir=workdir, ports=ports, head_gcs_port=ports.gcs,
                   num_cpus=0, secret_values=secret_values,
                   redis_address=tier.redis.address)
    try:
        node.start()
        node.wait_ready(240)
        keys = tier.redis.storage_keys(uid)
    finally:
        node.stop()  # KubeRay runs the cleanup Job once the head pod is gone
    assert keys, f"the head wrote no keys for storage namespace {uid}: {tier.redis.keys()}\n{processes.tail(node.log)}"
    return keys


def test_rendered_cleanup_pod_removes_the_namespace_and_kuberays_own_does_not(
    tier: Tier, tmp_path: Path, note: list[str]
) -> None:
    assert tier.redis is not None
    redis = tier.redis
    acl_password = secrets.token_urlsafe(18)
    redis.cli("ACL", "SETUSER", ACL_USER, "on", f">{acl_password}", "~*", "&*", "+@all")
    try:
        _cleanup_scenario(tier, redis, {ACL_SECRET: acl_password, (fx.SECRET, fx.SECRET_KEY): redis.password},
                          tmp_path, note)
    finally:
        redis.cli("ACL", "DELUSER", ACL_USER)


def _cleanup_scenario(tier: Tier, redis: Redis, pod_secrets: dict[tuple[str, str], str], tmp_path: Path,
                      note: list[str]) -> None:
    uid = str(uuid.uuid4())
    cluster = _raycluster(uid)
    keys = _head_writes_keys(tier, cluster, uid, tmp_path / "cluster", pod_secrets)
    others = {ns: _write_other_cluster(redis, ns) for ns in (str(uuid.uuid4()), f"{uid}-other")}

    # The pod KubeRay v1.6.2's cleanup Job gives kube-controller-manager, before admission.
    kuberays = kuberay_pods.cleanup_pod(cluster, kuberay_ft=True)
    kuberay_env = Container.from_pod(kuberays)
    assert kuberay_env.env_value("RAY_external_storage_namespace") == uid  # KubeRay's own, kept by the webhook
    assert kuberay_env.env_value("RAY_REDIS_ADDRESS") is None and "username=" not in kuberay_env.command

    # Control: KubeRay's pod as submitted (no injection) fails, and every key stays.
    control_log = tmp_path / "kuberays" / "cleanup.log"
    code_control = _run_pod(tier, kuberays, pod_secrets, control_log)
    after_control = redis.storage_keys(uid)
    assert code_control != 0, f"KubeRay's own cleanup pod succeeded\n{processes.tail(control_log)}"
    assert after_control == keys

    # The webhook's cleanup pod: the head's address, password and username; the line passes the username.
    rendered = render(cluster, kuberays, Settings())
    assert rendered.denied is None and rendered.skipped is None, rendered
    injected = rendered.pod["metadata"]["annotations"]["ray-ft-webhook.io/injected"].split(",")
    assert injected == ["RAY_REDIS_ADDRESS", "REDIS_USERNAME", "REDIS_PASSWORD", cleanup.INJECTED_NAME]
    assert cleanup.USERNAME_ARG in rendered.pod["spec"]["containers"][0]["args"][0]

    # Control 2: the webhook's env but KubeRay's line (the username not passed): Redis refuses, the keys stay.
    unrewritten = copy.deepcopy(rendered.pod)
    unrewritten["spec"]["containers"][0]["args"] = kuberays["spec"]["containers"][0]["args"]
    no_user_log = tmp_path / "no-username" / "cleanup.log"
    no_user_code = _run_pod(tier, unrewritten, pod_secrets, no_user_log)
    assert no_user_code != 0, f"the cleanup without the username succeeded\n{processes.tail(no_user_log)}"
    assert redis.storage_keys(uid) == keys

    log = tmp_path / "rendered" / "cleanup.log"
    code = _run_pod(tier, rendered.pod, pod_secrets, log)
    assert code == 0, f"the rendered cleanup pod failed\n{processes.tail(log)}"
    after = redis.storage_keys(uid)
    assert after == [], f"keys of {uid} left after the cleanup: {after}"
    for ns, their_keys in others.items():
        assert redis.storage_keys(ns) == their_keys, f"the cleanup touched another cluster's keys ({ns})"

    note.append(
        f"storage namespace keys: {len(keys)} written by the head ({', '.join(keys)}); "
        f"KubeRay's own cleanup pod: exit {code_control}, {len(after_control)} left; without the username: exit "
        f"{no_user_code}, {len(keys)} left; the webhook's: exit 0, {len(after)} left; "
        f"other clusters' keys kept: {sum(len(k) for k in others.values())}"
    )
