"""The Event a head pod's admission records on its RayCluster: its content (from the one mutation), who gets
one, and the recorder's queue, series and drop counting over a stand-in for the events API (the real apiserver
is in tests/e2e/test_validate_e2e.py)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from testkit.kuberay_pods import pod, raycluster
from testkit.processes import wait_until
from webhook.admission import review
from webhook.admission.handler import Admission
from webhook.admission.metrics import Metrics
from webhook.admission.recorder import EventRecorder
from webhook.common.kubeapi import Client
from webhook.core.events import CONFIGURED, DENIED, INCOMPLETE, MAX_NOTE, EventFacts
from webhook.core.mutation import mutate
from webhook.core.namespace import NamespaceFacts
from webhook.core.pod import Owner, read_ray_pod
from webhook.core.raycluster import ClusterFacts, parse_raycluster
from webhook.core.settings import SecretRef, Settings

FT = {"ray.io/ft-enabled": "true"}
ADDRESS = {"ray-ft-webhook.io/redis-address": "redis:6379"}
SECRET = {"ray-ft-webhook.io/redis-password-secret": "redis-password/pw"}
PASSWORD = "plain-text-password-42"


def event_for(cluster: dict[str, Any], role: str = "head", settings: Settings | None = None,
              **pod_args: Any) -> EventFacts | None:
    p = pod(cluster, role, **pod_args)
    facts = read_ray_pod(p, "default")
    assert facts is not None
    return mutate(parse_raycluster(cluster), facts, settings or Settings()).event


def test_configured_names_each_value_and_its_source() -> None:
    event = event_for(raycluster(annotations={**FT, **ADDRESS, **SECRET}))
    assert event is not None and (event.reason, event.type) == (CONFIGURED, "Normal")
    assert "RAY_REDIS_ADDRESS=redis:6379 (annotation ray-ft-webhook.io/redis-address)" in event.note
    assert "REDIS_PASSWORD=Secret redis-password/pw (annotation ray-ft-webhook.io/redis-password-secret)" in event.note
    assert "RAY_external_storage_namespace=6a2f1e0c-9d7b-4c1e-8f3a-2b5d7e9c1a44 (the RayCluster's uid)" in event.note
    assert event.note.startswith("injected ray.io/ft-enabled, ray.io/external-storage-namespace, ")
    assert "--redis-password" in event.note


def test_admin_defaults_are_named_as_the_source() -> None:
    settings = Settings(default_redis_address="redis.ray:6379", default_redis_password_secret=SecretRef("r", "k"))
    event = event_for(raycluster(annotations=FT), settings=settings)
    assert event is not None
    assert "RAY_REDIS_ADDRESS=redis.ray:6379 (the admin's default --default-redis-address)" in event.note


def test_plain_text_password_never_in_the_note() -> None:
    cluster = raycluster(annotations=FT, options={"redisAddress": "redis:6379", "redisPassword": {"value": PASSWORD}})
    event = event_for(cluster)
    assert event is not None and PASSWORD not in event.note
    assert "REDIS_PASSWORD=(plain text) (gcsFaultToleranceOptions.redisPassword)" in event.note


def test_incomplete_when_no_redis_address() -> None:
    event = event_for(raycluster(annotations={**FT, **SECRET}))
    assert event is not None and (event.reason, event.type) == (INCOMPLETE, "Warning")
    assert event.note.startswith("GCS fault tolerance is on but no Redis address is set")
    assert "; injected " in event.note


def test_incomplete_when_a_username_cannot_be_used() -> None:
    event = event_for(raycluster(annotations={**FT, **ADDRESS, "ray-ft-webhook.io/redis-username": "ray"}))
    assert event is not None and event.reason == INCOMPLETE
    assert event.note.startswith("REDIS_USERNAME from ray-ft-webhook.io/redis-username not injected")


def test_a_plain_warning_is_not_incomplete() -> None:
    event = event_for(raycluster(annotations={**FT, **ADDRESS}, head_start_params={"redis-password": PASSWORD}))
    assert event is not None and event.reason == CONFIGURED and PASSWORD not in event.note


def test_denied_repeats_the_denial() -> None:
    event = event_for(raycluster(annotations={**FT, "ray-ft-webhook.io/inject": "perhaps"}))
    assert event is not None and (event.reason, event.type) == (DENIED, "Warning")
    assert event.note == ("RayCluster default/raycluster-external-redis: annotation ray-ft-webhook.io/inject: "
                          "'perhaps' is not \"true\" or \"false\"")


@pytest.mark.parametrize(("cluster", "role"), [
    (raycluster(annotations={**FT, **ADDRESS}), "worker"),  # workers would repeat the head's
    (raycluster(annotations={**FT, "ray-ft-webhook.io/inject": "perhaps"}), "worker"),
    (raycluster(annotations=ADDRESS), "head"),  # FT off
    (raycluster(annotations={**FT, **ADDRESS, "ray-ft-webhook.io/inject": "false"}), "head"),
])
def test_no_event(cluster: dict[str, Any], role: str) -> None:
    assert event_for(cluster, role) is None


def test_no_event_when_the_head_already_has_everything() -> None:
    """A reinvocation after another webhook: the first admission's Event said it all."""
    from webhook.cli.render import render

    cluster = raycluster(annotations={**FT, **ADDRESS, **SECRET})
    patched = render(cluster, pod(cluster, "head"), Settings()).pod
    facts = read_ray_pod(patched, "default")
    assert facts is not None
    assert mutate(parse_raycluster(cluster), facts, Settings()).event is None


def test_note_is_cut_to_the_api_limit() -> None:
    cluster = raycluster(annotations={**FT, "ray-ft-webhook.io/redis-address": "r" * 2000 + ":6379", **SECRET})
    event = event_for(cluster)
    assert event is not None and len(event.note.encode()) <= MAX_NOTE and event.note.endswith("...")


# -- the handler: who records ---------------------------------------------------------------------------------

class Recorded:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def record(self, cluster: ClusterFacts, event: EventFacts) -> None:
        self.events.append((cluster.name, event.reason))


class Lookup:
    def __init__(self, cluster: dict[str, Any]) -> None:
        self.facts = parse_raycluster(cluster)

    def cached(self, owner: Owner) -> ClusterFacts | None:
        return self.facts

    async def fetch(self, owner: Owner) -> ClusterFacts:
        return self.facts

    def ready(self) -> bool:
        return True

    def clusters(self) -> list[ClusterFacts]:
        return [self.facts]

    def namespace(self, name: str) -> NamespaceFacts | None:
        return NamespaceFacts(name)

    async def fetch_namespace(self, name: str) -> NamespaceFacts:
        return NamespaceFacts(name)


@pytest.mark.parametrize(("role", "dry_run", "recorded"), [
    ("head", False, [("raycluster-external-redis", CONFIGURED)]),
    ("head", True, []),
    ("worker", False, []),
])
def test_handler_records_head_events_except_dry_runs(role: str, dry_run: bool, recorded: list[Any]) -> None:
    cluster = raycluster(annotations={**FT, **ADDRESS})
    recorder = Recorded()
    admission = Admission(Lookup(cluster), Settings(), Metrics(), recorder)  # type: ignore[arg-type]
    req = review.AdmissionRequest(uid="u", group="", kind="Pod", operation="CREATE", namespace="default",
                                  object=pod(cluster, role), dry_run=dry_run)
    response, _ = asyncio.run(admission.answer(req))
    assert response["allowed"] is True and recorder.events == recorded


@pytest.mark.parametrize(("annotations", "role", "dry_run", "counted"), [
    ({**FT}, "head", False, 1.0),             # no Redis address: GCSFaultToleranceIncomplete
    ({**FT}, "head", True, 0.0),              # a dry run creates no pod
    ({**FT}, "worker", False, 0.0),           # only heads get the Event
    ({**FT, **ADDRESS}, "head", False, 0.0),  # complete
])
def test_heads_admitted_incomplete_are_counted(annotations: dict[str, str], role: str, dry_run: bool,
                                               counted: float) -> None:
    """`ray_ft_webhook_incomplete_heads_total` (the alert RayFTWebhookIncompleteHeads), with or without Events."""
    cluster = raycluster(annotations=annotations)
    metrics = Metrics()
    admission = Admission(Lookup(cluster), Settings(), metrics, None)  # type: ignore[arg-type]
    req = review.AdmissionRequest(uid="u", group="", kind="Pod", operation="CREATE", namespace="default",
                                  object=pod(cluster, role), dry_run=dry_run)
    response, _ = asyncio.run(admission.answer(req))
    assert response["allowed"] is True
    assert metrics.registry.get_sample_value("ray_ft_webhook_incomplete_heads_total") == counted


def test_dry_run_is_read_from_the_review() -> None:
    body = b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u", "dryRun": true}}'
    assert review.parse_review(body).dry_run is True
    assert review.parse_review(body.replace(b"true", b'"yes"')).dry_run is False


# -- the recorder over a stand-in events API --------------------------------------------------------------------

class EventsAPI(Client):
    """The API client with its create and merge-patch recorded here; `gate`, when set, holds every call until
    released (a slow apiserver)."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.gate, self.fail = gate, fail

    def create(self, path: str, body: Any, timeout: Any = None) -> None:
        assert path == "/apis/events.k8s.io/v1/namespaces/default/events" and timeout == 5.0, (path, timeout)
        self._call("create", body)

    def patch(self, path: str, body: Any, timeout: Any = None) -> None:
        assert path.startswith("/apis/events.k8s.io/v1/namespaces/default/events/") and timeout == 5.0
        self._call("patch", (path.rpartition("/")[2], body))

    def _call(self, kind: str, body: Any) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise TimeoutError("slow")
        self.calls.append((kind, body))


def recorder(api: EventsAPI, metrics: Metrics, queue_size: int = 8) -> EventRecorder:
    return EventRecorder(api, metrics, "webhook-0", queue_size=queue_size, flush_s=0.1)


def count(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("ray_ft_webhook_events_total", {"result": result}) or 0.0


CLUSTER = parse_raycluster(raycluster())
EVENT = EventFacts(CONFIGURED, "Normal", "injected X")


def test_repeats_become_one_create_and_one_series_patch_per_flush() -> None:
    api, metrics = EventsAPI(), Metrics()
    r = recorder(api, metrics)
    r.send([(CLUSTER, EVENT)] * 2)
    r.send([(CLUSTER, EVENT)])
    assert [kind for kind, _ in api.calls] == ["create"]
    r.flush()
    r.flush()  # nothing new: no second write
    assert [kind for kind, _ in api.calls] == ["create", "patch"]
    created = api.calls[0][1]
    assert created["regarding"] == {"apiVersion": "ray.io/v1", "kind": "RayCluster", "namespace": "default",
                                    "name": CLUSTER.name, "uid": CLUSTER.uid}
    assert created["reportingController"] == "ray-ft-webhook" and created["reportingInstance"] == "webhook-0"
    name, patch = api.calls[1][1]
    assert name == created["metadata"]["name"] and patch["series"]["count"] == 3
    assert (count(metrics, "created"), count(metrics, "series")) == (1, 2)


def test_a_later_repeat_patches_the_series_and_another_note_is_a_new_event() -> None:
    api, metrics = EventsAPI(), Metrics()
    r = recorder(api, metrics)
    r.send([(CLUSTER, EVENT)])
    r.flush()
    r.send([(CLUSTER, EVENT)])
    r.flush()
    r.send([(CLUSTER, EventFacts(CONFIGURED, "Normal", "injected Y"))])
    r.flush()
    assert [kind for kind, _ in api.calls] == ["create", "patch", "create"]
    assert api.calls[1][1][1]["series"]["count"] == 2


def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    """The sender is stuck (not started here: a slow apiserver looks the same from the queue's side)."""
    metrics = Metrics()
    r = recorder(EventsAPI(), metrics, queue_size=4)
    for _ in range(10):
        r.record(CLUSTER, EVENT)  # put_nowait: returns at once
    assert count(metrics, "dropped") == 6


def test_the_sender_thread_drains_the_queue_in_order() -> None:
    api, metrics = EventsAPI(), Metrics()
    r = recorder(api, metrics)
    r.start()
    try:
        r.record(CLUSTER, EVENT)
        r.record(CLUSTER, EventFacts(CONFIGURED, "Normal", "injected Y"))
        r.record(CLUSTER, EventFacts(DENIED, "Warning", "last"))
        r.record(CLUSTER, EVENT)
        wait_until("the sender to write three Events and a series", lambda: len(api.calls) == 4, 10)
        assert [body["note"] for _, body in api.calls[:3]] == ["injected X", "injected Y", "last"]
        assert api.calls[3][1][1]["series"]["count"] == 2
    finally:
        r.stop()


def test_a_failing_call_is_counted_and_logged_without_the_note(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    recorder(EventsAPI(fail=True), metrics).send([(CLUSTER, EventFacts(CONFIGURED, "Normal", PASSWORD))])
    assert count(metrics, "failed") == 1
    assert PASSWORD not in caplog.text and "event not recorded" in caplog.text


# -- the note, exactly -------------------------------------------------------------------------------------------

def test_a_note_is_cut_to_the_byte_limit_and_never_mid_character() -> None:
    from webhook.core.events import denied_event
    assert denied_event("a" * MAX_NOTE).note == "a" * MAX_NOTE
    assert denied_event("a" * (MAX_NOTE + 1)).note == "a" * (MAX_NOTE - 3) + "..."
    # The limit falls inside an é: it is left out whole.
    assert denied_event("a" * (MAX_NOTE - 4) + "é" * 4).note == "a" * (MAX_NOTE - 4) + "..."
    assert denied_event("a" * (MAX_NOTE - 5) + "é" * 4).note == "a" * (MAX_NOTE - 5) + "é..."


def test_head_event_names_the_heads_own_timeout_and_every_gap() -> None:
    from webhook.cli.render import render
    cluster = raycluster(annotations={**FT, **ADDRESS, **SECRET})
    settings = Settings(head_reconnect_timeout_s=30)
    event = render(cluster, pod(cluster, "head"), settings).event
    assert event is not None and event.reason == CONFIGURED
    assert ("RAY_gcs_rpc_server_reconnect_timeout_s=30 (the admin's default --head-reconnect-timeout-s)"
            in event.note)
    # Nothing left to inject, and two gaps: both told, then that nothing was injected.
    bare = raycluster(annotations={**FT, "ray-ft-webhook.io/redis-username": "ray"})
    head = render(bare, pod(bare, "head"), Settings()).pod
    again = render(bare, head, Settings()).event
    assert again is not None and again.reason == INCOMPLETE
    assert again.note == ("GCS fault tolerance is on but no Redis address is set: Ray keeps GCS state in memory; "
                          "REDIS_USERNAME from ray-ft-webhook.io/redis-username not injected: no Redis password "
                          "either; Ray's GCS aborts on that; nothing injected")


def test_no_event_without_values_whatever_the_plan() -> None:
    from webhook.core.events import head_event
    from webhook.core.plan import EnvVar, Plan
    assert head_event(Plan(env=(EnvVar("X", "1"),)), None) is None


def test_a_cluster_without_a_uid_names_the_owners_uid_as_the_storage_namespace() -> None:
    """A RayCluster read from a file has no uid: the pod's owner reference gives it, in the Event as in the patch."""
    cluster = raycluster(annotations={**FT, **ADDRESS})
    p = pod(cluster, "head")
    del cluster["metadata"]["uid"]
    facts = read_ray_pod(p, "default")
    assert facts is not None and facts.owner.uid
    event = mutate(parse_raycluster(cluster), facts, Settings()).event
    assert event is not None
    assert f"RAY_external_storage_namespace={facts.owner.uid} (the RayCluster's uid)" in event.note
