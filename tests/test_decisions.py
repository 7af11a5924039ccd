"""The memo of `/mutate` decisions (admission/decisions.py): a remembered answer is always the answer the
handler would compute afresh, whatever changed in between (the RayCluster, the Namespace's defaults, the
settings, the pod), and the memo stays within its bounds."""

from __future__ import annotations

import asyncio
import copy
import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from testkit.kuberay_pods import pod, quickstart_raycluster
from tests.test_properties import admin, scenario
from webhook.admission import review
from webhook.admission.decisions import MAX_ENTRY_BYTES, Decisions
from webhook.admission.handler import Admission
from webhook.admission.lookup import matches
from webhook.admission.metrics import Metrics
from webhook.core.events import EventFacts
from webhook.core.namespace import NamespaceFacts, parse_namespace
from webhook.core.pod import Owner, read_ray_pod
from webhook.core.raycluster import ClusterFacts, parse_raycluster
from webhook.core.settings import SecretRef, Settings

NAMESPACES = [
    NamespaceFacts("default"),
    parse_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "annotations": {
        "ray-ft-webhook.io/ft-default": "enabled", "ray-ft-webhook.io/redis-address": "tenant:6379",
        "ray-ft-webhook.io/redis-password-secret": "tenant-pw", "ray-ft-webhook.io/worker-reconnect-timeout-s": "1200",
    }}}),
]
# Settings that differ from any `admin` in every default.
OTHER_ADMIN = Settings(default_redis_address="other:6379", default_redis_password_secret=SecretRef("other-pw"),
                       worker_reconnect_timeout_s=1800, head_reconnect_timeout_s=45)


class SwitchableLookup:
    """One RayCluster and one Namespace, both replaceable between admissions (as the watch replaces them)."""

    def __init__(self, cluster: ClusterFacts, namespace: NamespaceFacts) -> None:
        self.cluster, self.namespace_facts = cluster, namespace

    def cached(self, owner: Owner) -> ClusterFacts | None:
        same = (owner.namespace, owner.name) == (self.cluster.namespace, self.cluster.name)
        return self.cluster if same and matches(self.cluster, owner) else None

    async def fetch(self, owner: Owner) -> ClusterFacts:
        raise AssertionError("every test cluster is cached")

    def ready(self) -> bool:
        return True

    def clusters(self) -> list[ClusterFacts]:
        return [self.cluster]

    def namespace(self, name: str) -> NamespaceFacts | None:
        return self.namespace_facts

    async def fetch_namespace(self, name: str) -> NamespaceFacts:
        return self.namespace_facts


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, EventFacts]] = []

    def record(self, cluster: ClusterFacts, event: EventFacts) -> None:
        self.events.append((cluster.uid, event))


def request(obj: Any, uid: str, dry_run: bool = False) -> review.AdmissionRequest:
    return review.AdmissionRequest(uid=uid, group="", kind="Pod", operation="CREATE", namespace="default",
                                   object=copy.deepcopy(obj), dry_run=dry_run)


change = st.tuples(st.sampled_from(["cluster", "reparse", "namespace", "settings"]), st.integers(0, 1))


@settings(max_examples=300, deadline=None)
@given(st.lists(scenario(), min_size=2, max_size=2), admin, st.lists(change, max_size=8), st.lists(st.booleans()))
def test_a_remembered_answer_is_the_fresh_answer(cases: list[tuple[dict[str, Any], dict[str, Any], Settings]],
                                                  first_admin: Settings, changes: list[tuple[str, int]],
                                                  dry_runs: list[bool]) -> None:
    """Random pods of random RayClusters (all of the same name and uid, so a switch is an update of the one
    RayCluster: its resourceVersion changes, its uid does not), admitted twice each before the first and after
    every random change: an update of the RayCluster, a re-list of the same content, a change of the
    Namespace's defaults or of the settings. Each answer of the one long-lived handler (with its memo) equals
    that of a new handler (an empty memo), Events included."""
    lookup = SwitchableLookup(parse_raycluster(cases[0][0]), NAMESPACES[0])
    recorder = Recorder()
    admins = [first_admin, OTHER_ADMIN]
    memo = Admission(lookup, admins[0], Metrics(), recorder)  # type: ignore[arg-type]
    current, n = 0, 0
    for action, i in [("start", 0), *changes]:
        if action == "cluster":
            lookup.cluster, current = parse_raycluster(cases[i][0]), i
        elif action == "reparse":  # the same content as a new object (a re-list)
            lookup.cluster = parse_raycluster(cases[current][0])
        elif action == "namespace":
            lookup.namespace_facts = NAMESPACES[i]
        elif action == "settings":
            memo.settings = admins[i]
        for _, obj, _ in [*cases, *cases]:
            fresh_recorder = Recorder()
            fresh = Admission(lookup, memo.settings, Metrics(), fresh_recorder)  # type: ignore[arg-type]
            n += 1
            req = request(obj, uid=f"u{n}", dry_run=dry_runs[n % len(dry_runs)] if dry_runs else False)
            expected = asyncio.run(fresh.answer(req))
            before = len(recorder.events)
            assert asyncio.run(memo.answer(req)) == expected
            assert recorder.events[before:] == fresh_recorder.events


def answer_twice(obj: Any, metrics: Metrics) -> tuple[Any, Any]:
    cluster = quickstart_raycluster()
    admission = Admission(SwitchableLookup(parse_raycluster(cluster), NamespaceFacts("default")), Settings(), metrics)
    first = asyncio.run(admission.answer(request(obj, "u1")))
    second = asyncio.run(admission.answer(request(obj, "u2")))
    return first, second


def test_the_second_identical_worker_is_answered_from_the_memo() -> None:
    metrics = Metrics()
    worker = pod(quickstart_raycluster(), "worker")
    (first, outcome1), (second, outcome2) = answer_twice(worker, metrics)
    assert first["uid"] == "u1" and second["uid"] == "u2"
    assert {**first, "uid": "u2"} == second and outcome1 == outcome2
    assert metrics.registry.get_sample_value("ray_ft_webhook_decisions_total", {"result": "miss"}) == 1
    assert metrics.registry.get_sample_value("ray_ft_webhook_decisions_total", {"result": "hit"}) == 1
    assert metrics.registry.get_sample_value("ray_ft_webhook_raycluster_cache_total", {"result": "hit"}) == 2


def test_a_pod_nested_deeper_than_orjson_encodes_is_answered_without_the_memo() -> None:
    """orjson parses 1024 levels but encodes 254: such a pod gets its answer, it is only not remembered."""
    worker = pod(quickstart_raycluster(), "worker")
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    worker["spec"]["containers"][0]["env"].append({"name": "DEEP", "valueFrom": {"deep": deep}})
    metrics = Metrics()
    (first, _), (second, _) = answer_twice(worker, metrics)
    assert first["allowed"] and "patch" in first and {**first, "uid": "u2"} == second
    assert metrics.registry.get_sample_value("ray_ft_webhook_decisions_total", {"result": "hit"}) == 0


def variants(count: int) -> list[dict[str, Any]]:
    """Workers of an FT RayCluster that differ in one annotation of the same size: one decision each."""
    worker = pod(ft_cluster(), "worker")
    out = []
    for n in range(count):
        variant = copy.deepcopy(worker)
        variant["metadata"]["annotations"] = {"n": f"{n:06d}"}
        out.append(variant)
    return out


def ft_cluster() -> dict[str, Any]:
    cluster = quickstart_raycluster()
    cluster["metadata"].setdefault("annotations", {})["ray.io/ft-enabled"] = "true"
    return cluster


def filled(pods: list[dict[str, Any]], max_bytes: int) -> Admission:
    lookup = SwitchableLookup(parse_raycluster(ft_cluster()), NamespaceFacts("default"))
    admission = Admission(lookup, Settings(default_redis_address="redis:6379"), Metrics(), memo_bytes=max_bytes)
    for n, obj in enumerate(pods):
        asyncio.run(admission.answer(request(obj, f"u{n}")))
        assert admission.decisions.size_bytes <= admission.decisions.max_bytes
    return admission


def test_the_memo_keeps_to_its_byte_budget_oldest_out_first() -> None:
    pods = variants(5)
    entry = filled(pods[:1], 1 << 20).decisions.size_bytes  # every variant's entry has this size
    admission = filled(pods, 3 * entry + entry // 2)
    assert len(admission.decisions) == 3
    kept = [admission.decisions.key(v, "default") in admission.decisions._entries for v in pods]
    assert kept == [False, False, True, True, True]
    big = copy.deepcopy(pods[0])
    big["metadata"]["annotations"]["big"] = "x" * MAX_ENTRY_BYTES
    asyncio.run(admission.answer(request(big, "u9")))
    assert admission.decisions.key(big, "default") is None and len(admission.decisions) == 3
    assert len(filled(pods[:1], entry - 1).decisions) == 0, "an entry over the whole budget is not kept"


def test_the_memo_counts_at_least_the_memory_its_entries_hold() -> None:
    """The budget is in bytes of memory: what 300 entries hold (tracemalloc) is within what the memo counts."""
    pods = variants(300)
    requests = [request(obj, f"u{n}") for n, obj in enumerate(pods)]
    lookup = SwitchableLookup(parse_raycluster(ft_cluster()), NamespaceFacts("default"))
    admission = Admission(lookup, Settings(default_redis_address="redis:6379"), Metrics(), memo_bytes=1 << 30)
    loop = asyncio.new_event_loop()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for req in requests:
            loop.run_until_complete(admission.answer(req))
        held = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
        loop.close()
    assert len(admission.decisions) == 300
    assert held <= admission.decisions.size_bytes, (held, admission.decisions.size_bytes)


def test_workers_of_one_group_share_a_decision() -> None:
    """What differs between KubeRay's workers of a group (the generated name, the replica index) is not read."""
    cluster = quickstart_raycluster()
    decisions = Decisions()
    keys = {decisions.key(pod(cluster, "worker", suffix=s, replica_index=i), "default")
            for i, s in enumerate(["a1b2c", "d3e4f", "g5h6i"])}
    assert len(keys) == 1 and None not in keys
    assert decisions.key(pod(cluster, "head"), "default") not in keys
    assert decisions.key(pod(cluster, "worker"), "other") not in keys


def test_only_pods_labelled_with_a_ray_role_are_worth_a_key() -> None:
    worker = pod(quickstart_raycluster(), "worker")
    decisions = Decisions()
    assert decisions.key(worker, "default") is not None
    for broken in ({}, [], "pod", {"metadata": []}, {"metadata": {"labels": None}},
                   {"metadata": {"labels": {"ray.io/node-type": ["head"]}}},
                   {"metadata": {"labels": {"ray.io/node-type": "gpu"}}}):
        assert decisions.key(broken, "default") is None
    for label in (["head"], "gpu", None):  # a whole pod whose label names no role
        other = copy.deepcopy(worker)
        other["metadata"]["labels"]["ray.io/node-type"] = label
        assert decisions.key(other, "default") is None
    assert Decisions(max_bytes=0).key(worker, "default") is None


class _Noting:
    """What the recording containers share: every read noted in `reads` as the path of the value read."""

    path: tuple[Any, ...]
    reads: set[tuple[Any, ...]]

    def note(self, key: Any) -> None:
        self.reads.add((*self.path, key))

    def __getitem__(self, key: Any) -> Any:
        self.note(key)
        return super().__getitem__(key)  # type: ignore[misc]

    def __iter__(self) -> Any:
        self.note("*")
        return super().__iter__()  # type: ignore[misc]


class _Recorded(_Noting, dict):  # type: ignore[type-arg]
    def __init__(self, value: dict[str, Any], path: tuple[Any, ...], reads: set[tuple[Any, ...]]) -> None:
        super().__init__({k: _record(v, (*path, k), reads) for k, v in value.items()})
        self.path, self.reads = path, reads

    def get(self, key: Any, default: Any = None) -> Any:
        self.note(key)
        return super().get(key, default)

    def items(self) -> Any:
        self.note("*")
        return super().items()

    def __contains__(self, key: Any) -> bool:
        self.note(key)
        return super().__contains__(key)


class _RecordedList(_Noting, list):  # type: ignore[type-arg]
    def __init__(self, value: list[Any], path: tuple[Any, ...], reads: set[tuple[Any, ...]]) -> None:
        super().__init__(_record(v, (*path, i), reads) for i, v in enumerate(value))
        self.path, self.reads = path, reads

    def __len__(self) -> int:
        self.note("len")
        return super().__len__()


def _record(value: Any, path: tuple[Any, ...], reads: set[tuple[Any, ...]]) -> Any:
    if isinstance(value, dict):
        return _Recorded(value, path, reads)
    if isinstance(value, list):
        return _RecordedList(value, path, reads)
    return value


# The paths `pod.read_inputs` puts in the key (everything under them is in it), and the maps and lists read on
# the way there (only to reach those).
IN_THE_KEY = [("metadata", "labels", "ray.io/node-type"), ("metadata", "labels", "ray.io/cluster"),
              ("metadata", "namespace"), ("metadata", "ownerReferences"), ("metadata", "annotations"),
              ("spec", "containers", 0, "env"), ("spec", "containers", 0, "args"),
              ("spec", "containers", 0, "volumeMounts"), ("spec", "volumes")]
ON_THE_WAY = {("metadata",), ("metadata", "labels"), ("spec",), ("spec", "containers"), ("spec", "containers", "len"),
              ("spec", "containers", 0)}


@settings(max_examples=200, deadline=None)
@given(scenario(), st.sampled_from(["default", ""]))
def test_read_ray_pod_reads_nothing_outside_the_key(case: tuple[dict[str, Any], dict[str, Any], Settings],
                                                    namespace: str) -> None:
    """Every value `read_ray_pod` reads is in `read_inputs`'s parts: two pods with equal parts get equal facts."""
    _, obj, _ = case
    reads: set[tuple[Any, ...]] = set()
    read_ray_pod(_record(obj, (), reads), namespace)
    outside = {r for r in reads if r not in ON_THE_WAY and not any(r[:len(k)] == k for k in IN_THE_KEY)}
    assert not outside, f"read_ray_pod read {sorted(map(str, outside))}, which pod.read_inputs leaves out"


def test_a_memo_of_zero_bytes_is_off() -> None:
    lookup = SwitchableLookup(parse_raycluster(quickstart_raycluster()), NamespaceFacts("default"))
    metrics = Metrics()
    admission = Admission(lookup, Settings(), metrics, memo_bytes=0)
    worker = pod(quickstart_raycluster(), "worker")
    first, second = (asyncio.run(admission.answer(request(worker, uid))) for uid in ("u1", "u2"))
    assert {**first[0], "uid": "u2"} == second[0] and len(admission.decisions) == 0
    assert metrics.registry.get_sample_value("ray_ft_webhook_decisions_total", {"result": "miss"}) == 0
