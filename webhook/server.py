"""`serve`: wire the RayCluster source, TLS and the app together and run uvicorn over HTTPS."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from webhook.app import Health, create_app
from webhook.files import InputError
from webhook.lookup import RayClusterLookup, StaticLookup, WatchCache
from webhook.metrics import Metrics
from webhook.settings import Settings
from webhook.tls import ReloadingTLS

log = logging.getLogger(__name__)

# The apiserver reuses connections; a server idle timeout below its reuse window causes intermittent EOFs
# (uvicorn's default is 5 s). Go's transport drops idle connections after 90 s: outlast it, so it closes first.
KEEP_ALIVE_S = 120
# On SIGTERM, in-flight admissions finish; idle keep-alive connections must not hold the exit forever.
GRACEFUL_SHUTDOWN_S = 10


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    tls_cert: Path
    tls_key: Path
    kubeconfig: Path | None = None
    rayclusters_from: Path | None = None
    namespaces: tuple[str, ...] = ()
    lookup_timeout_s: float = 2.0
    log_level: str = "info"


def build_lookup(opts: ServeOptions, metrics: Metrics) -> RayClusterLookup:
    """The RayCluster source: a manifest folder, a kubeconfig, or the in-cluster service account."""
    if opts.rayclusters_from is not None:
        static = StaticLookup.from_folder(opts.rayclusters_from)
        metrics.cached_clusters.set_function(lambda: len(static))
        return static
    from kubernetes import client, config

    try:
        if opts.kubeconfig is not None:
            api_client = config.new_client_from_config(config_file=str(opts.kubeconfig))
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            api_client = client.ApiClient()
        else:
            api_client = config.new_client_from_config()
    except (config.ConfigException, OSError) as exc:
        raise InputError(
            f"no RayCluster source: give --rayclusters-from DIR or --kubeconfig FILE, or run in a cluster ({exc})"
        ) from None
    cache = WatchCache(api_client, opts.namespaces, opts.lookup_timeout_s,
                       on_get=lambda result: metrics.fallback_gets.labels(result).inc())
    metrics.cached_clusters.set_function(lambda: len(cache))
    cache.start()
    return cache


def run(opts: ServeOptions, settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM. Raises InputError/TLSError for unusable configuration before listening."""
    metrics = Metrics()
    tls = ReloadingTLS(opts.tls_cert, opts.tls_key, on_load=metrics.cert_expiry.set)
    lookup = build_lookup(opts, metrics)
    app = create_app(lookup, settings, Health(certificate_loaded=lambda: True, cache_synced=lookup.ready), metrics)
    config = uvicorn.Config(
        app,
        host=opts.host,
        port=opts.port,
        ssl_context_factory=lambda _config, _default: tls.context,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        access_log=False,
        log_config=None,
        log_level=opts.log_level,
        server_header=False,
    )
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; make that a clean exit (code 0).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    log.info("serving", extra={"host": opts.host, "port": opts.port, "settings": _describe(settings)})
    try:
        uvicorn.Server(config).run()
    finally:
        if isinstance(lookup, WatchCache):
            lookup.stop()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _describe(settings: Settings) -> dict[str, object]:
    """Settings for the start-up log line; holds names of Secrets, never their values."""
    return {
        "default_redis_address": settings.default_redis_address,
        "default_redis_password_secret": str(settings.default_redis_password_secret or ""),
        "worker_reconnect_timeout_s": settings.worker_reconnect_timeout_s,
        "head_reconnect_timeout_s": settings.head_reconnect_timeout_s,
        "on_lookup_failure": settings.on_lookup_failure.value,
    }
