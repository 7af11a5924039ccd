"""The webhook's rendered pods, run on real Ray 2.60 and real Redis: the KubeRay guide's steps 5-8.

Positive: a detached actor created before the head's GCS is killed answers 2 after the head restarts,
because GCS reloads its tables from Redis under the rendered storage namespace and the worker (with the
webhook's 600 s reconnect timeout) outlives the outage. The negative controls show each part is needed:
(a) without the FT env the actor is lost; (b) a restarted head with another storage namespace (the head
pod re-created without the webhook's patch) does not see it; (c) a worker timeout shorter than the outage
makes the worker give up.

Each test builds its own head + worker in the session's network namespace and Redis, with its own
RayCluster uid (= storage namespace), and stops them by PID at the end. Every wait is bounded.
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from . import fixtures as fx
from .cluster import Cluster, Tier
from .container import Container
from .scenario import (
    HEAD_EXIT_AFTER_SIGKILL_S,
    HEAD_EXIT_AFTER_SIGTERM_S,
    INCREMENT,
    create_actor,
    kill_gcs_and_wait_head_exit,
    ok,
    render_pair,
    start,
)

pytestmark = pytest.mark.realray

# Control (c) after the restart: call the actor until Ray gives a final answer. Right after a GCS restart a
# vanished worker's actor is only "temporarily unavailable"; once GCS stops waiting for the worker's raylet
# to reconnect (~10 s), the actor is dead. Bounded by `deadline`.
INCREMENT_UNTIL_SETTLED = """
deadline = time.monotonic() + 120
seen = []
while True:
    try:
        counter = ray.get_actor("counter_actor")
        seen.append(f"value {ray.get(counter.increment.remote(), timeout=30)}")
        break
    except Exception as e:
        seen.append(type(e).__name__)
        if type(e).__name__ in ("ValueError", "ActorDiedError") or time.monotonic() > deadline:
            break
    time.sleep(1)
result({"seen": seen, "alive_nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])})
"""

SHORT_WORKER_TIMEOUT_S = 10


def _secrets(tier: Tier) -> dict[tuple[str, str], str]:
    assert tier.redis is not None
    return {(fx.SECRET, fx.SECRET_KEY): tier.redis.password}


def _start(tier: Tier, made: list[Cluster], name: str, head: Container, worker: Container) -> Cluster:
    return start(made, Cluster(tier, name, head, worker, _secrets(tier)))


def test_detached_actor_survives_gcs_restart(tier: Tier, clusters: list[Cluster], note: list[str]) -> None:
    """Steps 5-8 with the webhook's output: 1, kill GCS, head restarts from Redis, worker stays, then 2."""
    uid = str(uuid.uuid4())
    head_r, worker_r = render_pair(fx.raycluster(uid))
    head, worker = Container.from_pod(head_r.pod), Container.from_pod(worker_r.pod)
    # What the webhook must have given these pods for the rest to mean anything.
    assert head.env_value("RAY_external_storage_namespace") == uid
    assert worker.env_value("RAY_gcs_rpc_server_reconnect_timeout_s") == "600"

    cluster = _start(tier, clusters, "positive", head, worker)
    created = create_actor(cluster)

    # Step 6: GCS tables are in Redis under the rendered namespace, the actor among them.
    assert tier.redis is not None
    keys = tier.redis.storage_keys(uid)
    assert keys, f"no Redis keys for storage namespace {uid}: {tier.redis.keys()}"
    if any(k.startswith(f"RAY{uid}@") for k in keys):
        assert tier.redis.actor_table_size(uid) >= 1, keys

    # Step 7: `pkill gcs_server` (SIGTERM, as in the guide). The head fails after its own 60 s GCS timeout,
    # an outage longer than Ray's default worker timeout: only the webhook's 600 s keeps the worker.
    raylet = cluster.worker.find("raylet")
    outage = kill_gcs_and_wait_head_exit(cluster, signal.SIGTERM, HEAD_EXIT_AFTER_SIGTERM_S)
    assert cluster.worker_raylet_alive(), f"the worker gave up during a {outage:.0f}s outage\n{cluster.diagnostics()}"
    cluster.restart_head()  # same env: a container restart

    # Step 8: the same actor on the same worker, state kept: 2.
    after = ok(cluster, cluster.run_driver(INCREMENT), "increment after the GCS restart")
    assert after["value"] == 2
    assert after["actor_node"] == created["actor_node"]
    assert created["actor_node"] in after["alive_nodes"], "GCS does not see the worker alive after the restart"
    assert cluster.worker.find("raylet") == raylet, "the worker's raylet was replaced, not reconnected"
    assert cluster.worker_resubscribed(), f"the worker never resubscribed to the new GCS\n{cluster.diagnostics()}"
    note.append(
        f"head up {cluster.timings['head_up_s']:.1f}s, worker up {cluster.timings['worker_up_s']:.1f}s, "
        f"head down {outage:.0f}s after SIGTERM to gcs_server, restart up "
        f"{cluster.timings['head_restart_2_up_s']:.1f}s; Redis keys: {', '.join(keys)}"
    )


def test_without_ft_env_actor_is_lost(tier: Tier, clusters: list[Cluster], note: list[str]) -> None:
    """Control (a): the same pods with no FT env at all (no Redis address, password, storage namespace or
    timeouts; no `--redis-password`): GCS keeps its tables in memory and a restart forgets the actor.

    (The quick start's own template already points the head at Redis, so leaving out only the webhook's
    patch would still keep state, under Ray's default namespace; control (b) covers that head.)
    """
    cluster_obj = fx.raycluster(str(uuid.uuid4()))
    head = Container.from_pod(fx.head_pod(cluster_obj)).without(fx.FT_ENV, fx.FT_FLAGS)
    worker = Container.from_pod(fx.worker_pod(cluster_obj)).without(fx.FT_ENV, fx.FT_FLAGS)
    assert tier.redis is not None
    keys_before = tier.redis.keys()

    cluster = _start(tier, clusters, "no-ft", head, worker)
    create_actor(cluster)
    assert tier.redis.keys() == keys_before, "a head without RAY_REDIS_ADDRESS wrote to Redis"

    outage = kill_gcs_and_wait_head_exit(cluster, signal.SIGKILL, HEAD_EXIT_AFTER_SIGKILL_S)
    cluster.restart_head()
    after = cluster.run_driver(INCREMENT)
    assert not after.ok, f"the actor survived without FT: {after.result}"
    assert after.result is not None and "counter_actor" in after.result.get("error", ""), after.result
    note.append(f"head down {outage:.1f}s after SIGKILL; after restart: {after.result['error'][:100]}")


def test_other_storage_namespace_does_not_see_actor(tier: Tier, clusters: list[Cluster], note: list[str]) -> None:
    """Control (b): the head re-created without the webhook's patch (as when the webhook is skipped on
    re-admission) uses Ray's default storage namespace, not the cluster's, and the actor is gone for it."""
    uid = str(uuid.uuid4())
    cluster_obj = fx.raycluster(uid)
    head_r, worker_r = render_pair(cluster_obj)
    cluster = _start(
        tier, clusters, "other-ns", Container.from_pod(head_r.pod), Container.from_pod(worker_r.pod)
    )
    create_actor(cluster)
    assert tier.redis is not None
    assert tier.redis.storage_keys(uid)

    unpatched_head = Container.from_pod(fx.head_pod(cluster_obj))
    assert unpatched_head.env_value("RAY_external_storage_namespace") is None
    assert unpatched_head.env_value("RAY_REDIS_ADDRESS") is not None  # still on Redis, another namespace
    keys_before = set(tier.redis.keys())

    kill_gcs_and_wait_head_exit(cluster, signal.SIGKILL, HEAD_EXIT_AFTER_SIGKILL_S)
    cluster.restart_head(unpatched_head)
    after = cluster.run_driver(INCREMENT)
    assert not after.ok, f"a head with another storage namespace found the actor: {after.result}"
    assert after.result is not None and "counter_actor" in after.result.get("error", ""), after.result
    # The cluster's state is still in Redis, just not where this head looks; the new head wrote elsewhere.
    assert tier.redis.actor_table_size(uid) >= 1
    new_keys = sorted(set(tier.redis.keys()) - keys_before)
    assert new_keys and not any(uid in k for k in new_keys), new_keys
    note.append(f"restarted head wrote {', '.join(new_keys[:3])}...; actor lookup: {after.result['error'][:80]}")


def test_short_worker_timeout_gives_up(tier: Tier, clusters: list[Cluster], note: list[str]) -> None:
    """Control (c): with the worker timeout set to 10 s through the webhook's annotation, an outage longer
    than that ends the worker (~10 s after the kill, not Ray's 60 s), and the restarted head's cluster has
    lost the actor with it. The webhook warns about exactly this configuration."""
    uid = str(uuid.uuid4())
    annotation = {"ray-ft-webhook.io/worker-reconnect-timeout-s": str(SHORT_WORKER_TIMEOUT_S)}
    head_r, worker_r = render_pair(fx.raycluster(uid, annotation))
    worker = Container.from_pod(worker_r.pod)
    assert worker.env_value("RAY_gcs_rpc_server_reconnect_timeout_s") == str(SHORT_WORKER_TIMEOUT_S)
    assert worker_r.warnings, "the webhook should warn that 10 s is not above the head's timeout"

    cluster = _start(tier, clusters, "short-timeout", Container.from_pod(head_r.pod), worker)
    created = create_actor(cluster)

    t0 = time.monotonic()
    kill_gcs_and_wait_head_exit(cluster, signal.SIGKILL, HEAD_EXIT_AFTER_SIGKILL_S)
    # The head stays down (the outage goes on) until the worker ends by itself.
    gave_up = cluster.worker.wait_exit(SHORT_WORKER_TIMEOUT_S + 90)
    waited = time.monotonic() - t0
    assert gave_up, f"the worker was still up {waited:.0f}s into the outage\n{cluster.diagnostics()}"
    assert waited >= SHORT_WORKER_TIMEOUT_S, f"the worker ended {waited:.1f}s after the kill, before its timeout"
    # Ray's own words that the injected timeout is the one it used, not its default 60 s (rpc_client.h logs it
    # when it gives up): no clock stands in for that.
    gave_up_line = f"Failed to connect to GCS within {SHORT_WORKER_TIMEOUT_S} seconds"
    assert gave_up_line in cluster.worker.ray_log("raylet.out"), \
        f"no {gave_up_line!r} in the worker's raylet.out\n{cluster.diagnostics()}"

    cluster.restart_head()
    settled = ok(cluster, cluster.run_driver(INCREMENT_UNTIL_SETTLED), "calls after the restart")
    assert settled["seen"][-1] in ("ActorDiedError", "ValueError"), f"the actor is not lost: {settled['seen']}"
    assert created["actor_node"] not in settled["alive_nodes"]
    note.append(f"worker ended {waited:.1f}s after the GCS kill; calls after restart: {' -> '.join(settled['seen'])}")
