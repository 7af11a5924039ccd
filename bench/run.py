"""`make bench`: ray-ft-webhook side by side with the ceiling and its peers, in one run, on this machine.

Every server runs pinned to core 0 (`taskset -c 0`), the Go load generator to core 1, over TLS (the same
ECDSA P-256 certificate) with keep-alive, sending the AdmissionReviews of bench/workload.py. Servers:

    ceiling  bench/ceiling.py: bare uvicorn + raw ASGI, echoes the uid (no logic)
    ours     python -m webhook serve --rayclusters-from DIR (warm cache)
    kopf     bench/kopf_webhook.py: @kopf.on.mutate around the same decision (needs the local control plane)
    go       bench/crwebhook: controller-runtime's webhook.Server + admission.Webhook, same injection in Go

Per server: open loop at --rate req/s and closed loop at the maximum with --conns connections; server CPU
time per request (utime+stime of its process tree from /proc) and RSS. Then the extra sections: (a) cold
path against the local kube-apiserver, (b) pod size, (c) RayClusters cached, (d) API calls per admission
from /metrics, (e) --workers 1 vs 2, (f) Events on vs off (head pods against the local kube-apiserver). Every load
loop is bounded in count and time.

    .venv/bin/python bench/run.py                 # everything (about 8 minutes)
    .venv/bin/python bench/run.py --only main     # sections: main,sizes,clusters,cold,events,workers,profile
    .venv/bin/python bench/run.py --quick         # short runs, to check the harness

The report (markdown) goes to stdout and to build/bench/report.md, the raw numbers to build/bench/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "hack"), str(REPO / "bench")]

import base64  # noqa: E402
import copy  # noqa: E402

import httpx  # noqa: E402
import jsonpatch  # noqa: E402
import orjson  # noqa: E402
import workload  # noqa: E402

from testkit import processes  # noqa: E402
from testkit.webhook import free_port, make_certs  # noqa: E402

PY = sys.executable
SERVER_CPU, CLIENT_CPU = "0", "1"
OUT = REPO / "build" / "bench"
SECTIONS = ("main", "sizes", "clusters", "cold", "events", "workers", "profile")
SIZES = {"1 KB": 1024, "10 KB": 10 * 1024, "100 KB": 100 * 1024, "1 MB": 1024 * 1024}
CLUSTER_COUNTS = (10, 100, 1_000, 10_000)
ADMIN_FLAGS = ["--default-redis-address", workload.DEFAULT_REDIS_ADDRESS,
               "--default-redis-password-secret", workload.DEFAULT_REDIS_PASSWORD_SECRET]


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- processes --------------------------------------------------------------------------------------------

def memory_mb(pids: list[int]) -> tuple[float, float]:
    """Summed VmRSS and VmHWM (peak) of `pids`, in MB."""
    rss = sum(processes.status_kib(pid, "VmRSS") for pid in pids)
    hwm = sum(processes.status_kib(pid, "VmHWM") for pid in pids)
    return rss / 1024, hwm / 1024


@dataclass
class Server:
    """A server under test, in its own session (process group), stopped by its PID."""

    name: str
    cmd: list[str]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cpus: str = SERVER_CPU
    cwd: Path = REPO
    proc: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    def start(self, ca: Path, timeout: float = 120) -> Server:
        began = time.monotonic()
        self.log.unlink(missing_ok=True)
        proc = self.proc = processes.start(["taskset", "-c", self.cpus, *self.cmd], log=self.log, cwd=self.cwd,
                                           env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", **self.env})
        ready = workload.review({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ready", "namespace": "x"},
                                 "spec": {"containers": [{"name": "c"}]}}, "ready")
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), trust_env=False, timeout=5) as client:
            def answers() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {proc.returncode}:\n{self.log.read_text()[-3000:]}")
                return client.post(self.url, json=ready).status_code == 200

            try:
                processes.wait_until(f"{self.name} to answer", answers, timeout, interval=0.1,
                                     ignore=(httpx.HTTPError,))
            except processes.WaitTimeout as exc:
                self.stop()
                raise RuntimeError(f"{exc}\n{self.log.read_text()[-3000:]}") from None
        self.started_s = time.monotonic() - began
        return self

    def pids(self) -> list[int]:
        assert self.proc is not None
        return processes.process_tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop_process(self.proc)


@contextlib.contextmanager
def running(server: Server, ca: Path) -> Iterator[Server]:
    server.start(ca)
    try:
        yield server
    finally:
        server.stop()


# -- load -----------------------------------------------------------------------------------------------

@dataclass
class Bench:
    bin_dir: Path
    work: Path
    ca: Path
    duration_s: float
    warmup_s: float
    rate: float
    conns: int
    results: dict[str, Any] = field(default_factory=dict)

    def load(self, server: Server, bodies: Path, mode: str, conns: int | None = None, duration_s: float | None = None,
             requests: int = 1_000_000, cpus: str = CLIENT_CPU, rate: float | None = None) -> dict[str, Any]:
        """One loadgen run against `server`, with the server's CPU time and memory over it."""
        duration = duration_s or self.duration_s
        cmd = ["taskset", "-c", cpus, str(self.bin_dir / "loadgen"), "-url", server.url, "-ca", str(self.ca),
               "-bodies", str(bodies), "-mode", mode, "-conns", str(conns or self.conns),
               "-requests", str(requests), "-duration", f"{duration}s", "-warmup", f"{self.warmup_s}s",
               "-rate", str(rate or self.rate)]
        pids = server.pids()
        cpu0, steal0 = processes.cpu_seconds(pids), _cpu_times()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + self.warmup_s + 60, check=False)
        cpu, steal1 = processes.cpu_seconds(pids) - cpu0, _cpu_times()
        if done.returncode != 0:
            raise RuntimeError(f"loadgen failed: {done.stderr}")
        out: dict[str, Any] = json.loads(done.stdout)
        rss, hwm = memory_mb(pids)
        served = out["count"] + out["errors"] + out.get("warmup_count", 0)
        out.update(server=server.name, server_cpu_s=cpu, cpu_us_per_req=cpu / served * 1e6 if served else 0.0,
                   rss_mb=rss, hwm_mb=hwm, server_cpu_util=cpu / (out["duration_s"] + self.warmup_s),
                   client_cpu_util=out["client_cpu_s"] / out["duration_s"], loadavg=processes.loadavg(),
                   steal_pct=100 * (steal1[1] - steal0[1]) / max(steal1[0] - steal0[0], 1))
        if out["errors"]:
            log(f"{server.name} {mode}: {out['errors']} errors, e.g. {out.get('error_sample')}")
        return out


def _cpu_times() -> tuple[int, int]:
    """(all, steal) jiffies of the machine from /proc/stat: the share the hypervisor gave to other guests."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7]


# -- the servers ----------------------------------------------------------------------------------------

def servers(bench: Bench, clusters: Path, kubeconfig: Path | None, baseline: Path | None = None) -> dict[str, Server]:
    certs = bench.ca.parent
    tls = [str(certs / "tls.crt"), str(certs / "tls.key")]
    made: dict[str, Server] = {}

    def add(name: str, cmd: Callable[[int], list[str]], env: dict[str, str] | None = None) -> None:
        port = free_port()
        made[name] = Server(name, cmd(port), port, bench.work / f"{name}.log", env or {})

    add("ceiling", lambda port: [PY, "bench/ceiling.py", str(port), *tls])
    add("ours", lambda port: [PY, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
                              "--tls-cert", tls[0], "--tls-key", tls[1], "--rayclusters-from", str(clusters),
                              *ADMIN_FLAGS])
    add("floor", lambda port: [PY, "bench/floor.py", str(port), *tls])
    add("ours-memo-off", lambda port: [PY, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
                                       "--tls-cert", tls[0], "--tls-key", tls[1], "--rayclusters-from", str(clusters),
                                       "--decision-memo-kib", "0", *ADMIN_FLAGS])
    if baseline is not None:
        add("baseline", lambda port: [PY, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
                                      "--tls-cert", tls[0], "--tls-key", tls[1], "--rayclusters-from", str(clusters),
                                      *ADMIN_FLAGS])
        made["baseline"].cwd = baseline
    if kubeconfig is not None:
        add("kopf", lambda port: [PY, "-m", "kopf", "run", "--standalone", "--all-namespaces", "--quiet",
                                  "bench/kopf_webhook.py"],
            env={"KUBECONFIG": str(kubeconfig), "BENCH_CERTS": str(certs), "BENCH_RAYCLUSTERS": str(clusters),
                 "BENCH_DEFAULT_REDIS_ADDRESS": workload.DEFAULT_REDIS_ADDRESS,
                 "BENCH_DEFAULT_REDIS_PASSWORD_SECRET": workload.DEFAULT_REDIS_PASSWORD_SECRET})
        made["kopf"].env["BENCH_PORT"] = str(made["kopf"].port)
    add("go", lambda port: [str(bench.bin_dir / "crwebhook"), "-port", str(port), "-cert-dir", str(certs),
                            "-rayclusters-from", str(clusters), *ADMIN_FLAGS])
    return made


def patched_pods(server: Server, ca: Path, reviews: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Each review's pod after applying the server's answer (or the answer's `allowed`/status when no patch)."""
    out: dict[str, Any] = {}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), trust_env=False, timeout=10) as client:
        for label, review in reviews:
            response = client.post(server.url, content=orjson.dumps(review),
                                   headers={"Content-Type": "application/json"}).json()["response"]
            pod = review["request"]["object"]
            if response.get("patch"):
                pod = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
            out[label] = {"allowed": response["allowed"], "pod": pod}
    return out


# -- sections -------------------------------------------------------------------------------------------

def main_section(bench: Bench, all_servers: dict[str, Server], bodies: Path, sizes: dict[str, Path],
                 reviews: list[tuple[str, dict[str, Any]]], rounds: int) -> None:
    """Every server in turn, `rounds` times over (kopf once: it takes minutes): correctness check and pod sizes in
    the first round, open loop at the rate and closed loop at the maximum in each. The report keeps, per server
    and mode, the round with the median req/s (max) or p99 (open loop), so one noisy moment of a shared machine
    does not decide a comparison."""
    runs: list[dict[str, Any]] = []
    size_rows: list[dict[str, Any]] = []
    answers: dict[str, Any] = {}
    for round_ in range(rounds):
        for name, server in all_servers.items():
            if round_ and name == "kopf":
                continue
            log(f"{name}: round {round_ + 1}, starting ({' '.join(server.cmd[:4])} ...), load {processes.loadavg()}")
            with running(server, bench.ca):
                if not round_:
                    answers[name] = patched_pods(server, bench.ca, reviews)
                for mode in ("rate", "max"):
                    result = bench.load(server, bodies, mode)
                    result["round"] = round_ + 1
                    log(f"{name} {mode}: {result['rps']:.0f} req/s, p99 {result['p99_ms']:.2f} ms, "
                        f"{result['cpu_us_per_req']:.0f} µs CPU/req, RSS {result['rss_mb']:.0f} MB, "
                        f"steal {result['steal_pct']:.0f} %")
                    runs.append(result)
                if sizes and not round_:
                    for label, path in sizes.items():
                        result = bench.load(server, path, "max", conns=1, duration_s=min(bench.duration_s, 3),
                                            requests=2000)
                        result["size"] = label
                        log(f"{name} size {label}: p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms")
                        size_rows.append(result)
                if name == "ours" and round_ == rounds - 1:
                    bench.results["ours_metrics"] = scrape_metrics(server, bench.ca)
    bench.results["main_runs"] = runs
    bench.results["main"] = [median_run([r for r in runs if r["server"] == name and r["mode"] == mode], mode)
                             for name in all_servers for mode in ("rate", "max")
                             if any(r["server"] == name and r["mode"] == mode for r in runs)]
    bench.results["sizes"] = size_rows
    reference = answers.get("ours", {})
    bench.results["same_pods"] = {
        name: sorted(label for label in reference if got.get(label) != reference[label])
        for name, got in answers.items() if name not in ("ours", "ceiling")
    }


def median_run(runs: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The run with the median req/s (max) or p99 (open loop), with the range over all runs beside it."""
    key = "rps" if mode == "max" else "p99_ms"
    ordered = sorted(runs, key=lambda r: r[key])
    return {**ordered[(len(ordered) - 1) // 2], "rounds": len(runs), "range": (ordered[0][key], ordered[-1][key]),
            "steal_range": (min(r["steal_pct"] for r in runs), max(r["steal_pct"] for r in runs))}


def scrape_metrics(server: Server, ca: Path) -> dict[str, float]:
    """ray_ft_webhook_* samples from /metrics (counters and gauges), summed by name and label set."""
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), trust_env=False, timeout=10) as client:
        text = client.get(server.url.replace("/mutate", "/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ray_ft_webhook_") and not line.startswith(("ray_ft_webhook_admission_duration",)):
            key, _, value = line.rpartition(" ")
            if not key.split("{")[0].endswith("_created"):
                out[key] = float(value)
    return out


def clusters_section(bench: Bench, bodies: Path) -> None:
    """Our webhook with 10 ... 10,000 RayClusters in its folder: start-up, memory, latency, throughput."""
    rows = []
    for count in CLUSTER_COUNTS:
        folder = workload.write_clusters(bench.work / f"clusters-{count}", workload.clusters(),
                                         fillers=count - len(workload.clusters()))
        port = free_port()
        server = Server(f"ours-{count}", [PY, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
                                          "--tls-cert", str(bench.ca.parent / "tls.crt"),
                                          "--tls-key", str(bench.ca.parent / "tls.key"),
                                          "--rayclusters-from", str(folder), *ADMIN_FLAGS],
                        port, bench.work / f"ours-{count}.log")
        with running(server, bench.ca):
            idle_rss, _ = memory_mb(server.pids())
            rate = bench.load(server, bodies, "rate", duration_s=min(bench.duration_s, 5))
            peak = bench.load(server, bodies, "max", duration_s=min(bench.duration_s, 5))
            metrics = scrape_metrics(server, bench.ca)
        rows.append({"clusters": count, "cached": metrics.get("ray_ft_webhook_rayclusters_cached", 0),
                     "startup_s": server.started_s, "idle_rss_mb": idle_rss, "rate": rate, "max": peak})
        log(f"{count} RayClusters: ready in {server.started_s:.1f} s, RSS {idle_rss:.0f} MB, "
            f"p99 {rate['p99_ms']:.2f} ms, {peak['rps']:.0f} req/s")
    bench.results["clusters"] = rows


def workers_section(bench: Bench, clusters: Path, bodies: Path) -> None:
    """--workers 1 vs 2, both cores for the server; the load generator shares them."""
    rows = []
    for workers in (1, 2):
        port = free_port()
        server = Server(f"ours-workers-{workers}",
                        [PY, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
                         "--tls-cert", str(bench.ca.parent / "tls.crt"), "--tls-key", str(bench.ca.parent / "tls.key"),
                         "--rayclusters-from", str(clusters), "--workers", str(workers), *ADMIN_FLAGS],
                        port, bench.work / f"ours-workers-{workers}.log", cpus="0,1")
        with running(server, bench.ca):
            result = bench.load(server, bodies, "max", cpus="0,1")
            per_worker = [memory_mb([pid])[0] for pid in server.pids()]
        result.update(workers=workers, rss_per_process_mb=per_worker)
        log(f"--workers {workers}: {result['rps']:.0f} req/s, p99 {result['p99_ms']:.2f} ms, RSS {per_worker}")
        rows.append(result)
    bench.results["workers"] = rows


def profile_section(bench: Bench, server: Server, bodies: Path) -> None:
    """py-spy under the closed-loop load: the functions with the most samples (own and inclusive), from the
    collapsed stacks in build/bench/profile.txt (a flame graph as text); a second load run records profile.svg."""
    raw = OUT / "profile.txt"
    with running(server, bench.ca):
        assert server.proc is not None
        for fmt, output in (("flamegraph", OUT / "profile.svg"), ("raw", raw)):
            spy = subprocess.Popen([str(Path(PY).parent / "py-spy"), "record", "--pid", str(server.proc.pid),
                                    "--rate", "250", "--format", fmt, "--output", str(output),
                                    "--duration", str(int(bench.duration_s)), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1)
            result = bench.load(server, bodies, "max", duration_s=bench.duration_s - 2)
            spy.wait(bench.duration_s + 30)
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        n = int(count)
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
    top = sorted(own.items(), key=lambda kv: -kv[1])[:20]
    top_incl = sorted(inclusive.items(), key=lambda kv: -kv[1])[:80]
    stages = subprocess.run(["taskset", "-c", SERVER_CPU, PY, str(REPO / "bench" / "stages.py")], capture_output=True,
                            text=True, timeout=600, check=True)
    bench.results["profile"] = {"load": result, "samples": total,
                                "own": [(f, n / total) for f, n in top],
                                "inclusive": [(f, n / total) for f, n in top_incl],
                                "stages_us": json.loads(stages.stdout)}


def cold_section(bench: Bench, kubeconfig: Path, api: Any, samples: int) -> None:
    """Cache miss -> one bounded GET against the real kube-apiserver, vs the warm answer right after it.

    The webhook watches only namespace `bench-watched`, so every RayCluster created in `cold` is a guaranteed
    miss on its first pod (the GET then fills the cache: the second review of the same cluster is warm).
    """
    from kubernetes import client

    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    for ns in ("cold", "bench-watched"):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    port = free_port()
    server = Server("ours-cold", [PY, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
                                  "--tls-cert", str(bench.ca.parent / "tls.crt"),
                                  "--tls-key", str(bench.ca.parent / "tls.key"), "--kubeconfig", str(kubeconfig),
                                  "--namespaces", "bench-watched", *ADMIN_FLAGS], port, bench.work / "ours-cold.log")
    cold: list[float] = []
    warm: list[float] = []
    with running(server, bench.ca), httpx.Client(verify=ssl.create_default_context(cafile=str(bench.ca)),
                                                 trust_env=False, timeout=10) as http:
        before = scrape_metrics(server, bench.ca)
        for i in range(samples):
            rc = workload.raycluster(name=f"cold-{i}", namespace="cold", annotations={"ray.io/ft-enabled": "true"})
            del rc["metadata"]["uid"]
            stored = custom.create_namespaced_custom_object("ray.io", "v1", "cold", "rayclusters", rc)
            rc["metadata"]["uid"] = stored["metadata"]["uid"]
            body = orjson.dumps(workload.review(workload.apiserver_view(workload.pod(rc, "head", managed_fields=True)),
                                                f"cold-{i}"))
            for bucket in (cold, warm):
                began = time.perf_counter()
                response = http.post(server.url, content=body, headers={"Content-Type": "application/json"})
                bucket.append((time.perf_counter() - began) * 1000)
                if response.status_code != 200 or not response.json()["response"].get("patch"):
                    raise RuntimeError(f"cold path: unexpected answer {response.text[:300]}")
        after = scrape_metrics(server, bench.ca)
    gets = {k: after[k] - before.get(k, 0) for k in after if "fallback_gets" in k}
    bench.results["cold"] = {"samples": samples, "cold_ms": cold, "warm_ms": warm, "fallback_gets": gets}
    log(f"cold path: median {sorted(cold)[len(cold) // 2]:.2f} ms vs warm {sorted(warm)[len(warm) // 2]:.2f} ms")


def events_section(bench: Bench, kubeconfig: Path, api: Any) -> None:
    """`/mutate` with Events on and off, against the local kube-apiserver: every request is a head pod of an FT
    RayCluster (each one an Event: the worst case), RayClusters from the watch cache. Open loop at the rate,
    then closed loop at the maximum; Events created, counted in a series, dropped and failed from /metrics."""
    from kubernetes import client

    custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    custom[0].create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=workload.NAMESPACE)))
    reviews = []
    for rc in workload.clusters()[:3]:  # the FT ones
        rc = copy.deepcopy(rc)
        del rc["metadata"]["uid"]
        stored = custom[1].create_namespaced_custom_object("ray.io", "v1", workload.NAMESPACE, "rayclusters", rc)
        rc["metadata"]["uid"] = stored["metadata"]["uid"]
        reviews.append(workload.review(workload.apiserver_view(workload.pod(rc, "head", managed_fields=True)),
                                       f"events-{rc['metadata']['name']}"))
    bodies = workload.write_jsonl(bench.work / "heads.jsonl", reviews)
    rows = []
    for events in ("false", "true"):
        port = free_port()
        server = Server(f"ours --events {events}", [
            PY, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port), "--events", events,
            "--tls-cert", str(bench.ca.parent / "tls.crt"), "--tls-key", str(bench.ca.parent / "tls.key"),
            "--kubeconfig", str(kubeconfig), "--namespaces", workload.NAMESPACE, *ADMIN_FLAGS],
            port, bench.work / f"ours-events-{events}.log")
        with running(server, bench.ca) as up:
            processes.wait_until("the cache to hold the RayClusters",
                                 lambda up=up: scrape_metrics(up, bench.ca).get("ray_ft_webhook_rayclusters_cached",
                                                                                0) >= len(reviews), 30)
            for mode in ("rate", "max"):
                result = bench.load(server, bodies, mode)
                log(f"{server.name} {mode}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
                    f"p99 {result['p99_ms']:.2f} ms, {result['cpu_us_per_req']:.0f} µs CPU/req")
                rows.append(result)
            metrics = scrape_metrics(server, bench.ca)
            rows[-1]["events"] = {k.split('"')[1]: v for k, v in metrics.items()
                                  if k.startswith("ray_ft_webhook_events_total")}
    bench.results["events"] = rows


# -- control plane --------------------------------------------------------------------------------------

@contextlib.contextmanager
def control_plane(work: Path) -> Iterator[tuple[Path, Any]]:
    """The e2e tier's etcd + kube-apiserver (pinned to the load generator's core) with the RayCluster CRD."""
    from kubernetes import client, config

    from testkit.controlplane import RAYCLUSTER_CRD, ControlPlane
    from testkit.kube import wait_established

    (work / "controlplane").mkdir()
    cp = ControlPlane(base_dir=work / "controlplane")
    cp.start()
    try:
        for pid in cp.pids().values():  # kube-apiserver and etcd
            subprocess.run(["taskset", "-a", "-p", "-c", CLIENT_CPU, str(pid)], capture_output=True, check=False)
        api = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))
        client.ApiextensionsV1Api(api).create_custom_resource_definition(RAYCLUSTER_CRD)
        wait_established(api, ["rayclusters.ray.io"])
        yield cp.admin_kubeconfig, api
    finally:
        cp.stop()


# -- report ---------------------------------------------------------------------------------------------

def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _paired(runs: list[dict[str, Any]]) -> str:
    """Ours against each server round by round (the two ran minutes apart, under the same neighbours): the median
    of the per-round ratios of max req/s, of CPU per request at the max, and of the open loop's p99."""
    def by(server: str, mode: str) -> dict[int, dict[str, Any]]:
        return {r["round"]: r for r in runs if r["server"] == server and r["mode"] == mode}

    parts = []
    for server in dict.fromkeys(r["server"] for r in runs):
        if server == "ours":
            continue
        ratios = []
        for mode, key, invert in (("max", "rps", False), ("max", "cpu_us_per_req", True), ("rate", "p99_ms", False)):
            mine, theirs = by("ours", mode), by(server, mode)
            values = sorted((theirs[n][key] / mine[n][key]) if invert else (mine[n][key] / theirs[n][key])
                            for n in mine.keys() & theirs.keys() if mine[n][key] and theirs[n][key])
            ratios.append(f"{values[(len(values) - 1) // 2]:.2f}" if values else "-")
        parts.append(f"{server} {ratios[0]} / {ratios[1]} / {ratios[2]}")
    return ("Paired by round (median of the per-round ratios; ours ÷ this for req/s at the max, this ÷ ours for "
            "CPU per request at the max, ours ÷ this for the open loop's p99): " + "; ".join(parts) + ".")


def _spread(run: dict[str, Any]) -> str:
    low, high = run["range"]
    spread = f"{low:,.0f}-{high:,.0f}" if run["mode"] == "max" else f"{low:.2f}-{high:.2f}"
    return f"{run['rounds']}: {spread}"


def report(results: dict[str, Any]) -> str:
    lines: list[str] = []
    env = results["environment"]
    lines += [f"Run {env['date']} on {env['cpu']} ({env['cores']} cores), {env['kernel']}, Python {env['python']}, "
              f"{env['go']}; load average before/after: {env['load_before']} / {env.get('load_after', '?')}.", ""]
    main = results.get("main", [])
    if main:
        ours = {r["mode"]: r for r in main if r["server"] == "ours"}
        lines += ["| server | mode | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | RSS MB (peak) | failed + unsent "
                  "| ours ÷ this: req/s | ours ÷ this: CPU/req | rounds: range of req/s (max) or p99 ms | steal % |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in main:
            mode = f"open loop {r['rate']:.0f}/s" if r["mode"] == "rate" else f"max, {r['conns']} conns"
            mine = ours.get(r["mode"])
            ratio_rps = f"{mine['rps'] / r['rps']:.2f}" if mine and r["server"] != "ours" else ""
            ratio_cpu = (f"{mine['cpu_us_per_req'] / r['cpu_us_per_req']:.2f}"
                         if mine and r["server"] != "ours" and r["cpu_us_per_req"] else "")
            bound = " (loadgen-bound)" if r["client_cpu_util"] > 0.9 else ""
            lines.append(f"| {r['server']} | {mode} | {r['rps']:,.0f}{bound} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} "
                         f"| {_ms(r['p999_ms'])} | {r['cpu_us_per_req']:.0f} | {r['rss_mb']:.0f} ({r['hwm_mb']:.0f}) "
                         f"| {r['errors'] + r['unsent']} | {ratio_rps} | {ratio_cpu} | {_spread(r)} "
                         f"| {r['steal_range'][0]:.0f}-{r['steal_range'][1]:.0f} |")
        lines += ["", _paired(results.get("main_runs", []))]
        same = results.get("same_pods", {})
        lines += ["", "Same patched pods as ours for every review of the mix: " + ", ".join(
            f"{name} {'yes' if not diff else 'NO: ' + ', '.join(diff)}" for name, diff in same.items()) + "."]
    if results.get("sizes"):
        lines += ["", "### (b) Pod size (one connection, closed loop)", "",
                  "| server | AdmissionReview | req/s | p50 ms | p99 ms | CPU µs/req | errors |",
                  "|---|---|---|---|---|---|---|"]
        for r in results["sizes"]:
            errors = f"{r['errors']} ({r['error_sample'][0][:60]})" if r["errors"] else "0"
            lines.append(f"| {r['server']} | {r['size']} | {r['rps']:,.0f} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} "
                         f"| {r['cpu_us_per_req']:.0f} | {errors} |")
    if results.get("clusters"):
        lines += ["", "### (c) RayClusters cached (ours)", "",
                  "| RayClusters | ready after s | RSS MB idle | p99 ms at the rate | max req/s | CPU µs/req (max) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['clusters']:,} ({r['cached']:.0f} cached) | {r['startup_s']:.1f} | {r['idle_rss_mb']:.0f} "
                  f"| {_ms(r['rate']['p99_ms'])} | {r['max']['rps']:,.0f} | {r['max']['cpu_us_per_req']:.0f} |"
                  for r in results["clusters"]]
    if results.get("ours_metrics"):
        m = results["ours_metrics"]
        admissions = sum(v for k, v in m.items() if k.startswith("ray_ft_webhook_admissions_total"))
        misses = m.get('ray_ft_webhook_raycluster_cache_total{result="miss"}', 0)
        hits = m.get('ray_ft_webhook_raycluster_cache_total{result="hit"}', 0)
        gets = sum(v for k, v in m.items() if k.startswith("ray_ft_webhook_raycluster_fallback_gets_total"))
        lines += ["", "### (d) API calls per admission with a warm cache (ours, /metrics after the main run)", "",
                  f"{admissions:,.0f} admissions, cache hits {hits:,.0f}, misses {misses:,.0f}, "
                  f"fallback GETs {gets:,.0f}: {gets / admissions if admissions else 0:.4f} API calls per admission."]
    if results.get("cold"):
        c = results["cold"]
        cold, warm = sorted(c["cold_ms"]), sorted(c["warm_ms"])
        lines += ["", "### (a) Cold path: cache miss -> one GET against the local kube-apiserver", "",
                  f"{c['samples']} RayClusters created and reviewed at once (one keep-alive client, not pinned): "
                  f"cold median {_ms(cold[len(cold) // 2])} ms, max {_ms(cold[-1])} ms; warm (the same pod "
                  f"again) median {_ms(warm[len(warm) // 2])} ms, max {_ms(warm[-1])} ms. Fallback GETs: "
                  + ", ".join(f"{k.split('{')[1].rstrip('}')} {v:.0f}" for k, v in c["fallback_gets"].items()) + "."]
    if results.get("events"):
        lines += ["", "### (f) Events on and off (head pods only, each one an Event; local kube-apiserver)", "",
                  "| server | mode | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | Events |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in results["events"]:
            mode = f"open loop {r['rate']:.0f}/s" if r["mode"] == "rate" else f"max, {r['conns']} conns"
            events = ", ".join(f"{k} {v:,.0f}" for k, v in r.get("events", {}).items() if v)
            lines.append(f"| {r['server']} | {mode} | {r['rps']:,.0f} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} "
                         f"| {_ms(r['p999_ms'])} | {r['cpu_us_per_req']:.0f} | {events} |")
    if results.get("workers"):
        lines += ["", "### (e) --workers (server and load generator share both cores)", "",
                  "| workers | req/s | p50 ms | p99 ms | CPU µs/req | RSS MB per process |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['workers']} | {r['rps']:,.0f} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} "
                  f"| {r['cpu_us_per_req']:.0f} | {', '.join(f'{x:.0f}' for x in r['rss_per_process_mb'])} |"
                  for r in results["workers"]]
    if results.get("profile"):
        p = results["profile"]
        lines += ["", f"### Profile of ours (py-spy, {p['samples']} samples at {p['load']['rps']:.0f} req/s)", "",
                  "| own % | function |", "|---|---|"]
        lines += [f"| {share * 100:.1f} | `{frame}` |" for frame, share in p["own"][:15]]
        lines += ["", "| inclusive % | function |", "|---|---|"]
        lines += [f"| {share * 100:.1f} | `{frame}` |" for frame, share in p["inclusive"][:25]]
        lines += ["", "In-process CPU per request of the mix, without TLS and HTTP (bench/stages.py):", "",
                  "| stage | µs |", "|---|---|"]
        lines += [f"| {stage} | {us:.1f} |" for stage, us in p["stages_us"].items() if not stage.endswith("mix")
                  and not stage.startswith("of them")]
    return "\n".join(lines) + "\n"


def environment() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpu": cpu, "cores": str(os.cpu_count()),
            "kernel": platform.release(), "python": platform.python_version(), "go": go,
            "load_before": processes.loadavg()}


def wait_quiet(limit_min: float, threshold: float) -> None:
    """Wait (bounded) for the 1-minute load average to drop under `threshold`; go on anyway after `limit_min`."""
    deadline = time.monotonic() + limit_min * 60
    while float(processes.loadavg().split()[0]) >= threshold and time.monotonic() < deadline:
        log(f"waiting for a quiet machine: load average {processes.loadavg()}")
        time.sleep(20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--servers", default="ceiling,floor,ours,ours-memo-off,kopf,go",
                        help="servers of the main section")
    parser.add_argument("--baseline", type=Path, help="also run `python -m webhook serve` from this folder "
                        "(e.g. an older version's `git archive`) as server `baseline`, for before/after")
    parser.add_argument("--quick", action="store_true", help="short runs (3 s) to check the harness")
    parser.add_argument("--duration-s", type=float, default=10, help="measured seconds per load run (default 10)")
    parser.add_argument("--rate", type=float, default=1000, help="open-loop arrival rate (default 1000 req/s)")
    parser.add_argument("--conns", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the main section, interleaved over the "
                        "servers; the median round is reported (default 3)")
    parser.add_argument("--cold-samples", type=int, default=20, help="RayClusters created for the cold path")
    parser.add_argument("--wait-quiet-min", type=float, default=0, help="first wait up to this long for load < 0.7")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if unknown := only - set(SECTIONS):
        parser.error(f"unknown sections {unknown}")
    if args.wait_quiet_min:
        wait_quiet(args.wait_quiet_min, 0.7)

    built = subprocess.run(["bash", str(REPO / "bench" / "build.sh")], stdout=subprocess.PIPE, text=True, check=True)
    bin_dir = Path(built.stdout.strip())
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ray-ft-bench-") as tmp:
        work = Path(tmp)
        ca = make_certs(work / "certs")
        bench = Bench(bin_dir, work, ca, duration_s=3 if args.quick else args.duration_s, warmup_s=1,
                      rate=args.rate, conns=args.conns)
        bench.results["environment"] = environment()
        clusters = workload.write_clusters(work / "rayclusters", workload.clusters())
        reviews = workload.mix()
        bodies = workload.write_jsonl(work / "mix.jsonl", [r for _, r in reviews])
        sizes = {label: workload.write_jsonl(work / f"size-{n}.jsonl", [workload.padded_head(n)])
                 for label, n in SIZES.items()} if "sizes" in only else {}
        bench.results["bodies"] = {label: len(orjson.dumps(r)) for label, r in reviews}
        chosen = args.servers.split(",")
        need_api = "cold" in only or "events" in only or ("main" in only and "kopf" in chosen)
        with control_plane(work) if need_api else contextlib.nullcontext((None, None)) as (kubeconfig, api):
            if args.baseline:
                chosen.append("baseline")
            all_servers = {k: v for k, v in servers(bench, clusters, kubeconfig, args.baseline.resolve()
                                                    if args.baseline else None).items() if k in chosen}
            if "main" in only or "sizes" in only:
                main_section(bench, all_servers if "main" in only else {"ours": all_servers["ours"]}, bodies, sizes,
                             reviews, 1 if args.quick or "main" not in only else args.rounds)
            if "cold" in only:
                cold_section(bench, kubeconfig, api, 5 if args.quick else args.cold_samples)
            if "events" in only:
                events_section(bench, kubeconfig, api)
        if "clusters" in only:
            clusters_section(bench, bodies)
        if "workers" in only:
            workers_section(bench, clusters, bodies)
        if "profile" in only:
            profile_section(bench, servers(bench, clusters, None)["ours"], bodies)
    bench.results["environment"]["load_after"] = processes.loadavg()
    text = report(bench.results)
    (OUT / "results.json").write_text(json.dumps(bench.results, indent=1, default=str))
    (OUT / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
