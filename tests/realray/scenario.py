"""The steps of the KubeRay guide's scenario, shared by the tests of the tier: the guide's driver programs,
starting a cluster with diagnostics, creating the detached actor, killing GCS and waiting for the head to
fail, and running a one-shot pod (KubeRay's Redis cleanup Job) to completion. Every wait is bounded."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from testkit import processes
from webhook.cli.render import Rendered, render
from webhook.core.settings import Settings

from . import fixtures as fx
from .cluster import Cluster
from .container import ConfigMaps, Container, Secrets, project_volumes, resolve_env
from .driver import DriverResult
from .netns import NetNS
from .node import adapt_env, image_env

# The guide's detached_actor.py and its first increment_counter.py run, in one driver (step 5). The extra
# `node_id` method only reports where the actor lives: on the worker, since the head has no CPUs.
CREATE_ACTOR = """
deadline = time.monotonic() + 120
while sum(n["Alive"] for n in ray.nodes()) < 2:
    if time.monotonic() > deadline:
        raise RuntimeError("the worker never joined the cluster")
    time.sleep(0.5)

@ray.remote(num_cpus=1)
class Counter:
    def __init__(self):
        self.value = 0

    def increment(self):
        self.value += 1
        return self.value

    def node_id(self):
        return ray.get_runtime_context().get_node_id()

counter = Counter.options(name="counter_actor", lifetime="detached").remote()
result({
    "value": ray.get(counter.increment.remote(), timeout=120),
    "actor_node": ray.get(counter.node_id.remote(), timeout=60),
    "driver_node": ray.get_runtime_context().get_node_id(),
})
"""

# The guide's increment_counter.py (step 8), reporting which nodes GCS sees alive.
INCREMENT = """
counter = ray.get_actor("counter_actor")
value = ray.get(counter.increment.remote(), timeout=90)
result({
    "value": value,
    "actor_node": ray.get(counter.node_id.remote(), timeout=60),
    "alive_nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
})
"""


# Bounds, generous for a 2-core machine shared with other work.
HEAD_EXIT_AFTER_SIGKILL_S = 60  # measured ~1 s: `ray start --block` notices its GCS died
# SIGTERM (the guide's `pkill`) counts as a graceful exit for `ray start --block`; the head's other
# processes give up on GCS after Ray's default 60 s, and then the head ends.
HEAD_EXIT_AFTER_SIGTERM_S = 150
# A one-shot pod: Ray's import and at most RAY_redis_db_connect_retries x 0.5 s; measured ~5 s.
POD_TIMEOUT_S = 180


def render_pair(cluster: dict[str, Any], settings: Settings | None = None) -> tuple[Rendered, Rendered]:
    """The webhook's answer for the head and worker pods KubeRay builds from `cluster`."""
    settings = settings or Settings()
    head = render(cluster, fx.head_pod(cluster), settings)
    worker = render(cluster, fx.worker_pod(cluster), settings)
    for rendered in (head, worker):
        assert rendered.denied is None, rendered.denied
        assert rendered.skipped is None, rendered.skipped
    return head, worker


def start(made: list[Cluster], cluster: Cluster) -> Cluster:
    """Start `cluster` (head, then worker), recorded in `made` for the `clusters` fixture to stop; a cluster
    that does not come up fails the test with every log's tail."""
    made.append(cluster)
    try:
        cluster.start()
    except Exception as exc:
        pytest.fail(f"cluster {cluster.name} did not start: {exc}\n{cluster.diagnostics()}", pytrace=False)
    return cluster


def ok(cluster: Cluster, run: DriverResult, what: str) -> dict[str, Any]:
    assert run.ok, f"{what}: {run.result}\n{cluster.diagnostics()}"
    assert run.result is not None
    return run.result


def create_actor(cluster: Cluster) -> dict[str, Any]:
    """Step 5: the detached actor, incremented once; it must live on the worker."""
    created = ok(cluster, cluster.run_driver(CREATE_ACTOR), "create counter_actor")
    assert created["value"] == 1
    assert created["actor_node"] != created["driver_node"], "the actor must live on the worker, not the head"
    return created


def kill_gcs_and_wait_head_exit(cluster: Cluster, sig: signal.Signals, bound_s: float) -> float:
    """Step 7.2: kill only `gcs_server` in the head; wait for the head "pod" to fail. Seconds it took."""
    t0 = time.monotonic()
    cluster.kill_gcs(sig)
    exited = cluster.head.wait_exit(bound_s)
    assert exited, f"the head did not end within {bound_s}s of the GCS kill\n{cluster.diagnostics()}"
    return time.monotonic() - t0


def run_pod(netns: NetNS, pod: dict[str, Any], secret_values: Secrets, redis_address: str, log: Path,
            config_maps: ConfigMaps | None = None) -> int:
    """Run a one-shot pod's container as a kubelet would: its `command` + `args`, its env (Secrets resolved),
    its Secret/ConfigMap volumes as local folders, in the tier's network namespace with the Ray image's PATH;
    its exit code. Only the Redis address and the mounted paths are pointed at this machine."""
    container = Container.from_pod(pod)
    home = log.parent / "home"
    home.mkdir(parents=True, exist_ok=True)
    mounts = project_volumes(container, secret_values, config_maps or {}, log.parent / "volumes")
    env = {**image_env(home), **adapt_env(resolve_env(container, secret_values), "head", 0, redis_address, mounts)}
    spec = pod["spec"]["containers"][0]
    proc = processes.start(netns.argv([*spec["command"], *spec["args"]]), env=env, log=log, cwd="/")
    try:
        return proc.wait(timeout=POD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the pod ran longer than {POD_TIMEOUT_S}s\n{processes.tail(log)}", pytrace=False)
    finally:
        processes.stop_process(proc, 5, group=True)
