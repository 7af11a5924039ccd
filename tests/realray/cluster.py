"""A tier and its clusters: one namespace + Redis + port allocator + memory sampler per test session, and
per test a head and a worker started from rendered containers, driven and inspected like `kubectl exec`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from testkit import processes

from .container import ConfigMaps, Container, HarnessError, Secrets
from .driver import RESULT_PREFIX, DriverResult, driver_script
from .netns import NetNS, PortAllocator
from .node import RayNode, allocate_node_ports, ray_bin_dir
from .redis_server import Redis

# Ray's default root for session dirs; a per-node directory is mounted there, as KubeRay mounts an emptyDir.
TMP_RAY = Path("/tmp/ray")
# What a raylet of Ray 2.60 logs when it has reconnected to a restarted GCS and resubscribed to its tables.
GCS_RESTART_SEEN = "The GCS has restarted. Resubscribing"


class Tier:
    """What the tests of one module share: the namespace, one Redis, the port allocator, a work dir and
    a memory sampler. Clusters are created per test and use their own storage namespaces."""

    def __init__(self, workdir: Path, redis_password: str) -> None:
        self.t0 = time.monotonic()
        self.workdir = workdir
        self.netns = NetNS()
        self.ports = PortAllocator()
        self.redis: Redis | None = None
        self.sampler = MemorySampler(self.netns)
        # Each node bind-mounts its own directory at /tmp/ray inside its mount namespace; the mount point
        # itself lives on the shared /tmp. Made here, removed again at close when we made it and it is empty.
        self._made_tmp_ray = not TMP_RAY.exists()
        TMP_RAY.mkdir(exist_ok=True)
        try:
            self.redis = Redis(self.netns, workdir, self.ports.take()[0], redis_password)
            self.sampler.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.sampler.stop()
        if self.redis is not None:
            self.redis.stop()
        self.netns.delete()
        if self._made_tmp_ray:
            with contextlib.suppress(OSError):
                TMP_RAY.rmdir()

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self.t0


class Cluster:
    """A head and one worker built from rendered containers, in the tier's namespace.

    The head runs with `--num-cpus=0` and the worker with 1, as in KubeRay's sample, so the guide's actor
    (num_cpus=1) can only live on the worker: that is what lets it survive the head's restart.
    """

    def __init__(
        self,
        tier: Tier,
        name: str,
        head: Container,
        worker: Container,
        secret_values: Secrets,
        head_cpus: int = 0,
        worker_cpus: int = 1,
        config_maps: ConfigMaps | None = None,
        redis: Redis | None = None,
    ) -> None:
        """`redis`: the Redis the head's RAY_REDIS_ADDRESS points at (default: the tier's)."""
        self.tier, self.name = tier, name
        self.dir = tier.workdir / name
        head_ports = allocate_node_ports(tier.ports, "head")
        self.redis = redis or tier.redis
        common: dict[str, Any] = {
            "netns": tier.netns,
            "workdir": self.dir,
            "head_gcs_port": head_ports.gcs,
            "secret_values": secret_values,
            "redis_address": self.redis.address if self.redis else None,
            "config_maps": config_maps,
        }
        self.head = RayNode("head", "head", head, ports=head_ports, num_cpus=head_cpus, **common)
        worker_ports = allocate_node_ports(tier.ports, "worker")
        self.worker = RayNode("worker", "worker", worker, ports=worker_ports, num_cpus=worker_cpus, **common)
        self.drivers = 0
        self.timings: dict[str, float] = {}

    def start(self, timeout: float = 240) -> None:
        """Head first, then the worker (KubeRay's init container waits for the head's GCS the same way)."""
        self.head.start()
        self.timings["head_up_s"] = self.head.wait_ready(timeout)
        self.worker.start()
        self.timings["worker_up_s"] = self.worker.wait_ready(timeout)

    def run_driver(self, body: str, timeout: float = 240) -> DriverResult:
        """Run a driver in the head's namespaces with the head container's env (`kubectl exec`)."""
        if self.head.init_pid is None or not self.head.running():
            raise HarnessError("the head is not running\n" + processes.tail(self.head.log))
        self.drivers += 1
        log = self.dir / f"driver-{self.drivers}.log"
        argv = [
            "nsenter", f"--target={self.head.init_pid}", "--net", "--pid", "--mount", f"--wd={self.head.home}",
            str(ray_bin_dir() / "python"), "-c", driver_script(body),
        ]
        proc = processes.start(argv, env=self.head.env, log=log, cwd="/")
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            processes.stop_process(proc, 5, group=True)
            return DriverResult(returncode=-1, result={"error": f"driver timed out after {timeout}s"}, log=log)
        finally:
            processes.stop_process(proc, 5, group=True)
        parsed: dict[str, Any] | None = None
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(RESULT_PREFIX):
                parsed = json.loads(line[len(RESULT_PREFIX):])
        return DriverResult(returncode=code, result=parsed, log=log)

    def kill_gcs(self, sig: signal.Signals = signal.SIGTERM) -> list[int]:
        """Kill only the head's `gcs_server` (the guide's `pkill gcs_server` in the head pod)."""
        return self.head.kill_process("gcs_server", sig)

    def restart_head(self, container: Container | None = None, exit_timeout: float = 60, timeout: float = 240) -> None:
        """After the head went down: wait for it to end, then start it again (same env unless given).

        A head whose GCS died ends by itself within a second or so; one that does not within
        `exit_timeout` is stopped, as a kubelet would restart a failed container.
        """
        if not self.head.wait_exit(exit_timeout):
            self.head.stop()
        self.head.start(container)
        self.timings[f"head_restart_{self.head.starts}_up_s"] = self.head.wait_ready(timeout)

    def worker_raylet_alive(self) -> bool:
        return bool(self.worker.find("raylet"))

    def worker_resubscribed(self, timeout: float = 60) -> bool:
        """Whether the worker's raylet reports that it found the restarted GCS and resubscribed to it.

        The raylet's own log line is the one direct witness: an actor call after the restart goes from the
        driver straight to the actor's process, and GCS lists a node as alive from its reloaded table
        before the node reconnects. Polls up to `timeout` seconds.
        """
        try:
            processes.wait_until("the worker's raylet to resubscribe",
                                 lambda: GCS_RESTART_SEEN in self.worker.ray_log("raylet.out"), timeout, interval=0.25)
        except processes.WaitTimeout:
            return False
        return True

    def diagnostics(self) -> str:
        """Tails of every log of this cluster, for assertion messages."""
        logs = sorted(self.dir.rglob("*.log"))
        raylet_logs = sorted(self.dir.rglob("raylet.out"))
        return "\n".join(processes.tail(p, 25) for p in [*logs, *raylet_logs])

    def stop(self) -> None:
        self.worker.stop()
        self.head.stop()


class MemorySampler:
    """Samples the summed RSS (and PSS) of every process in the tier's network namespace plus the test
    process, once a second, and keeps the peak: the memory the tier needs on a 24 GB machine."""

    def __init__(self, netns: NetNS, interval_s: float = 1.0) -> None:
        self.netns, self.interval_s = netns, interval_s
        self.peak_rss_kib = self.peak_pss_kib = self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="realray-memory", daemon=True)
        self._link: str | None = None

    def start(self) -> None:
        # The file `ip netns add` bind-mounts is the namespace itself: its inode names it in /proc/*/ns/net.
        self._link = f"net:[{os.stat(f'/run/netns/{self.netns.name}').st_ino}]"
        self._thread.start()

    def sample(self) -> None:
        me = os.getpid()
        rss_sum = pss_sum = count = 0
        for pid in processes.pids():
            if pid == me or (self._link is not None and processes.ns_link(pid, "net") == self._link):
                rss, pss = processes.memory_kib(pid)
                rss_sum, pss_sum, count = rss_sum + rss, pss_sum + pss, count + 1
        if rss_sum > self.peak_rss_kib:
            self.peak_rss_kib, self.peak_processes = rss_sum, count
        self.peak_pss_kib = max(self.peak_pss_kib, pss_sum)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

