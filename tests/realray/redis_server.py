"""The tier's Redis: `redis-server` on 127.0.0.1 inside the namespace with a password (optionally TLS only,
with client certificates, and an ACL user instead of the `default` one), and the reads the tests make of what
GCS stored in it."""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testkit import processes

from .container import HarnessError
from .netns import NetNS

# The storage-layout of GCS tables in Redis: Ray 2.60 writes one hash per table, `RAY<namespace>@<TABLE>`;
# older Ray (as in KubeRay's guide) one hash whose key is the namespace itself.
ACTOR_TABLE = "ACTOR"


@dataclass(frozen=True)
class RedisTls:
    """Files of a TLS-only Redis: its certificate and key, the CA it checks client certificates against
    (`auth_clients`: `--tls-auth-clients yes`, else no), and the CA + client certificate its own `redis-cli`
    uses."""

    cert: Path
    key: Path
    client_ca: Path
    auth_clients: bool
    cli_ca: Path
    cli_cert: Path
    cli_key: Path

    def server_args(self, port: int) -> list[str]:
        return [
            "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.client_ca),
            "--tls-auth-clients", "yes" if self.auth_clients else "no",
        ]

    def cli_args(self) -> list[str]:
        return ["--tls", "--cacert", str(self.cli_ca), "--cert", str(self.cli_cert), "--key", str(self.cli_key)]


class Redis:
    """`redis-server` on 127.0.0.1 inside the namespace, with `--requirepass`, no persistence, own dir.

    `tls`: TLS only (`--port 0 --tls-port`). `username`: the `default` user is disabled and `username` is
    the only user, with `password` and every right (`~* &* +@all`); the tests' `redis-cli` logs in as it.
    """

    def __init__(self, netns: NetNS, workdir: Path, port: int, password: str, *, name: str = "redis",
                 tls: RedisTls | None = None, username: str | None = None) -> None:
        self.netns, self.port, self.password = netns, port, password
        self.tls, self.username = tls, username
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "redis.log"
        listen = tls.server_args(port) if tls else ["--port", str(port)]
        users = (["--user", "default", "off", "--user", username, "on", f">{password}", "~*", "&*", "+@all"]
                 if username else ["--requirepass", password])
        # Options on the command line, not in a config file: the password then never sits on disk.
        self.proc = processes.start(
            netns.argv([
                "redis-server", "--bind", "127.0.0.1", *listen, *users,
                "--dir", str(self.dir), "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--protected-mode", "yes",
            ]),
            env=None,
            log=self.log,
            cwd="/",
        )
        with contextlib.suppress(processes.WaitTimeout):
            processes.wait_until("redis-server to answer PING", lambda: self._ping() or self.proc.poll() is not None,
                                 30, interval=0.25)
        if self.proc.poll() is not None or not self._ping():
            self.stop()
            raise HarnessError("redis-server did not start\n" + processes.tail(self.log))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cli(self, *args: str) -> list[str]:
        """Run one redis-cli command in the namespace; its output lines."""
        argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--no-auth-warning", "-a", self.password]
        argv += ["--user", self.username] if self.username else []
        argv += self.tls.cli_args() if self.tls else []
        result = self.netns.exec([*argv, *args], timeout=30)
        return [line for line in result.stdout.splitlines() if line]

    def _ping(self) -> bool:
        try:
            return self.cli("PING") == ["PONG"]
        except (processes.CommandFailed, subprocess.TimeoutExpired):
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
        processes.stop_process(self.proc, 10, group=True)

