"""Prometheus metrics of one webhook process, in a registry of its own (no global state between tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Millisecond-scale buckets: the apiserver's own webhook histogram starts at 5 ms, ours must resolve below it.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.admissions = Counter(
            "ray_ft_webhook_admissions", "Admission reviews answered, by outcome.", ["outcome"], registry=r
        )
        self.validations = Counter(
            "ray_ft_webhook_validations", "RayCluster, RayService and RayJob reviews answered (/validate), by outcome.",
            ["outcome"], registry=r,
        )
        self.defaulted = Counter(
            "ray_ft_webhook_raycluster_defaults",
            "RayCluster CREATEs answered (/mutate-raycluster, the Namespace's ft-default), by outcome.",
            ["outcome"], registry=r,
        )
        self.latency = Histogram(
            "ray_ft_webhook_admission_duration_seconds", "Time to answer one /mutate request.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge("ray_ft_webhook_in_flight_requests", "Admission requests being answered.", registry=r)
        self.cache = Counter(
            "ray_ft_webhook_raycluster_cache", "RayCluster cache lookups, by result (hit, miss).", ["result"],
            registry=r,
        )
        self.fallback_gets = Counter(
            "ray_ft_webhook_raycluster_fallback_gets",
            "Direct GETs of a RayCluster after a cache miss, by result.", ["result"], registry=r,
        )
        self.namespace_fallback_gets = Counter(
            "ray_ft_webhook_namespace_fallback_gets",
            "Direct GETs of a Namespace (for its defaults) not yet in the Namespace cache, by result.", ["result"],
            registry=r,
        )
        self.cached_clusters = Gauge("ray_ft_webhook_rayclusters_cached", "RayClusters in the cache.", registry=r)
        self.cache_synced = Gauge(
            "ray_ft_webhook_cache_synced",
            "1 when the RayCluster and Namespace caches have their first list (what /readyz needs), else 0.",
            registry=r,
        )
        self.incomplete_heads = Counter(
            "ray_ft_webhook_incomplete_heads",
            "Head pods admitted with GCS fault tolerance on but incomplete (the GCSFaultToleranceIncomplete Event: "
            "no Redis address, a username without a password, no `ray start` line); dry runs not counted.",
            registry=r,
        )
        self.connections_open = Gauge(
            "ray_ft_webhook_connections_open", "Client connections open, TLS handshakes included.", registry=r
        )
        self.connections_refused = Counter(
            "ray_ft_webhook_connections_refused",
            "Connections or requests refused by a server limit, by reason (see the README's Limits).", ["reason"],
            registry=r,
        )
        self.events = Counter(
            "ray_ft_webhook_events",
            "Events on RayClusters, by result (created, series: a repeat counted on an earlier one, dropped: the "
            "queue was full, failed: the API call failed).", ["result"], registry=r,
        )
        self.cert_expiry = Gauge(
            "ray_ft_webhook_certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate expires.", registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
