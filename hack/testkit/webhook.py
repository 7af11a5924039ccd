"""The webhook under test as a real process: certificates for it, `ray-ft-webhook serve` started on
127.0.0.1 and a free port (ready once /readyz answers), stopped by PID, and its Mutating- and
ValidatingWebhookConfiguration from manifests/ pointed at it (url + caBundle)."""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from testkit import processes
from testkit.paths import MANIFESTS
from webhook.certs import generate as certs

WEBHOOK_NAMESPACE = "ray-ft-webhook"
# The admin defaults the e2e and KubeRay tiers run the webhook with (so "our annotations with admin defaults"
# can be shown); tests/e2e/test_admission_e2e.admin_settings() is the same as Settings.
ADMIN_ARGS = ["--default-redis-address", "redis.ray-system:6379", "--default-redis-password-secret", "redis-admin/pw"]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free on 127.0.0.1 a moment ago (all bound at once, so no repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def make_certs(folder: Path, ips: Sequence[str] = ("127.0.0.1",)) -> Path:
    """CA and serving certificate (localhost and `ips`) as ca.crt, tls.crt, tls.key in `folder`; the CA path."""
    ca = certs.generate_ca()
    serving = certs.generate_leaf(ca, ["localhost"], list(ips))
    certs.write_serving_set(folder, ca, serving)
    return folder / "ca.crt"


def manifest(path: str) -> list[dict[str, Any]]:
    """The documents of manifests/`path`."""
    return [d for d in yaml.safe_load_all((MANIFESTS / path).read_text()) if d]


PODS_HOOK = "pods.ray-ft-webhook.io"


def webhook_configuration(base_url: str, ca_pem: bytes, only: str | None = None) -> dict[str, Any]:
    """manifests/base's MutatingWebhookConfiguration with each webhook's clientConfig switched to `base_url` + its
    service path, and a caBundle; `only`: keep that webhook alone (e.g. PODS_HOOK)."""
    (mwc,) = manifest("base/mutatingwebhookconfiguration.yaml")
    mwc = copy.deepcopy(mwc)
    mwc["webhooks"] = [hook for hook in mwc["webhooks"] if only is None or hook["name"] == only]
    for hook in mwc["webhooks"]:
        hook["clientConfig"] = {"url": base_url + hook["clientConfig"]["service"]["path"],
                                "caBundle": certs.ca_bundle(ca_pem)}
    return mwc


def validating_configuration(url: str, ca_pem: bytes, name: str | None = None,
                             only_namespaces_labelled: str | None = None) -> dict[str, Any]:
    """manifests/base's ValidatingWebhookConfiguration with clientConfig switched to url + caBundle; optionally
    renamed and limited to namespaces carrying the label `only_namespaces_labelled` (so a tier can keep
    `/validate` away from tests that create RayClusters it would deny)."""
    (vwc,) = manifest("base/validatingwebhookconfiguration.yaml")
    vwc = copy.deepcopy(vwc)
    if name is not None:
        vwc["metadata"]["name"] = name
    for hook in vwc["webhooks"]:
        hook["clientConfig"] = {"url": url, "caBundle": certs.ca_bundle(ca_pem)}
        if only_namespaces_labelled is not None:
            hook["namespaceSelector"]["matchExpressions"].append(
                {"key": only_namespaces_labelled, "operator": "Exists"})
    return vwc


@dataclass
class WebhookProcess:
    """A running `serve`: its process, port, the CA that signed its certificate and its log."""

    proc: subprocess.Popen[bytes]
    port: int
    ca: Path
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        verify = ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(base_url=self.url, verify=verify, trust_env=False, timeout=10, **kwargs)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        return processes.stop_process(self.proc, timeout)


def start_webhook(workdir: Path, args: Sequence[str], env: dict[str, str] | None = None,
                  ready_timeout: float = 30, port: int | None = None, name: str | None = None) -> WebhookProcess:
    """Run `python -m webhook serve` with TLS files from `workdir` (made if missing) and wait for /readyz.

    With `--reuse-port` in `args` another process may answer on the port, so this one is ready once it listens
    on the port itself (and /readyz answers). `name` tells the log file apart from other processes' on the port.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ca = workdir / "ca.crt"
    if not ca.exists():
        make_certs(workdir)
    port = port or free_port()
    shared = "--reuse-port" in args
    log = workdir / f"webhook-{port}{'-' + name if name else ''}.log"
    cmd = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--tls-cert", str(workdir / "tls.crt"), "--tls-key", str(workdir / "tls.key"), *args]
    proc = processes.start(cmd, log=log, env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", **(env or {})})
    hook = WebhookProcess(proc, port, ca, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"webhook exited with {proc.returncode}:\n{hook.logs()}")
        if shared and not processes.listening(proc.pid, port):
            return False
        return client.get("/readyz").status_code == 200

    with hook.client() as client:
        try:
            processes.wait_until(f"the webhook's /readyz on port {port}", ready, ready_timeout, interval=0.1,
                                 ignore=(httpx.TransportError,))
        except processes.WaitTimeout as exc:
            hook.stop()
            raise RuntimeError(f"{exc}\n{hook.logs()}") from None
    return hook


class Webhook:
    """The webhook process of a tier; restartable on the same port (the registered URL stays valid)."""

    def __init__(self, workdir: Path, args: list[str]) -> None:
        self.workdir, self.args = workdir, args
        self.process: WebhookProcess | None = None
        make_certs(workdir)
        self.port: int | None = None

    def start(self) -> WebhookProcess:
        self.process = start_webhook(self.workdir, self.args, port=self.port)
        self.port = self.process.port
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    @property
    def ca_pem(self) -> bytes:
        return (self.workdir / "ca.crt").read_bytes()

    def configuration(self) -> dict[str, Any]:
        """manifests/base's MutatingWebhookConfiguration pointed at this process."""
        return webhook_configuration(f"https://127.0.0.1:{self.port}", self.ca_pem)

    def validating_configuration(self, **kwargs: Any) -> dict[str, Any]:
        """manifests/base's ValidatingWebhookConfiguration pointed at this process (see `validating_configuration`)."""
        return validating_configuration(f"https://127.0.0.1:{self.port}/validate", self.ca_pem, **kwargs)

    def metric(self, name: str) -> float:
        """The sum of every sample of /metrics whose line starts with `name`."""
        return metric_sum(self._metrics_text(), name)

    def _metrics_text(self) -> str:
        assert self.process is not None
        with self.process.client() as c:
            return c.get("/metrics").text

    def cache_stats(self) -> CacheStats:
        """The RayCluster cache's counters, from one read of /metrics."""
        text = self._metrics_text()
        return CacheStats(*(metric_sum(text, name) for name in (CACHE_HITS, CACHE_MISSES, FALLBACK_GETS, CACHED)))

    def wait_cached(self, held: Callable[[], int], what: str, timeout: float = 20) -> CacheStats:
        """Wait until the cache holds as many RayClusters (`ray_ft_webhook_rayclusters_cached`) as `held()`
        says the apiserver holds: the watch has delivered `what`. Call it before any pod of `what` is admitted,
        so that no fallback GET can have put it there. Fails with the cache's counters otherwise."""
        last: list[tuple[CacheStats, int]] = []

        def synced() -> CacheStats | None:
            last[:] = [(stats := self.cache_stats(), expected := held())]
            return stats if stats.cached == expected else None

        try:
            return processes.wait_until(f"the webhook's watch to deliver {what}", synced, timeout)
        except processes.WaitTimeout:
            stats, expected = last[0]
            raise AssertionError(
                f"the watch did not deliver {what} within {timeout:g} s: the cache holds {stats.cached:g} "
                f"RayClusters, the apiserver {expected} ({stats}); the webhook's log ends:\n"
                f"{self.process.logs()[-3000:] if self.process else ''}") from None


# The RayCluster cache's series (webhook/admission/metrics.py).
CACHE_HITS = 'ray_ft_webhook_raycluster_cache_total{result="hit"}'
CACHE_MISSES = 'ray_ft_webhook_raycluster_cache_total{result="miss"}'
FALLBACK_GETS = "ray_ft_webhook_raycluster_fallback_gets_total"  # every result
CACHED = "ray_ft_webhook_rayclusters_cached"


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample of a /metrics text whose line starts with `name`."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@dataclass(frozen=True)
class CacheStats:
    """Cache lookups by result, direct GETs after a miss, and RayClusters held, of one webhook process."""

    hits: float
    misses: float
    fallback_gets: float
    cached: float

    def __sub__(self, before: CacheStats) -> CacheStats:
        return CacheStats(self.hits - before.hits, self.misses - before.misses,
                          self.fallback_gets - before.fallback_gets, self.cached - before.cached)
