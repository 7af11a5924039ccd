"""Start the real `ray-ft-webhook serve` in a subprocess on 127.0.0.1 and a free port, stop it by PID."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from webhook.certs import generate as certs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """Stop a process started in its own session: SIGTERM, then SIGKILL to its group after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def make_certs(folder: Path, ips: Sequence[str] = ("127.0.0.1",)) -> Path:
    """CA and serving certificate for 127.0.0.1 in `folder`; returns the CA path."""
    ca = certs.generate_ca()
    serving = certs.generate_leaf(ca, ["localhost"], list(ips))
    certs.write_serving_set(folder, ca, serving)
    return folder / "ca.crt"


@dataclass
class WebhookProcess:
    proc: subprocess.Popen[bytes]
    port: int
    ca: Path
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> httpx.Client:
        verify = ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(base_url=self.url, verify=verify, trust_env=False, timeout=10, **kwargs)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        return stop_process(self.proc, timeout)


def start_webhook(workdir: Path, args: Sequence[str], env: dict[str, str] | None = None,
                  ready_timeout: float = 30, port: int | None = None) -> WebhookProcess:
    """Run `python -m webhook serve` with TLS files from `workdir` (made if missing) and wait for /readyz."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca = workdir / "ca.crt"
    if not ca.exists():
        make_certs(workdir)
    port = port or free_port()
    log = workdir / f"webhook-{port}.log"
    cmd = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--tls-cert", str(workdir / "tls.crt"), "--tls-key", str(workdir / "tls.key"), *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", **(env or {})})
    hook = WebhookProcess(proc, port, ca, log)
    deadline = time.monotonic() + ready_timeout
    with hook.client() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"webhook exited with {proc.returncode}:\n{hook.logs()}")
            try:
                if client.get("/readyz").status_code == 200:
                    return hook
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    hook.stop()
    raise RuntimeError(f"webhook not ready after {ready_timeout}s:\n{hook.logs()}")
