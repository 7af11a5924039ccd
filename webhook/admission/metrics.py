"""Prometheus metrics of one webhook process, in a registry of its own (no global state between tests).

What the event loop counts for every admission is a `Tally`, `Level` or `Timings`: plain numbers, read when
/metrics is scraped. prometheus_client's own metrics take a lock and check their state on every update (about
1 µs each, six per admission); they stay for what other threads count (watch, Events, certificates).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

# Millisecond-scale buckets: the apiserver's own webhook histogram starts at 5 ms, ours must resolve below it.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Tally:
    """A counter with one label, for the event loop only: `add` is a dict update, the scrape reads the dict."""

    def __init__(self, name: str, documentation: str, label: str, registry: CollectorRegistry,
                 values: Iterable[str] = ()) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        # Series listed in `values` exist from the start, at 0 (a miss count of 0 is information).
        self.counts: dict[str, int] = dict.fromkeys(values, 0)
        registry.register(self)

    def add(self, value: str) -> None:
        self.counts[value] = self.counts.get(value, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in dict(self.counts).items():
            family.add_metric([value], count)
        yield family


class Level:
    """A gauge the event loop moves up and down (`up`, `down`); read at scrape time."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.value = name, documentation, 0
        registry.register(self)

    def up(self) -> None:
        self.value += 1

    def down(self) -> None:
        self.value -= 1

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, value=self.value)


class Timings:
    """A histogram for the event loop: `observe` counts one value in its bucket; the scrape adds them up."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.bounds = name, documentation, buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # a value equal to a bound is in its bucket (le)
        self.sum += value

    def collect(self) -> Iterator[Metric]:
        cumulative, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), list(self.counts), strict=True):
            total += count
            cumulative.append((floatToGoString(bound), total))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=cumulative, sum_value=self.sum)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.admissions = Tally("ray_ft_webhook_admissions", "Admission reviews answered, by outcome.", "outcome", r)
        self.validations = Tally(
            "ray_ft_webhook_validations", "RayCluster, RayService and RayJob reviews answered (/validate), by outcome.",
            "outcome", r,
        )
        self.defaulted = Tally(
            "ray_ft_webhook_raycluster_defaults",
            "RayCluster CREATEs answered (/mutate-raycluster, the Namespace's ft-default), by outcome.", "outcome", r,
        )
        self.latency = Timings(
            "ray_ft_webhook_admission_duration_seconds", "Time to answer one /mutate request.", LATENCY_BUCKETS, r,
        )
        self.in_flight = Level("ray_ft_webhook_in_flight_requests", "Admission requests being answered.", r)
        self.cache = Tally(
            "ray_ft_webhook_raycluster_cache", "RayCluster cache lookups, by result (hit, miss).", "result", r,
            values=("hit", "miss"),
        )
        self.decisions = Tally(
            "ray_ft_webhook_decisions",
            "Ray pods looked up in the memo of decisions (a hit: the same pod of the same RayCluster facts was "
            "decided before, e.g. a worker of a scale-up), by result (hit, miss).", "result", r, values=("hit", "miss"),
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
