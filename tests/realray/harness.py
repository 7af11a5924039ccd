"""Run a rendered KubeRay head and worker as real Ray processes against a real Redis, on one machine.

The webhook's claim is "these env vars and this `ray start` line give GCS fault tolerance". The only proof
is to run exactly that configuration: this module takes the Ray container of a rendered pod (its `env` list
and its `args[0]` bash line), keeps the env verbatim, and changes only what differs between a pod network
and one machine: node IP, ports and the addresses that point at them. Everything else (storage namespace,
Redis password from a Secret, reconnect timeouts, the `--redis-password=$REDIS_PASSWORD` flag expanded by
bash) reaches Ray exactly as Kubernetes would deliver it.

How the pieces stand in for Kubernetes, and why (see shared/docs/kuberay-gcs-ft.md, section 6):

- One network namespace per tier with only `lo` up. Ray rewrites 127.0.0.1 to the host's primary address,
  which would send traffic off loopback; in a namespace with nothing but `lo` it stays on 127.0.0.1. Redis
  and every Ray node live in it.
- One PID + mount namespace per Ray node ("pod"): a restarted head otherwise sees the worker's raylet and
  refuses to start; `--mount-proc` gives each node its own /proc, a per-node directory is bind-mounted at
  /tmp/ray (the emptyDir of KubeRay's sample) and a fresh tmpfs at /dev/shm. When the node's first process
  (`ray start --block`) exits, the kernel ends everything else in it: that is the container dying.
- A driver runs through `nsenter` into the head's namespaces with the head container's env: `kubectl exec`.
- Every process is started in its own session/process group and stopped by its PID.

Nothing here knows about the webhook: it runs whatever container it is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Role = Literal["head", "worker"]
# {(secret name, key): value}: what a secretKeyRef resolves to.
Secrets = Mapping[tuple[str, str], str]

# Ray's default worker port range is 10002-19999; every fixed port we hand out stays outside it, and below
# the kernel's ephemeral range (checked per namespace), so no outgoing connection can take one of ours.
PORT_RANGE_START = 20000
# Each node gets its own slice of Ray's worker range: two raylets on one IP would otherwise hand out the same
# ports to their workers (in Kubernetes each pod has its own IP, so the split only undoes the shared IP).
WORKER_PORT_RANGES: Mapping[Role, tuple[int, int]] = {"head": (10002, 14999), "worker": (15000, 19999)}
# `ray start` prints this once all of the node's processes are up.
STARTED_MARKER = "Ray runtime started."
# Ray's default root for session dirs; a per-node directory is mounted there, as KubeRay mounts an emptyDir.
TMP_RAY = Path("/tmp/ray")
# What a raylet of Ray 2.60 logs when it has reconnected to a restarted GCS and resubscribed to its tables.
GCS_RESTART_SEEN = "The GCS has restarted. Resubscribing"
# A result line a driver script prints, so that Ray's own output on stdout cannot be mistaken for it.
RESULT_PREFIX = "REALRAY_RESULT "
# The storage-layout of GCS tables in Redis: Ray 2.60 writes one hash per table, `RAY<namespace>@<TABLE>`;
# older Ray (as in KubeRay's guide) one hash whose key is the namespace itself.
ACTOR_TABLE = "ACTOR"

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


class HarnessError(RuntimeError):
    """Setting up or driving the local cluster failed; the message says what and where the logs are."""


# --------------------------------------------------------------------------------------------------------
# Prerequisites


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


# --------------------------------------------------------------------------------------------------------
# The Kubernetes side: a rendered Ray container


@dataclass(frozen=True)
class Container:
    """The parts of a rendered pod's Ray container that decide how Ray starts: `env` and `args[0]`."""

    env: tuple[Mapping[str, Any], ...]
    command: str
    # Pod facts a fieldRef may read (metadata.name, metadata.namespace, ...).
    pod_metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> Container:
        """Read `spec.containers[0]` (KubeRay's Ray container) of a pod dict."""
        container = pod["spec"]["containers"][0]
        args = container.get("args") or []
        if not args or not isinstance(args[0], str):
            raise HarnessError("the Ray container has no args[0] command line")
        return cls(env=tuple(container.get("env") or ()), command=args[0], pod_metadata=pod.get("metadata", {}))

    def env_value(self, name: str) -> str | None:
        """The literal value of env var `name`, or None (absent or from valueFrom)."""
        for item in self.env:
            if item["name"] == name and "valueFrom" not in item:
                return str(item.get("value", ""))
        return None

    def with_env(self, name: str, value: str | None) -> Container:
        """A copy with env `name` set to `value` (None removes it): for the negative controls."""
        kept = [dict(item) for item in self.env if item["name"] != name]
        if value is not None:
            kept.append({"name": name, "value": value})
        return Container(env=tuple(kept), command=self.command, pod_metadata=self.pod_metadata)

    def without(self, env_names: Sequence[str] = (), flags: Sequence[str] = ()) -> Container:
        """A copy without the given env vars and `ray start` flags."""
        command = self.command
        for flag in flags:
            command = _remove_flag(command, flag)
        env = tuple(item for item in self.env if item["name"] not in env_names)
        return Container(env=env, command=command, pod_metadata=self.pod_metadata)


_K8S_VAR_REF = re.compile(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_.-]*)\))")


def _expand_k8s(value: str, defined: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in env values: earlier vars only; `$$` escapes; unknown refs stay."""

    def one(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        name = match.group(2)
        return defined.get(name, match.group(0))

    return _K8S_VAR_REF.sub(one, value)


def _field_ref(path: str, metadata: Mapping[str, Any]) -> str:
    """The value of a downward-API fieldRef; the pod's IPs are loopback here."""
    if path in ("status.podIP", "status.hostIP", "status.podIPs"):
        return "127.0.0.1"
    if path == "spec.nodeName":
        return "localhost"
    node: Any = {"metadata": metadata}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str(metadata.get(match.group(1), {}).get(match.group(2), ""))
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise HarnessError(f"fieldRef {path!r} is not supported by the harness")
        node = node[part]
    return str(node)


def resolve_env(container: Container, secret_values: Secrets) -> dict[str, str]:
    """The env a kubelet would hand the container: values as written, `valueFrom` resolved.

    A secretKeyRef missing from `secret_values` is an error (a kubelet would not start the container),
    unless it is marked optional.
    """
    out: dict[str, str] = {}
    for item in container.env:
        name = item["name"]
        source = item.get("valueFrom")
        if source is None:
            out[name] = _expand_k8s(str(item.get("value", "")), out)
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            key = (ref["name"], ref["key"])
            if key in secret_values:
                out[name] = secret_values[key]
            elif not ref.get("optional", False):
                raise HarnessError(f"env {name}: secret {ref['name']!r} key {ref['key']!r} is not provided")
        elif "fieldRef" in source:
            out[name] = _field_ref(source["fieldRef"]["fieldPath"], container.pod_metadata)
        else:
            raise HarnessError(f"env {name}: valueFrom {sorted(source)} is not supported by the harness")
    return out


def _flag_pattern(flag: str) -> re.Pattern[str]:
    # ` --flag=value`, ` --flag value` (value not starting with '-') or a bare ` --flag`.
    return re.compile(rf"\s{re.escape(flag)}(?:=\S*|\s+(?!-)[^\s;&|]+)?(?=\s|;|&|\||$)")


def _remove_flag(command: str, flag: str) -> str:
    return _flag_pattern(flag).sub("", command)


def _flag_value(command: str, flag: str) -> str | None:
    match = re.search(rf"\s{re.escape(flag)}=(\S+)", command)
    return match.group(1) if match else None


def _adapt_address(value: str, host_port: str) -> str:
    """Each comma-separated `[scheme://]host:port` -> `[scheme://]<host_port>`, keeping the scheme."""
    out = []
    for part in value.split(","):
        scheme, sep, _ = part.strip().rpartition("://")
        out.append(f"{scheme}{sep}{host_port}")
    return ",".join(out)


# --------------------------------------------------------------------------------------------------------
# Processes


def _popen(argv: Sequence[str], *, env: Mapping[str, str] | None, log: Path, cwd: str = "/") -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (so its process group can be stopped by its PID), output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group led by `proc` (which we started), then SIGKILL it after `grace_s`.

    Members left after the leader is gone are found by their session id (`proc` led a new session) and
    killed one by one by PID: the group number alone could, in theory, be reused once the leader is reaped.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    for pid in _session_members(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, ...); [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _session_members(sid: int) -> list[int]:
    return [pid for pid in _pids() if (f := _stat_fields(pid)) and f[0] != "Z" and int(f[3]) == sid]


def _run(argv: Sequence[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A short helper command (ip, redis-cli); bounded in time; its own session."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, start_new_session=True, check=False
    )
    if check and result.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _ns_link(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _is_running(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def _children(pid: int) -> list[int]:
    return [child for child in _pids() if (f := _stat_fields(child)) and int(f[1]) == pid]


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB; (0, 0) when it is gone. PSS splits shared pages between sharers."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return rss, pss


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for failure messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<no {path}>"
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


def wait_for(predicate: Any, timeout: float, interval: float = 0.25) -> bool:
    """Poll `predicate()` until it is true or `timeout` seconds pass; returns its last truth."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------------------------------------
# Network namespace and Redis


class NetNS:
    """A network namespace of our own with only `lo` up; removed by `delete()`.

    The name carries our PID, so a later run can remove namespaces left behind by a run that was killed.
    """

    PREFIX = "realray-"

    def __init__(self) -> None:
        self._sweep_stale()
        self.name = f"{self.PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        _run(["ip", "netns", "add", self.name])
        try:
            _run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"])
            low = int(self.exec(["cat", "/proc/sys/net/ipv4/ip_local_port_range"]).stdout.split()[0])
            if low <= PORT_RANGE_START + 1000:
                raise HarnessError(f"ephemeral ports start at {low}; the harness needs them above 21000")
        except BaseException:
            self.delete()
            raise

    @classmethod
    def _sweep_stale(cls) -> None:
        listing = _run(["ip", "netns", "list"], check=False).stdout
        for line in listing.splitlines():
            name = line.split()[0] if line.split() else ""
            match = re.fullmatch(rf"{cls.PREFIX}(\d+)-[0-9a-f]+", name)
            if match and not Path(f"/proc/{match.group(1)}").exists():
                _run(["ip", "netns", "delete", name], check=False)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this namespace (`ip netns exec` execs it: the PID stays the command's)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def exec(self, argv: Sequence[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(self.argv(argv), timeout=timeout, check=check)

    def delete(self) -> None:
        _run(["ip", "netns", "delete", self.name], check=False)


class PortAllocator:
    """Hands out distinct ports from PORT_RANGE_START up. The namespace is new and ours alone, so a port we
    have not handed out is free; the range lies below the ephemeral range and above Ray's worker range."""

    def __init__(self, start: int = PORT_RANGE_START) -> None:
        self._next = start
        self._lock = threading.Lock()

    def take(self, count: int = 1) -> list[int]:
        with self._lock:
            ports = list(range(self._next, self._next + count))
            self._next += count
        return ports


class Redis:
    """`redis-server` on 127.0.0.1 inside the namespace, with `--requirepass`, no persistence, own dir."""

    def __init__(self, netns: NetNS, workdir: Path, port: int, password: str) -> None:
        self.netns, self.port, self.password = netns, port, password
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "redis.log"
        # Options on the command line, not in a config file: the password then never sits on disk.
        self.proc = _popen(
            netns.argv([
                "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--requirepass", password,
                "--dir", str(self.dir), "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--protected-mode", "yes",
            ]),
            env=None,
            log=self.log,
        )
        if not wait_for(lambda: self._ping() or self.proc.poll() is not None, timeout=30) or self.proc.poll():
            self.stop()
            raise HarnessError("redis-server did not start\n" + tail(self.log))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cli(self, *args: str) -> list[str]:
        """Run one redis-cli command in the namespace; its output lines."""
        argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--no-auth-warning", "-a", self.password]
        result = self.netns.exec([*argv, *args], timeout=30)
        return [line for line in result.stdout.splitlines() if line]

    def _ping(self) -> bool:
        try:
            return self.cli("PING") == ["PONG"]
        except (HarnessError, subprocess.TimeoutExpired):
            return False

    def keys(self, pattern: str = "*") -> list[str]:
        return sorted(self.cli("--scan", "--pattern", pattern))

    def storage_keys(self, namespace: str) -> list[str]:
        """The keys GCS wrote for storage namespace `namespace`, in either layout (see ACTOR_TABLE)."""
        return [k for k in self.keys() if k == namespace or k.startswith(f"RAY{namespace}@")]

    def actor_table_size(self, namespace: str) -> int:
        """Entries in the namespace's actor table (Ray 2.60 layout; 0 when absent)."""
        out = self.cli("HLEN", f"RAY{namespace}@{ACTOR_TABLE}")
        return int(out[0]) if out and out[0].isdigit() else 0

    def stop(self) -> None:
        _stop_group(self.proc)


# --------------------------------------------------------------------------------------------------------
# Ray nodes


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
        command = _remove_flag(command, flag)
    low, high = WORKER_PORT_RANGES[role]
    flags = ["--node-ip-address=127.0.0.1"]
    if role == "worker":
        flags.append(f"--address=127.0.0.1:{head_gcs_port}")
    flags += [f"{name}={port}" for name, port in ports.flags.items()]
    flags += [f"--min-worker-port={low}", f"--max-worker-port={high}", f"--num-cpus={num_cpus}"]
    match = _RAY_START.search(command)
    assert match is not None
    return command[: match.end()] + "".join(f" {f}" for f in flags) + command[match.end():]


def adapt_env(env: Mapping[str, str], role: Role, head_gcs_port: int, redis_address: str | None) -> dict[str, str]:
    """The resolved env with only address values pointed at this machine; every other value verbatim."""
    out = dict(env)
    for name, value in env.items():
        if name == "RAY_REDIS_ADDRESS":
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


@dataclass
class DriverResult:
    """What a driver run inside the head printed: its exit code, the RESULT_PREFIX line parsed, the log."""

    returncode: int
    result: dict[str, Any] | None
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result is not None and "error" not in self.result


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
    ) -> None:
        self.name, self.role, self.container = name, role, container
        self.netns, self.ports, self.head_gcs_port, self.num_cpus = netns, ports, head_gcs_port, num_cpus
        self.secret_values, self.redis_address = secret_values, redis_address
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
        self.env = {**image_env(self.home), **adapt_env(resolved, self.role, self.head_gcs_port, self.redis_address)}
        self.command = adapt_command(self.container.command, self.role, self.ports, self.head_gcs_port, self.num_cpus)
        self.starts += 1
        self.log.write_text(f"# {self.name} start {self.starts}\n# command: {self.command}\n")
        argv = self.netns.argv([
            "unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
            "bash", "-c", _POD_SHELL, "pod-shell", str(self.ray_dir), self.command,
        ])
        self.proc = _popen(argv, env=self.env, log=self.log)
        proc = self.proc

        def found_init() -> bool:
            kids = _children(proc.pid)
            if kids:
                self.init_pid = kids[0]
                self._pidns = _ns_link(kids[0], "pid")
            return bool(kids) or proc.poll() is not None

        wait_for(found_init, timeout=30, interval=0.05)
        if self.init_pid is None:
            raise HarnessError(f"{self.name}: no process in the new PID namespace\n" + tail(self.log))

    def wait_ready(self, timeout: float) -> float:
        """Block until `ray start` reports the node up; seconds waited. Raises if it exits or times out."""
        t0 = time.monotonic()

        def ready() -> bool:
            if STARTED_MARKER in self.log.read_text(errors="replace"):
                return True
            if not self.running():
                raise HarnessError(f"{self.name} exited before it was up\n" + tail(self.log))
            return False

        if not wait_for(ready, timeout=timeout, interval=0.25):
            raise HarnessError(f"{self.name} not up after {timeout:.0f}s\n" + tail(self.log))
        return time.monotonic() - t0

    def running(self) -> bool:
        """True while the node's `unshare` (and so its PID namespace) is alive."""
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """Host PIDs of the processes in this node's PID namespace."""
        if self._pidns is None or not self.running():
            return []
        return [pid for pid in _pids() if _ns_link(pid, "pid") == self._pidns and _is_running(pid)]

    def find(self, comm: str) -> list[int]:
        """Host PIDs of this node's processes named `comm` (as `pgrep` inside the pod would find them)."""
        return [pid for pid in self.pids() if _comm(pid) == comm]

    def kill_process(self, comm: str, sig: signal.Signals = signal.SIGTERM) -> list[int]:
        """Signal only this node's processes named `comm` (`kubectl exec ... pkill gcs_server`)."""
        pids = self.find(comm)
        if not pids:
            raise HarnessError(f"{self.name}: no {comm} process\n" + tail(self.log))
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
            _stop_group(self.proc, grace_s=grace_s)
        self.init_pid = None


def driver_script(body: str) -> str:
    """A driver program: `body` runs after `ray.init(namespace="default_namespace")`, like the guide's
    scripts, and calls `result(dict)`; an exception becomes `{"error": ...}`. Runs with the head's env, so
    `ray.init()` finds the cluster through RAY_ADDRESS exactly as in `kubectl exec`."""
    return (
        "import json, sys, time\n"
        "import ray\n"
        f"def result(d):\n    print({RESULT_PREFIX!r} + json.dumps(d), flush=True)\n"
        "try:\n"
        '    ray.init(namespace="default_namespace")\n'
        + "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
        + "except Exception as e:\n"
        '    result({"error": f"{type(e).__name__}: {e}"})\n'
        "    sys.exit(1)\n"
    )


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
    ) -> None:
        self.tier, self.name = tier, name
        self.dir = tier.workdir / name
        head_ports = allocate_node_ports(tier.ports, "head")
        common: dict[str, Any] = {
            "netns": tier.netns,
            "workdir": self.dir,
            "head_gcs_port": head_ports.gcs,
            "secret_values": secret_values,
            "redis_address": tier.redis.address if tier.redis else None,
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
            raise HarnessError("the head is not running\n" + tail(self.head.log))
        self.drivers += 1
        log = self.dir / f"driver-{self.drivers}.log"
        argv = [
            "nsenter", f"--target={self.head.init_pid}", "--net", "--pid", "--mount", f"--wd={self.head.home}",
            str(ray_bin_dir() / "python"), "-c", driver_script(body),
        ]
        proc = _popen(argv, env=self.head.env, log=log)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc, grace_s=5)
            return DriverResult(returncode=-1, result={"error": f"driver timed out after {timeout}s"}, log=log)
        finally:
            _stop_group(proc, grace_s=5)
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
        return wait_for(lambda: GCS_RESTART_SEEN in self.worker.ray_log("raylet.out"), timeout=timeout)

    def diagnostics(self) -> str:
        """Tails of every log of this cluster, for assertion messages."""
        logs = sorted(self.dir.rglob("*.log"))
        raylet_logs = sorted(self.dir.rglob("raylet.out"))
        return "\n".join(tail(p, 25) for p in [*logs, *raylet_logs])

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
        for pid in _pids():
            if pid == me or (self._link is not None and _ns_link(pid, "net") == self._link):
                rss, pss = _memory_kib(pid)
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
