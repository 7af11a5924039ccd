"""`EventRecorder`: Events on RayClusters (events.k8s.io/v1), sent off the admission hot path.

An admission only puts the Event on a bounded queue (`record`: O(1), never blocks, never fails). One daemon
thread takes what is queued, every PAUSE_S at most, and writes it with time-bounded calls. An Event that
repeats one sent in the last SERIES_WINDOW_S (same RayCluster, reason and note) is not created again: it is
counted in the first one's `series`, whose count is written every FLUSH_S (client-go's aggregation,
simplified). When the apiserver is slow the queue fills and Events are dropped, each counted in
`ray_ft_webhook_events_total{result="dropped"}`: admissions never wait for an Event.
"""

from __future__ import annotations

import datetime
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, cast

from webhook.admission.metrics import Metrics
from webhook.common import kubeapi
from webhook.common.kubeapi import Client
from webhook.core.events import EventFacts
from webhook.core.raycluster import ClusterFacts

log = logging.getLogger(__name__)

CONTROLLER = "ray-ft-webhook"
ACTION = "AdmitHeadPod"
QUEUE_SIZE = 256
# A repeat of an Event sent less than this long ago counts in its series instead of making a new one.
SERIES_WINDOW_S = 600.0
# Series counts are written at most this often (one patch per repeated Event): a busy cluster whose head pods
# restart in a loop costs a patch per Event every few seconds, not one per admission.
FLUSH_S = 5.0
# After each batch the sender waits this long before taking the next: one wake-up per pause, not per admission.
PAUSE_S = 0.05
# Series remembered for aggregation (oldest forgotten first): bounds memory whatever the number of clusters.
MAX_SERIES = 1024
CALL_TIMEOUT_S = 5.0
EVENTS = "events.k8s.io/v1"


@dataclass
class _Series:
    name: str
    namespace: str
    count: int
    first_sent: float
    # Repeats since the last write of the count.
    dirty: bool = False


Key = tuple[str, str, str, str]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventRecorder:
    """Records Events for admitted head pods; `start` the sending thread, `stop` it."""

    def __init__(self, client: Client | None, metrics: Metrics, instance: str, queue_size: int = QUEUE_SIZE,
                 timeout_s: float = CALL_TIMEOUT_S, flush_s: float = FLUSH_S) -> None:
        self._client = cast(Client, client)  # None: nothing is sent (unit tests of the queue)
        self._queue: queue.Queue[tuple[ClusterFacts, EventFacts]] = queue.Queue(maxsize=queue_size)
        self._instance, self._timeout_s, self._flush_s = instance[:128], timeout_s, flush_s
        self._series: OrderedDict[Key, _Series] = OrderedDict()
        self._stop = threading.Event()
        self._results = {r: metrics.events.labels(r) for r in ("created", "series", "dropped", "failed")}

    def record(self, cluster: ClusterFacts, event: EventFacts) -> None:
        """Queue an Event about `cluster` (called on the event loop: never blocks)."""
        try:
            self._queue.put_nowait((cluster, event))
        except queue.Full:
            self._results["dropped"].inc()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="events", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop the sender after it has written what is queued and the series counts (each call time-bounded)."""
        self._stop.set()

    def _run(self) -> None:
        next_flush = time.monotonic() + self._flush_s
        while True:
            stopping = self._stop.is_set()
            batch = self._drain(timeout=0 if stopping else min(0.5, max(0.0, next_flush - time.monotonic())))
            if batch:
                self.send(batch)
            if stopping or time.monotonic() >= next_flush:
                self.flush()
                next_flush = time.monotonic() + self._flush_s
            if stopping:
                return
            self._stop.wait(PAUSE_S)

    def _drain(self, timeout: float) -> list[tuple[ClusterFacts, EventFacts]]:
        batch = []
        try:
            batch.append(self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait())
            while True:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            return batch

    def send(self, batch: list[tuple[ClusterFacts, EventFacts]]) -> None:
        """Create each new Event; count a repeat of a recent one in its series (written by `flush`)."""
        now = time.monotonic()
        for cluster, event in batch:
            key = (cluster.namespace, cluster.uid, event.reason, event.note)
            series = self._series.get(key)
            if series is not None and now - series.first_sent < SERIES_WINDOW_S:
                series.count += 1
                series.dirty = True
                self._series.move_to_end(key)
                self._results["series"].inc()
                continue
            try:
                self._series[key] = self._create(cluster, event, now)
            except Exception as exc:
                self._failed(exc, cluster.namespace, event.reason)
                continue
            self._results["created"].inc()
            while len(self._series) > MAX_SERIES:
                self._series.popitem(last=False)

    def flush(self) -> None:
        """Write the count of every series that grew since its last write."""
        for series in [s for s in self._series.values() if s.dirty]:
            series.dirty = False
            patch = {"series": {"count": series.count, "lastObservedTime": _now()}}
            try:
                self._client.patch(kubeapi.path(EVENTS, "events", series.namespace, series.name), patch,
                                   timeout=self._timeout_s)
            except Exception as exc:
                self._failed(exc, series.namespace, "series")

    def _failed(self, exc: Exception, namespace: str, what: str) -> None:
        self._results["failed"].inc()
        log.warning("event not recorded", extra={"namespace": namespace, "event": what,
                                                 "error": type(exc).__name__})

    def _create(self, cluster: ClusterFacts, event: EventFacts, now: float) -> _Series:
        name = f"{cluster.name}.{time.time_ns():x}"[:253]
        body: Any = {
            "apiVersion": EVENTS, "kind": "Event",
            "metadata": {"name": name, "namespace": cluster.namespace},
            "eventTime": _now(), "reportingController": CONTROLLER, "reportingInstance": self._instance,
            "action": ACTION, "reason": event.reason, "type": event.type, "note": event.note,
            "regarding": {"apiVersion": "ray.io/v1", "kind": "RayCluster", "namespace": cluster.namespace,
                          "name": cluster.name, "uid": cluster.uid},
        }
        self._client.create(kubeapi.path(EVENTS, "events", cluster.namespace), body, timeout=self._timeout_s)
        return _Series(name=name, namespace=cluster.namespace, count=1, first_sent=now)
