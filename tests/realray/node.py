"""One Ray "pod" on this machine: a rendered container's line run under `unshare --pid --fork --mount-proc`
in the tier's namespace, with only node IP, ports and the addresses that point at them changed.

One PID + mount namespace per node: a restarted head otherwise sees the worker's raylet and refuses to
start; `--mount-proc` gives each node its own /proc, a per-node directory is bind-mounted at /tmp/ray (the
emptyDir of KubeRay's sample) and a fresh tmpfs at /dev/shm. When the node's first process (`ray start
--block`) exits, the kernel ends everything else in it: that is the container dying.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from testkit import processes

from .container import ConfigMaps, Container, HarnessError, Role, Secrets, project_volumes, remove_flag, resolve_env
from .netns import NetNS, PortAllocator

# Each node gets its own slice of Ray's worker range: two raylets on one IP would otherwise hand out the same
# ports to their workers (in Kubernetes each pod has its own IP, so the split only undoes the shared IP).
WORKER_PORT_RANGES: Mapping[Role, tuple[int, int]] = {"head": (10002, 14999), "worker": (15000, 19999)}
# `ray start` prints this once all of the node's processes are up.
STARTED_MARKER = "Ray runtime started."


# Env vars of a KubeRay Ray container that hold an address of this node or of the head. Their values are the
# only env values the harness changes (to loopback addresses and this tier's ports).
_NODE_IP_VARS = frozenset({"RAY_IP", "FQ_RAY_IP", "MY_POD_IP", "RAY_NODE_IP"})
# Flags whose value is a port or address the harness decides. Removed from the line, then set again.
_MANAGED_FLAGS = (
    "--address",
    "--port",
    "--node-ip-address",
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
    "--ray-client-server-port",
    "--min-worker-port",
    "--max-worker-port",
    "--num-cpus",
)
# Port flags, in the order their ports are taken from a node's block. Head-only ones last.
_WORKER_PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)
_HEAD_PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port")
_RAY_START = re.compile(r"\bray\s+start\b(\s+--head\b)?")



def ray_bin_dir() -> Path:
    """The directory that stands in for the Ray image's PATH: the bin dir of the running interpreter."""
    return Path(sys.executable).parent


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the tier; empty when everything is there.

    Checked up front so that a missing tool gives one clear reason instead of a failure deep in a test.
    """
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (network, PID and mount namespaces need it)")
    for tool in ("redis-server", "redis-cli", "ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if not (ray_bin_dir() / "ray").exists():
        missing.append(f"ray (no {ray_bin_dir() / 'ray'})")
    return missing



def _adapt_address(value: str, host_port: str) -> str:
    """Each comma-separated `[scheme://]host:port` -> `[scheme://]<host_port>`, keeping the scheme."""
    out = []
    for part in value.split(","):
        scheme, sep, _ = part.strip().rpartition("://")
        out.append(f"{scheme}{sep}{host_port}")
    return ",".join(out)



@dataclass(frozen=True)
class NodePorts:
    """The ports one node uses; fixed for its life, so a restarted head listens where workers look."""

    flags: Mapping[str, int]

    @property
    def gcs(self) -> int:
        return self.flags["--port"]


def allocate_node_ports(ports: PortAllocator, role: Role) -> NodePorts:
    names = _WORKER_PORT_FLAGS + (_HEAD_PORT_FLAGS if role == "head" else ())
    return NodePorts(flags=dict(zip(names, ports.take(len(names)), strict=True)))


def adapt_command(command: str, role: Role, ports: NodePorts, head_gcs_port: int, num_cpus: int) -> str:
    """The container's bash line with only addresses, ports and `--num-cpus` changed for this machine.

    The managed flags (ports, addresses, CPU count) are removed wherever they are and written again right
    after `ray start` (`--head`); every other part of the line stays as rendered.
    """
    found = _RAY_START.search(command)
    if found is None:
        raise HarnessError(f"no 'ray start' in the command line: {command!r}")
    is_head = found.group(1) is not None
    if is_head != (role == "head"):
        raise HarnessError(f"a {role} container whose line says {'--head' if is_head else 'no --head'}")
    for flag in _MANAGED_FLAGS:
        command = remove_flag(command, flag)
    low, high = WORKER_PORT_RANGES[role]
    flags = ["--node-ip-address=127.0.0.1"]
    if role == "worker":
        flags.append(f"--address=127.0.0.1:{head_gcs_port}")
    flags += [f"{name}={port}" for name, port in ports.flags.items()]
    flags += [f"--min-worker-port={low}", f"--max-worker-port={high}", f"--num-cpus={num_cpus}"]
    match = _RAY_START.search(command)
    assert match is not None
    return command[: match.end()] + "".join(f" {f}" for f in flags) + command[match.end():]


def _adapt_path(value: str, mounts: Mapping[str, Path]) -> str | None:
    """`value` rewritten to the local folder of the volume mount it lies in, or None when in none."""
    for mount_path, local in mounts.items():
        if value == mount_path:
            return str(local)
        if value.startswith(mount_path + "/"):
            return str(local) + value[len(mount_path):]
    return None


def adapt_env(env: Mapping[str, str], role: Role, head_gcs_port: int, redis_address: str | None,
              mounts: Mapping[str, Path] | None = None) -> dict[str, str]:
    """The resolved env with only address values pointed at this machine, and paths inside the container's
    Secret/ConfigMap volume mounts (`mounts`: mount path -> local folder, from `project_volumes`) pointed at
    the local folder holding those files; every other value verbatim.

    The one place a container's filesystem is mapped onto this machine: a path outside every mount stays as
    written, so an env var naming a file the pod's volumes do not provide fails in Ray as it would in the pod.
    """
    out = dict(env)
    for name, value in env.items():
        local = _adapt_path(value, mounts or {})
        if local is not None:
            out[name] = local
        elif name == "RAY_REDIS_ADDRESS":
            if redis_address is None:
                raise HarnessError("the container sets RAY_REDIS_ADDRESS but the tier has no Redis")
            out[name] = _adapt_address(value, redis_address)
        elif name == "RAY_ADDRESS":
            out[name] = f"127.0.0.1:{head_gcs_port}"
        elif name == "RAY_PORT":
            out[name] = str(head_gcs_port)
        elif name in _NODE_IP_VARS:
            out[name] = "127.0.0.1"
    return out


def image_env(home: Path) -> dict[str, str]:
    """What the Ray image and the machine provide (not the pod spec), under the container's env.

    PATH with `ray`, HOME, locale. Usage stats are off because the namespace has no route out. The one Ray
    knob: a raylet ends itself when its dashboard agent has not come up within `agent_register_timeout_ms`
    (15-30 s); on a 2-core machine shared with builds the agent's imports alone took longer (a restarted
    head died that way), so the harness allows 180 s. It has nothing to do with GCS fault tolerance, and a
    container that sets it itself wins.
    """
    return {
        "PATH": f"{ray_bin_dir()}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_agent_register_timeout_ms": "180000",
    }


# Inside the new PID+mount namespace: the node's own /tmp/ray and /dev/shm, then the container's line.
# The node dir and the line come as arguments, so nothing of ours is added to the container's env.
_POD_SHELL = (
    'set -e; mkdir -p /tmp/ray; mount --bind "$1" /tmp/ray; '
    "mount -t tmpfs -o mode=1777 tmpfs /dev/shm; "
    'cd "$HOME"; exec bash -c "$2"'
)



class RayNode:
    """One Ray "pod": a container's line run under `unshare --pid --fork --mount-proc` in the netns.

    `start()` can be called again after the node exited (a container restart) with the same or another
    container; the ports and the /tmp/ray directory stay, as a pod keeps its spec and its emptyDir.
    """

    def __init__(
        self,
        name: str,
        role: Role,
        container: Container,
        *,
        netns: NetNS,
        workdir: Path,
        ports: NodePorts,
        head_gcs_port: int,
        num_cpus: int,
        secret_values: Secrets,
        redis_address: str | None,
        config_maps: ConfigMaps | None = None,
    ) -> None:
        self.name, self.role, self.container = name, role, container
        self.netns, self.ports, self.head_gcs_port, self.num_cpus = netns, ports, head_gcs_port, num_cpus
        self.secret_values, self.redis_address = secret_values, redis_address
        self.config_maps: ConfigMaps = config_maps or {}
        self.dir = workdir / name
        self.ray_dir = self.dir / "tmp-ray"
        self.home = self.dir / "home"
        self.ray_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid: int | None = None
        self._pidns: str | None = None
        self.env: dict[str, str] = {}
        self.command = ""

    @property
    def log(self) -> Path:
        return self.dir / f"start-{self.starts}.log"

    def start(self, container: Container | None = None) -> None:
        """Start (or restart) the node; returns once its init process exists, not when Ray is ready."""
        if self.proc is not None and self.proc.poll() is None:
            raise HarnessError(f"{self.name} is still running")
        if container is not None:
            self.container = container
        resolved = resolve_env(self.container, self.secret_values)
        mounts = project_volumes(self.container, self.secret_values, self.config_maps, self.dir / "volumes")
        adapted = adapt_env(resolved, self.role, self.head_gcs_port, self.redis_address, mounts)
        self.env = {**image_env(self.home), **adapted}
        self.command = adapt_command(self.container.command, self.role, self.ports, self.head_gcs_port, self.num_cpus)
        self.starts += 1
        self.log.write_text(f"# {self.name} start {self.starts}\n# command: {self.command}\n")
        argv = self.netns.argv([
            "unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
            "bash", "-c", _POD_SHELL, "pod-shell", str(self.ray_dir), self.command,
        ])
        self.proc = processes.start(argv, env=self.env, log=self.log, cwd="/")
        proc = self.proc

        def found_init() -> bool:
            kids = processes.children(proc.pid)
            if kids:
                self.init_pid = kids[0]
                self._pidns = processes.ns_link(kids[0], "pid")
            return bool(kids) or proc.poll() is not None

        with contextlib.suppress(processes.WaitTimeout):
            processes.wait_until(f"{self.name}'s first process", found_init, 30, interval=0.05)
        if self.init_pid is None:
            raise HarnessError(f"{self.name}: no process in the new PID namespace\n" + processes.tail(self.log))

    def wait_ready(self, timeout: float) -> float:
        """Block until `ray start` reports the node up; seconds waited. Raises if it exits or times out."""
        t0 = time.monotonic()

        def ready() -> bool:
            if STARTED_MARKER in self.log.read_text(errors="replace"):
                return True
            if not self.running():
                raise HarnessError(f"{self.name} exited before it was up\n" + processes.tail(self.log))
            return False

        try:
            processes.wait_until(f"{self.name} to be up", ready, timeout, interval=0.25)
        except processes.WaitTimeout as exc:
            raise HarnessError(f"{exc}\n" + processes.tail(self.log)) from None
        return time.monotonic() - t0

    def running(self) -> bool:
        """True while the node's `unshare` (and so its PID namespace) is alive."""
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """Host PIDs of the processes in this node's PID namespace."""
        if self._pidns is None or not self.running():
            return []
        return [pid for pid in processes.pids()
                if processes.ns_link(pid, "pid") == self._pidns and processes.is_running(pid)]

    def find(self, comm: str) -> list[int]:
        """Host PIDs of this node's processes named `comm` (as `pgrep` inside the pod would find them)."""
        return [pid for pid in self.pids() if processes.comm(pid) == comm]

    def kill_process(self, comm: str, sig: signal.Signals = signal.SIGTERM) -> list[int]:
        """Signal only this node's processes named `comm` (`kubectl exec ... pkill gcs_server`)."""
        pids = self.find(comm)
        if not pids:
            raise HarnessError(f"{self.name}: no {comm} process\n" + processes.tail(self.log))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    def ray_log(self, name: str) -> str:
        """Ray's log file `name` (e.g. `raylet.out`) of the node's latest session, read from the host.

        `session_latest` is a link that only resolves inside the node's mount namespace, so the newest
        session directory is taken instead.
        """
        sessions = sorted(self.ray_dir.glob("session_2*"))
        if not sessions:
            return ""
        try:
            return (sessions[-1] / "logs" / name).read_text(errors="replace")
        except OSError:
            return ""

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the node to end by itself (its `ray start --block` exited); True when it did."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, grace_s: float = 2.0) -> None:
        """End the node: SIGTERM its process group, SIGKILL after `grace_s` (a test needs no graceful stop).

        `--kill-child` takes the namespace's first process down with `unshare`, and with it the rest of the
        namespace, even processes that left our process group.
        """
        if self.proc is not None:
            processes.stop_process(self.proc, grace_s, group=True)
        self.init_pid = None

