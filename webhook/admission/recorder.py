"""`EventRecorder`: Events on RayClusters (events.k8s.io/v1), sent off the admission hot path.

An admission only puts the Event on a bounded queue (`record`: O(1), never blocks, never fails). One daemon
thread takes what is queued and writes it with a time-bounded call. An Event that repeats one sent in the last
`SERIES_WINDOW_S` (same RayCluster, reason and note) is not created again: the first one's `series` is
patched with the new count, once per batch however many repeats the batch holds (client-go's aggregation,
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
from typing import Any

from webhook.admission.metrics import Metrics
from webhook.core.events import EventFacts
from webhook.core.raycluster import ClusterFacts

log = logging.getLogger(__name__)

CONTROLLER = "ray-ft-webhook"
ACTION = "AdmitHeadPod"
QUEUE_SIZE = 256
# Events taken from the queue in one batch; repeats within it become one write.
BATCH = 64
SERIES_WINDOW_S = 600.0
# Series remembered for aggregation (oldest forgotten first): bounds memory whatever the number of clusters.
MAX_SERIES = 1024
CALL_TIMEOUT_S = 5.0


@dataclass
class _Series:
    name: str
    count: int
    first_sent: float


Key = tuple[str, str, str, str]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventRecorder:
    """Records Events for admitted head pods; `start` the sending thread, `stop` it."""

    def __init__(self, api_client: Any, metrics: Metrics, instance: str, queue_size: int = QUEUE_SIZE,
                 timeout_s: float = CALL_TIMEOUT_S) -> None:
        from kubernetes import client

        self._api = client.EventsV1Api(api_client)
        self._queue: queue.Queue[tuple[ClusterFacts, EventFacts]] = queue.Queue(maxsize=queue_size)
        self._instance, self._timeout_s = instance[:128], timeout_s
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
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.send(batch)

    def send(self, batch: list[tuple[ClusterFacts, EventFacts]]) -> None:
        """Write one batch: a create per new Event, one series patch per repeated one."""
        pending: OrderedDict[Key, tuple[ClusterFacts, EventFacts, int]] = OrderedDict()
        for cluster, event in batch:
            key = (cluster.namespace, cluster.uid, event.reason, event.note)
            _, _, repeats = pending.get(key, (cluster, event, 0))
            pending[key] = (cluster, event, repeats + 1)
        for key, (cluster, event, repeats) in pending.items():
            try:
                self._write(key, cluster, event, repeats)
            except Exception as exc:
                self._results["failed"].inc(repeats)
                log.warning("event not recorded", extra={
                    "raycluster": f"{cluster.namespace}/{cluster.name}", "reason": event.reason,
                    "error": type(exc).__name__})

    def _write(self, key: Key, cluster: ClusterFacts, event: EventFacts, repeats: int) -> None:
        series = self._series.get(key)
        if series is not None and time.monotonic() - series.first_sent < SERIES_WINDOW_S:
            series.count += repeats
            patch = {"series": {"count": series.count, "lastObservedTime": _now()}}
            self._api.patch_namespaced_event(series.name, cluster.namespace, patch, _request_timeout=self._timeout_s,
                                             _content_type="application/merge-patch+json")
            self._series.move_to_end(key)
            self._results["series"].inc(repeats)
            return
        name = f"{cluster.name}.{time.time_ns():x}"[:253]
        body: Any = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": name, "namespace": cluster.namespace},
            "eventTime": _now(), "reportingController": CONTROLLER, "reportingInstance": self._instance,
            "action": ACTION, "reason": event.reason, "type": event.type, "note": event.note,
            "regarding": {"apiVersion": "ray.io/v1", "kind": "RayCluster", "namespace": cluster.namespace,
                          "name": cluster.name, "uid": cluster.uid},
        }
        self._api.create_namespaced_event(cluster.namespace, body, _request_timeout=self._timeout_s)
        self._results["created"].inc()
        self._series[key] = _Series(name=name, count=1, first_sent=time.monotonic())
        if repeats > 1:
            self._write(key, cluster, event, repeats - 1)
        while len(self._series) > MAX_SERIES:
            self._series.popitem(last=False)
