"""The one set of process helpers: start a command in a session of its own, wait until something is true
within a bounded time, stop a process (and what it left behind) by PID, and read /proc.

Every process the tests, the benchmark and the demo start leads its own session, so it and its children can
be stopped by its PID without touching anything else on the machine. Linux only (/proc), which is where
all of them run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class WaitTimeout(AssertionError):
    """A `wait_until` ran out of time; the message says what was awaited and the last thing seen."""


class CommandFailed(RuntimeError):
    """A short helper command (`run`) exited non-zero; the message carries its stderr."""


def start(argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
          cwd: str | Path | None = None) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, stdin closed, stdout and stderr appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(list(argv), env=dict(env) if env is not None else None, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def run(argv: Sequence[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A short helper command, bounded in time, in its own session; `CommandFailed` if `check` and it fails."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, start_new_session=True,
                            check=False)
    if check and result.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def wait_until(what: str, check: Callable[[], T], timeout: float = 30, interval: float = 0.2,
               ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call `check()` until it returns something truthy and return that; an exception of a type in `ignore`
    counts as "not yet". After `timeout` seconds raise `WaitTimeout` naming `what` and the last result."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20, group: bool = False) -> int | None:
    """Stop a process started in its own session; returns its exit code.

    SIGTERM to the process (to its whole process group with `group`), SIGKILL to the group after `timeout`,
    then SIGKILL, one by one by PID, to anything still in its session (found through /proc: the group number
    alone could be reused once the leader is reaped).
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    for pid in session_members(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return proc.returncode


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, headed by its path, for failure messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<no {path}>"
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


# -- /proc ------------------------------------------------------------------------------------------------


def pids() -> Iterator[int]:
    """Every PID on the machine (in our PID namespace)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, ...); [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def is_running(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    fields = stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def children(pid: int) -> list[int]:
    """The direct children of `pid`."""
    return [child for child in pids() if (f := stat_fields(child)) and int(f[1]) == pid]


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, `pid` first."""
    tree: dict[int, list[int]] = {}
    for child in pids():
        if fields := stat_fields(child):
            tree.setdefault(int(fields[1]), []).append(child)
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(tree.get(current, []))
    return out


def session_members(sid: int) -> list[int]:
    """The live processes of session `sid`."""
    return [pid for pid in pids() if (f := stat_fields(pid)) and f[0] != "Z" and int(f[3]) == sid]


def comm(pid: int) -> str:
    """The process's command name (/proc/PID/comm); "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    """The process's arguments; [] when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def ns_link(pid: int, kind: str) -> str | None:
    """The namespace a process is in (`net:[4026531992]`), for `kind` net, pid, mnt, ...; None when gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (`{"VmRSS": "1234 kB", "Uid": "0 0 0 0", ...}`); {} when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def status_kib(pid: int, key: str) -> int:
    """A size from /proc/PID/status in KiB (`VmRSS`, `VmHWM` = peak RSS, ...); 0 when gone or absent."""
    value = status(pid).get(key, "")
    return int(value.split()[0]) if value else 0


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB from smaps_rollup; (0, 0) when it is gone. PSS splits shared pages
    between the processes sharing them, so PSS sums over many processes do not count them twice."""
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


def cpu_seconds(pids_: Sequence[int]) -> float:
    """utime + stime of the live processes `pids_`, in seconds."""
    ticks = 0
    for pid in pids_:
        if len(fields := stat_fields(pid)) > 12:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process `pid` holds open."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _tcp4() -> Iterator[tuple[int, int, str, int]]:
    """(local port, remote port, state in hex, inode) of every IPv4 TCP socket in our network namespace."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        yield int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16), fields[3], int(fields[9])


def listening(pid: int, port: int) -> bool:
    """True when process `pid` holds a socket listening on TCP `port` (IPv4)."""
    mine = _socket_inodes(pid)
    return any(local == port and state == "0A" and inode in mine for local, _, state, inode in _tcp4())


def connection_owner(server_port: int, client_port: int, candidates: Sequence[int]) -> int | None:
    """Which of `candidates` holds the server end of the TCP connection from `client_port` to `server_port`
    (with SO_REUSEPORT, any of the listening processes may have accepted it); None if none does (yet)."""
    inodes = {inode for local, remote, _, inode in _tcp4() if local == server_port and remote == client_port}
    for pid in candidates:
        if inodes & _socket_inodes(pid):
            return pid
    return None


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_script(script: Path, args: Sequence[str]) -> str:
    """Run a hack/ build script through bash in its own session and return its stdout; its progress passes
    through on stderr. On an interrupt the script gets SIGTERM by PID (it then stops its build's process
    group); a non-zero exit raises `CommandFailed`."""
    proc = subprocess.Popen(["bash", str(script), *args], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise CommandFailed(f"{script.name} {' '.join(args)} failed with exit code {proc.returncode} (see stderr)")
    return out
