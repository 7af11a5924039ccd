"""The tier's network: a network namespace of its own with only `lo` up, and the fixed ports handed out in it.

Ray rewrites 127.0.0.1 to the host's primary address, which would send traffic off loopback; in a namespace
with nothing but `lo` it stays on 127.0.0.1. Redis and every Ray node live in it.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from testkit import processes

from .container import HarnessError

# Ray's default worker port range is 10002-19999; every fixed port we hand out stays outside it, and below
# the kernel's ephemeral range (checked per namespace), so no outgoing connection can take one of ours.
PORT_RANGE_START = 20000


class NetNS:
    """A network namespace of our own with only `lo` up; removed by `delete()`.

    The name carries our PID, so a later run can remove namespaces left behind by a run that was killed.
    """

    PREFIX = "realray-"

    def __init__(self) -> None:
        self._sweep_stale()
        self.name = f"{self.PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        processes.run(["ip", "netns", "add", self.name])
        try:
            processes.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"])
            low = int(self.exec(["cat", "/proc/sys/net/ipv4/ip_local_port_range"]).stdout.split()[0])
            if low <= PORT_RANGE_START + 1000:
                raise HarnessError(f"ephemeral ports start at {low}; the harness needs them above 21000")
        except BaseException:
            self.delete()
            raise

    @classmethod
    def _sweep_stale(cls) -> None:
        listing = processes.run(["ip", "netns", "list"], check=False).stdout
        for line in listing.splitlines():
            name = line.split()[0] if line.split() else ""
            match = re.fullmatch(rf"{cls.PREFIX}(\d+)-[0-9a-f]+", name)
            if match and not Path(f"/proc/{match.group(1)}").exists():
                processes.run(["ip", "netns", "delete", name], check=False)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this namespace (`ip netns exec` execs it: the PID stays the command's)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def exec(self, argv: Sequence[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
        return processes.run(self.argv(argv), timeout=timeout, check=check)

    def delete(self) -> None:
        processes.run(["ip", "netns", "delete", self.name], check=False)


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

