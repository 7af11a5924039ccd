"""`serve`: wire the RayCluster source, TLS, the connection guard and the app together and run uvicorn.

uvicorn is given no TLS settings: its protocol is `guard.GuardedProtocol`, which caps connections, does the
TLS handshake itself with the reloading context and enforces the client limits (`--max-connections` ...).

With `--workers N` (N > 1) uvicorn's supervisor forks N worker processes sharing the listening socket. Each
worker builds its own app (`worker_app`, a factory that reads the settings from the RAY_FT_WEBHOOK_*
variables the parent sets), RayCluster lookup, reloading TLS context and guard: module-level functions,
because uvicorn pickles its configuration into the workers. The parent keeps the certificate sync
(self-managed mode) and serves nothing.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import time
from typing import Any

import uvicorn

from webhook.admission import guard
from webhook.admission.app import Health, WebhookApp, create_app
from webhook.admission.lookup import RayClusterLookup, StaticLookup
from webhook.admission.metrics import Metrics
from webhook.admission.recorder import EventRecorder
from webhook.admission.watch import ApiLookup, NamespaceCache, WatchCache
from webhook.certs.sync import CertSync, CertTarget
from webhook.certs.tls import ReloadingTLS
from webhook.cli.options import ServeOptions, options_from_env
from webhook.common import kube, logs
from webhook.common.errors import InputError
from webhook.core.settings import Settings

log = logging.getLogger(__name__)

# The apiserver reuses connections; a server idle timeout below its reuse window causes intermittent EOFs
# (uvicorn's default is 5 s). Go's transport drops idle connections after 90 s: outlast it, so it closes first.
KEEP_ALIVE_S = 120
# On SIGTERM, in-flight admissions finish; idle keep-alive connections must not hold the exit forever.
GRACEFUL_SHUTDOWN_S = 10
# How often, at most, the certificate files are checked for a change (on a TLS handshake).
TLS_CHECK_S = 10.0
# How long a starting replica waits for the certificate leader to create the Secret.
CERT_WAIT_S = 60


def start_cert_sync(opts: ServeOptions, target: CertTarget, api: Any) -> CertSync:
    """Fetch (creating it if this replica leads) the certificate before serving, then keep it in step."""
    sync = CertSync(api, target, (opts.tls_cert, opts.tls_key), interval_s=opts.cert_sync_interval_s)
    deadline = time.monotonic() + CERT_WAIT_S
    while True:
        try:
            sync.sync_once()
        except Exception as exc:
            log.warning("certificate sync failed", extra={"reason": f"{type(exc).__name__}: {exc}"[:300]})
        if opts.tls_cert.exists() and opts.tls_key.exists():
            break
        if time.monotonic() > deadline:
            raise InputError(f"no certificate in Secret {target.namespace}/{target.secret} after {CERT_WAIT_S}s; "
                             "check the webhook's RBAC for secrets, leases and mutatingwebhookconfigurations")
        time.sleep(2)
    sync.start()
    return sync


def build_lookup(opts: ServeOptions, metrics: Metrics, api: Any) -> RayClusterLookup:
    """The RayCluster source: a manifest folder, or the Kubernetes API through `api`."""
    if opts.rayclusters_from is not None:
        static = StaticLookup.from_folder(opts.rayclusters_from)
        metrics.cached_clusters.set_function(lambda: len(static))
        return static
    cache = WatchCache(api, opts.namespaces, opts.lookup_timeout_s,
                       on_get=lambda result: metrics.fallback_gets.labels(result).inc())
    metrics.cached_clusters.set_function(lambda: len(cache))
    namespaces = NamespaceCache(api, opts.lookup_timeout_s,
                                on_get=lambda result: metrics.namespace_fallback_gets.labels(result).inc())
    lookup = ApiLookup(cache, namespaces)
    lookup.start()
    return lookup


def _uvicorn_options(opts: ServeOptions) -> dict[str, Any]:
    """The uvicorn settings shared by the single-process and the multi-worker paths."""
    return {
        "host": opts.host,
        "port": opts.port,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "access_log": False,
        "log_config": None,
        "log_level": opts.log_level,
        "server_header": False,
        # The apiserver connects directly; X-Forwarded-* headers mean nothing here and cost per request.
        "proxy_headers": False,
    }


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """`--reuse-port`: the listening socket, bound with SO_REUSEPORT (and SO_REUSEADDR, as uvicorn binds).

    Every process of the same user that binds the address this way gets its own accept queue and the kernel
    spreads new connections over them; a process that stops takes only its own queue with it. uvicorn calls
    listen() once the app has started, so a starting process gets no connection before it can answer.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} with --reuse-port: {exc.strerror or exc}") from None
    return sock


def serving_app(opts: ServeOptions, settings: Settings, metrics: Metrics,
                api: Any) -> tuple[WebhookApp, RayClusterLookup, EventRecorder | None]:
    """What one serving process needs, the same with or without `--workers`: its reloading TLS context (given to
    the connection guard it installs), its RayCluster lookup, its Event recorder (with the Kubernetes API and
    `--events`) and the app."""
    tls = ReloadingTLS(opts.tls_cert, opts.tls_key, check_interval_s=min(TLS_CHECK_S, opts.cert_sync_interval_s),
                       on_load=metrics.cert_expiry.set)
    guard.install(guard.Guard(opts.limits, tls.context, metrics))
    lookup = build_lookup(opts, metrics, api)
    recorder = None
    if opts.events and opts.rayclusters_from is None:
        # The pod's hostname is its name: the Event's reportingInstance says which replica recorded it.
        recorder = EventRecorder(api, metrics, socket.gethostname())
        recorder.start()
    app = create_app(lookup, settings, Health(certificate_valid=tls.valid, cache_synced=lookup.ready), metrics,
                     opts.limits, recorder)
    return app, lookup, recorder


def run(opts: ServeOptions, settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM. Raises InputError/TLSError for unusable configuration before listening."""
    if opts.workers > 1:
        run_workers(opts, settings)
        return
    metrics = Metrics()
    api = kube.api_client(opts.kubeconfig) if opts.rayclusters_from is None or opts.cert_target else None
    sync = start_cert_sync(opts, opts.cert_target, api) if opts.cert_target is not None else None
    app, lookup, recorder = serving_app(opts, settings, metrics, api)
    config = uvicorn.Config(app, http=guard.GuardedProtocol, **_uvicorn_options(opts))
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; make that a clean exit (code 0).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    log.info("serving", extra={"host": opts.host, "port": opts.port, "reuse_port": opts.reuse_port,
                               "settings": _describe(settings)})
    sockets = [reuse_port_socket(opts.host, opts.port)] if opts.reuse_port else None
    _freeze_startup_heap()
    try:
        uvicorn.Server(config).run(sockets=sockets)
    finally:
        if isinstance(lookup, ApiLookup):
            lookup.stop()
        if recorder is not None:
            recorder.stop()
        if sync is not None:
            sync.stop()


def run_workers(opts: ServeOptions, settings: Settings) -> None:
    """`--workers N`: check what a worker would fail on, then let uvicorn's supervisor run N workers.

    The caller has put the settings into the RAY_FT_WEBHOOK_* variables (options.worker_environment); the
    workers inherit them. The supervisor stops the workers gracefully on SIGTERM/SIGINT and exits with 0.
    """
    api = kube.api_client(opts.kubeconfig) if opts.cert_target else None
    sync = start_cert_sync(opts, opts.cert_target, api) if opts.cert_target is not None else None
    ReloadingTLS(opts.tls_cert, opts.tls_key)  # raises TLSError now rather than in every worker
    if opts.rayclusters_from is not None:
        StaticLookup.from_folder(opts.rayclusters_from)  # raises InputError now
    log.info("serving", extra={"host": opts.host, "port": opts.port, "workers": opts.workers,
                               "settings": _describe(settings)})
    try:
        uvicorn.run("webhook.cli.serve:worker_app", factory=True, workers=opts.workers,
                    http="webhook.admission.guard:GuardedProtocol", **_uvicorn_options(opts))
    finally:
        if sync is not None:
            sync.stop()


# -- one worker of `--workers N` (runs in a spawned process) ----------------------------------------------

def worker_app() -> Any:
    """uvicorn's app factory in a worker (called once, before the worker accepts): the options and settings the
    parent put into RAY_FT_WEBHOOK_*, and the worker's own TLS context, guard, lookup and app."""
    opts, settings = options_from_env()
    logs.configure(opts.log_level)
    api = kube.api_client(opts.kubeconfig) if opts.rayclusters_from is None else None
    app, _lookup, _recorder = serving_app(opts, settings, Metrics(), api)
    log.info("worker serving", extra={"pid": os.getpid()})
    _freeze_startup_heap()
    return app


def _freeze_startup_heap() -> None:
    """Move everything allocated at start-up (FastAPI's routes and models, the folder's RayClusters) out of
    the garbage collector's reach: a full collection over it takes ~55 ms here, a pause every admission in
    flight would wait for. Per-request objects are still collected as usual."""
    gc.collect()
    gc.freeze()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _describe(settings: Settings) -> dict[str, object]:
    """Settings for the start-up log line; holds names of Secrets, never their values."""
    return {
        "default_redis_address": settings.default_redis_address,
        "default_redis_password_secret": str(settings.default_redis_password_secret or ""),
        "default_redis_ca": str(settings.default_redis_ca or ""),
        "default_redis_client_cert_secret": settings.default_redis_client_cert_secret or "",
        "default_redis_server_name": settings.default_redis_server_name or "",
        "deny_kuberay_conflicts": settings.deny_kuberay_conflicts,
        "deny_shared_storage_namespace": settings.deny_shared_storage_namespace,
        "worker_reconnect_timeout_s": settings.worker_reconnect_timeout_s,
        "head_reconnect_timeout_s": settings.head_reconnect_timeout_s,
        "on_lookup_failure": settings.on_lookup_failure.value,
    }
