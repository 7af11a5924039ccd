"""Continuous pod creation through the real kube-apiserver, every admission's result checked (the faults tier).

`PodLoad` creates KubeRay head and worker pods at a steady rate from a few threads (server-side dry runs by
default: the whole admission chain runs, nothing is stored) until stopped or its own time limit. Each answer is
classified against what the webhook must have done to that pod, computed offline by `render` (the very code
the server runs) from the stored RayCluster:

- `ok`: created, with exactly the expected FT env entries, FT annotations and `ray start` line;
- `untouched`: created exactly as submitted (failurePolicy Ignore with the webhook down);
- `wrong`: created, but neither (a partial or wrong injection: never acceptable);
- `failed`: refused by the apiserver for the webhook's sake ("failed calling webhook", a denial, ...);
- `unavailable`: the apiserver itself did not answer (down, starting, shutting down).
"""

from __future__ import annotations

import copy
import itertools
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from testkit import kuberay_pods
from webhook.cli.render import render
from webhook.core.settings import Settings

OK, UNTOUCHED, WRONG, FAILED, UNAVAILABLE = "ok", "untouched", "wrong", "failed", "unavailable"
FT_ENV = ("RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "REDIS_USERNAME", "RAY_external_storage_namespace",
          "RAY_gcs_rpc_server_reconnect_timeout_s")
FT_ANNOTATIONS = ("ray.io/ft-enabled", "ray.io/external-storage-namespace", "ray-ft-webhook.io/injected")


def ft_view(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What the webhook may change in a pod: FT env entries of the Ray container (in order), FT annotations,
    the container's args (the `ray start` line)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    container = pod["spec"]["containers"][0]
    return {
        "env": [e for e in container.get("env") or [] if e.get("name") in FT_ENV],
        "annotations": {k: v for k, v in annotations.items() if k in FT_ANNOTATIONS},
        "args": container.get("args"),
    }


@dataclass(frozen=True)
class Target:
    """One pod to create over and over, and what the answer must look like."""

    namespace: str
    name: str
    body: bytes
    expected: dict[str, Any]
    untouched: dict[str, Any]


def target(raycluster: Mapping[str, Any], role: str, settings: Settings, *, store: bool = False,
           labels: Mapping[str, str] | None = None) -> Target:
    """The `role` pod KubeRay makes for the stored `raycluster` (its uid set). Dry runs reuse one name;
    `store` gives it a generateName instead, so real creates do not collide."""
    rc = copy.deepcopy(dict(raycluster))
    pod = kuberay_pods.pod(rc, role)
    pod["metadata"]["labels"].update(labels or {})
    pod["metadata"].pop("name" if store else "generateName")
    rendered = render(rc, pod, settings)
    if rendered.denied or rendered.skipped or not rendered.patch:
        raise AssertionError(f"{role} of {rc['metadata']['name']} would not be patched: {rendered}")
    return Target(rc["metadata"]["namespace"], f"{rc['metadata']['name']}/{role}", orjson.dumps(pod),
                  ft_view(rendered.pod), ft_view(pod))


@dataclass(frozen=True)
class Result:
    start: float  # time.monotonic() when sent
    end: float
    kind: str
    target: str
    detail: str = ""


def classify(status: int, body: bytes, want: Target) -> tuple[str, str]:
    if status == 201:
        view = ft_view(orjson.loads(body))
        if view == want.expected:
            return OK, ""
        if view == want.untouched:
            return UNTOUCHED, ""
        return WRONG, orjson.dumps({"got": view, "expected": want.expected}).decode()[:2000]
    try:
        message = str(orjson.loads(body).get("message", ""))
    except (orjson.JSONDecodeError, AttributeError):
        message = body[:300].decode(errors="replace")
    kind = FAILED if "webhook" in message or status in (400, 403) else UNAVAILABLE
    return kind, f"HTTP {status}: {message[:300]}"


class PodLoad:
    """`rate` pod creates per second, round-robin over `targets`, from `threads` threads, each with its own
    keep-alive connection; stops on `stop()`, after `limit_s` seconds or `max_requests`, whichever comes first."""

    def __init__(self, url: str, ca_pem: bytes, client_cert: tuple[Path, Path], targets: Sequence[Target], *,
                 rate: float = 20.0, threads: int = 4, store: bool = False, timeout_s: float = 15.0,
                 limit_s: float = 300.0) -> None:
        self.url, self.targets, self.rate, self.store = url, list(targets), rate, store
        self._tls = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
        self._tls.load_cert_chain(*client_cert)
        self._threads_n, self._timeout_s, self._limit_s = threads, timeout_s, limit_s
        self._max = int(rate * limit_s)
        self._ticks = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.results: list[Result] = []
        self.t0 = 0.0

    def __enter__(self) -> PodLoad:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.t0 = time.monotonic()
        for n in range(self._threads_n):
            thread = threading.Thread(target=self._run, name=f"podload-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> list[Result]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self._timeout_s + 5)
        return self.results

    def between(self, begin: float = 0.0, end: float = float("inf")) -> list[Result]:
        """The results of requests sent in [begin, end)."""
        with self._lock:
            return [r for r in self.results if begin <= r.start < end]

    def _run(self) -> None:
        suffix = "?dryRun=All" if not self.store else ""
        with httpx.Client(base_url=self.url, verify=self._tls, trust_env=False, timeout=self._timeout_s) as http:
            while not self._stop.is_set():
                tick = next(self._ticks)
                due = self.t0 + tick / self.rate
                if tick >= self._max or due - self.t0 > self._limit_s:
                    return
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                want = self.targets[tick % len(self.targets)]
                start = time.monotonic()
                try:
                    resp = http.post(f"/api/v1/namespaces/{want.namespace}/pods{suffix}", content=want.body,
                                     headers={"Content-Type": "application/json"})
                    kind, detail = classify(resp.status_code, resp.content, want)
                except httpx.TransportError as exc:
                    kind, detail = UNAVAILABLE, f"{type(exc).__name__}: {exc}"[:300]
                with self._lock:
                    self.results.append(Result(start, time.monotonic(), kind, want.name, detail))


def count(results: Iterable[Result]) -> Counter[str]:
    return Counter(r.kind for r in results)


def first(results: Sequence[Result], kind: str, after: float) -> Result | None:
    """The earliest result of `kind` sent at or after `after`."""
    return min((r for r in results if r.kind == kind and r.start >= after), key=lambda r: r.start, default=None)
