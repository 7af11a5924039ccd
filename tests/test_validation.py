"""`/validate`'s decision (`core.validation`), table-driven, and its adapter over AdmissionReviews: the findings
the person applying a RayCluster, RayService or RayJob reads, what is denied, and the UPDATE rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from testkit.kuberay_pods import raycluster
from webhook.admission import review
from webhook.admission.lookup import StaticLookup
from webhook.admission.validate import Validation
from webhook.core.namespace import parse_namespace
from webhook.core.plan import NO_ADDRESS, plan_cluster
from webhook.core.raycluster import ClusterFacts, parse_raycluster
from webhook.core.settings import SecretRef, Settings
from webhook.core.validation import KUBERAY_REFUSES, Verdict, describe, shared_storage, validate

FT = {"ray.io/ft-enabled": "true"}
ADDRESS = {"ray-ft-webhook.io/redis-address": "redis:6379"}
SECRET = {"ray-ft-webhook.io/redis-password-secret": "redis-password"}
TIMEOUT = "RAY_gcs_rpc_server_reconnect_timeout_s"
PASSWORD = "s3cr3t-hunter2-value"


def facts(**kwargs: Any) -> ClusterFacts:
    return parse_raycluster(raycluster(**kwargs))


def check(cluster: ClusterFacts, old: ClusterFacts | None = None, others: tuple[ClusterFacts, ...] = (),
          settings: Settings | None = None, kind: str = "RayCluster") -> Verdict:
    return validate(kind, cluster, old, others, settings or Settings())


def test_complete_cluster_has_nothing_to_say() -> None:
    assert check(facts(annotations={**FT, **ADDRESS, **SECRET})) == Verdict()


def test_ft_off_has_nothing_to_say() -> None:
    assert check(facts()) == Verdict()


@pytest.mark.parametrize(("settings", "warned"), [
    (Settings(), True),
    (Settings(default_redis_address="redis.ray:6379"), False),
])
def test_no_redis_address_from_any_source(settings: Settings, warned: bool) -> None:
    assert (NO_ADDRESS in check(facts(annotations=FT), settings=settings).warnings) is warned


def test_head_template_address_counts() -> None:
    cluster = facts(annotations=FT, head_env=[{"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"}])
    assert NO_ADDRESS not in check(cluster).warnings


@pytest.mark.parametrize("kwargs", [
    {"annotations": {**FT, **ADDRESS, "ray-ft-webhook.io/redis-username": "ray"}},
    {"annotations": {**FT, **ADDRESS}, "head_env": [{"name": "REDIS_USERNAME", "value": "ray"}]},
    {"annotations": {**ADDRESS}, "options": {"redisAddress": "redis:6379", "redisUsername": {"value": "ray"}}},
])
def test_username_without_password_warns(kwargs: dict[str, Any]) -> None:
    warnings = check(facts(**kwargs)).warnings
    assert any("no password from any source: Ray's GCS aborts" in w for w in warnings), warnings


@pytest.mark.parametrize("password", [
    {"annotations": {**FT, **ADDRESS, **SECRET, "ray-ft-webhook.io/redis-username": "ray"}},
    {"annotations": {**FT, **ADDRESS, "ray-ft-webhook.io/redis-username": "ray"},
     "head_env": [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "r", "key": "p"}}}]},
])
def test_username_with_password_is_fine(password: dict[str, Any]) -> None:
    assert not any("password" in w for w in check(facts(**password)).warnings)


def test_username_with_admin_default_password_is_fine() -> None:
    cluster = facts(annotations={**FT, **ADDRESS, "ray-ft-webhook.io/redis-username": "ray"})
    settings = Settings(default_redis_password_secret=SecretRef("redis", "password"))
    assert check(cluster, settings=settings) == Verdict()


@pytest.mark.parametrize(("head", "worker", "warned"), [
    (None, None, False),  # Ray's 60 s against the injected 600 s
    ("600", None, True),  # equal: not above
    ("601", None, True),
    ("599", None, False),
    (None, "60", True),  # the worker group's own value
    (None, "61", False),
    (None, "soon", True),  # unreadable: named
])
def test_worker_timeout_must_exceed_the_heads(head: str | None, worker: str | None, warned: bool) -> None:
    cluster = facts(annotations={**FT, **ADDRESS, **SECRET},
                    head_env=[{"name": TIMEOUT, "value": head}] if head else None,
                    worker_env=[{"name": TIMEOUT, "value": worker}] if worker else None)
    warnings = check(cluster).warnings
    assert bool(warnings) is warned, warnings
    if worker == "soon":
        assert "worker group 'small-group' env" in warnings[0]
    elif warned:
        assert warnings[0].startswith("worker group 'small-group' GCS reconnect timeout"), warnings


def test_head_timeout_annotation_is_compared() -> None:
    cluster = facts(annotations={**FT, **ADDRESS, **SECRET, "ray-ft-webhook.io/head-reconnect-timeout-s": "900"})
    assert "not above the head's 900s" in check(cluster).warnings[0]


def test_plain_text_password_warns_without_the_password() -> None:
    cluster = facts(annotations={**FT, **ADDRESS}, head_start_params={"redis-password": PASSWORD})
    warnings = check(cluster).warnings
    assert warnings == ("the Redis password is plain text in the RayCluster; keep it in a Secret",)
    assert not any(PASSWORD in w for w in warnings)


def test_unknown_annotation_warns() -> None:
    cluster = facts(annotations={**FT, **ADDRESS, **SECRET, "ray-ft-webhook.io/redis-adress": "x"})
    assert check(cluster).warnings == (
        "unknown annotation ray-ft-webhook.io/redis-adress on the RayCluster is ignored",)


def test_kuberay_conflicts_warn_and_say_kuberay_refuses() -> None:
    cluster = facts(annotations={**FT}, options={"redisAddress": "redis:6379"})
    warnings = check(cluster).warnings
    assert warnings[0].startswith("KubeRay conflict: ray.io/ft-enabled must not be set")
    assert KUBERAY_REFUSES in warnings


def test_kuberay_conflicts_deny_when_the_admin_says_so() -> None:
    cluster = facts(annotations={**FT}, options={"redisAddress": "redis:6379"})
    verdict = check(cluster, settings=Settings(deny_kuberay_conflicts=True))
    assert verdict.denied is not None and "ray.io/ft-enabled must not be set" in verdict.denied
    assert verdict.denied.startswith("RayCluster default/raycluster-external-redis: KubeRay conflict")


BAD = {**FT, "ray-ft-webhook.io/worker-reconnect-timeout-s": "ten"}


def test_unparseable_annotation_is_denied_with_the_pod_paths_message() -> None:
    from testkit.kuberay_pods import pod
    from webhook.cli.render import render

    cluster = raycluster(annotations=BAD)
    verdict = check(parse_raycluster(cluster))
    pod_denial = render(cluster, pod(cluster, "head"), Settings()).denied
    assert verdict.denied == pod_denial
    assert verdict.denied == ("RayCluster default/raycluster-external-redis: annotation "
                              "ray-ft-webhook.io/worker-reconnect-timeout-s: 'ten' is not a positive integer (seconds)")


def test_update_keeping_a_bad_annotation_is_allowed_with_a_warning() -> None:
    """A cluster created before the webhook must stay updatable: KubeRay removes its finalizer by an update."""
    old = facts(annotations=BAD)
    verdict = check(facts(annotations={**BAD, "other": "x"}), old=old)
    assert verdict.denied is None and "is not a positive integer" in verdict.warnings[0]


def test_update_introducing_a_bad_annotation_is_denied() -> None:
    verdict = check(facts(annotations=BAD), old=facts(annotations=FT))
    assert verdict.denied is not None


def test_cluster_being_deleted_is_never_denied() -> None:
    cluster = raycluster(annotations=BAD)
    cluster["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    verdict = check(parse_raycluster(cluster), old=facts(annotations=FT))
    assert verdict.denied is None and verdict.warnings


PINNED = {**FT, **ADDRESS, **SECRET, "ray.io/external-storage-namespace": "shared"}


def other(name: str, uid: str, annotations: dict[str, str], deleting: bool = False) -> ClusterFacts:
    cluster = raycluster(name=name, uid=uid, annotations=annotations)
    if deleting:
        cluster["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return parse_raycluster(cluster)


@pytest.mark.parametrize(("others", "shared_with"), [
    ((other("b", "uid-b", PINNED),), "default/b"),
    ((other("b", "uid-b", PINNED), other("a", "uid-a", PINNED)), "default/a, default/b"),
    ((other("b", "uid-b", PINNED, deleting=True),), None),  # going away
    ((other("b", "uid-b", {**PINNED, "ray-ft-webhook.io/redis-address": "other:6379"}),), None),
    ((other("b", "uid-b", {**PINNED, "ray.io/external-storage-namespace": "mine"}),), None),
    ((other("b", "uid-b", {**FT, **ADDRESS, **SECRET}),), None),  # its uid is its namespace
    ((other("raycluster-external-redis", "6a2f1e0c-9d7b-4c1e-8f3a-2b5d7e9c1a44", PINNED),), None),  # itself
])
def test_shared_storage_namespace_names_the_other_cluster(others: tuple[ClusterFacts, ...],
                                                          shared_with: str | None) -> None:
    warnings = check(facts(annotations=PINNED), others=others).warnings
    if shared_with is None:
        assert warnings == ()
    else:
        assert warnings == (f"GCS state at risk: same Redis storage namespace 'shared' as RayCluster "
                            f"{shared_with}",)


def test_the_same_short_service_name_in_two_namespaces_is_two_redises() -> None:
    """`redis:6379` is the Service `redis` of the pod's own namespace."""
    theirs = parse_raycluster(raycluster(name="b", namespace="team-b", uid="uid-b", annotations=PINNED))
    assert check(facts(annotations=PINNED), others=(theirs,)) == Verdict()
    fqdn = {**PINNED, "ray-ft-webhook.io/redis-address": "redis.default.svc.cluster.local:6379"}
    theirs = parse_raycluster(raycluster(name="b", namespace="team-b", uid="uid-b", annotations=fqdn))
    assert "as RayCluster team-b/b" in check(facts(annotations=PINNED), others=(theirs,)).warnings[0]


def test_pinned_to_another_clusters_uid_is_shared_too() -> None:
    mine = facts(annotations={**FT, **ADDRESS, **SECRET, "ray.io/external-storage-namespace": "uid-b"})
    assert "as RayCluster default/b" in check(mine, others=(other("b", "uid-b", {**FT, **ADDRESS}),)
                                                     ).warnings[0]


def test_shared_storage_namespace_denied_on_create_when_the_admin_says_so() -> None:
    settings = Settings(deny_shared_storage_namespace=True)
    others = (other("b", "uid-b", PINNED),)
    assert check(facts(annotations=PINNED), others=others, settings=settings).denied == (
        "RayCluster default/raycluster-external-redis: storage namespace 'shared' in Redis 'redis:6379' is also used "
        "by RayCluster default/b: two clusters overwrite each other's GCS state")
    # An update that keeps the namespace it already had is not the one to refuse.
    kept = check(facts(annotations={**PINNED, "x": "y"}), old=facts(annotations=PINNED), others=others,
                 settings=settings)
    assert kept.denied is None and "same Redis storage" in kept.warnings[0]


@pytest.mark.parametrize("kind", ["RayService", "RayJob"])
def test_a_creator_that_pins_the_storage_namespace_is_warned(kind: str) -> None:
    verdict = check(facts(annotations=PINNED, uid=""), kind=kind)
    when = "on upgrade" if kind == "RayService" else "on retry"
    assert verdict.warnings == (f"pinned storage namespace 'shared': {when} the old RayCluster's Redis cleanup "
                                "wipes the new one's GCS state",)


def test_update_that_changes_the_address_says_to_recreate_the_head() -> None:
    old = facts(annotations={**FT, **ADDRESS, **SECRET})
    new = facts(annotations={**FT, **SECRET, "ray-ft-webhook.io/redis-address": "redis-2:6379"})
    assert check(new, old=old).warnings == (
        "changes RAY_REDIS_ADDRESS: re-create the head pod to apply (the webhook acts at pod creation)",)


def test_update_that_turns_ft_on_says_to_recreate_the_head() -> None:
    old = facts(annotations={**ADDRESS, **SECRET})
    notes = check(facts(annotations={**FT, **ADDRESS, **SECRET}), old=old).warnings
    assert notes[0].startswith("changes injection on/off") and "re-create the head pod" in notes[0]


def test_update_of_the_worker_timeout_applies_to_new_workers() -> None:
    old = facts(annotations={**FT, **ADDRESS, **SECRET})
    new = facts(annotations={**FT, **ADDRESS, **SECRET, "ray-ft-webhook.io/worker-reconnect-timeout-s": "900"})
    assert check(new, old=old).warnings == (
        "changes the workers' reconnect timeout: applies to worker pods created from now on",)


def test_update_without_a_relevant_change_says_nothing() -> None:
    old = facts(annotations={**FT, **ADDRESS, **SECRET})
    assert check(facts(annotations={**FT, **ADDRESS, **SECRET, "team": "a"}), old=old) == Verdict()


def test_describe_never_shows_a_password() -> None:
    cluster = facts(annotations=FT, options={"redisAddress": "redis:6379", "redisPassword": {"value": PASSWORD},
                                             "redisUsername": {"value": "ray"}})
    values = plan_cluster(cluster, Settings()).values
    assert values is not None
    rows = {name: (shown, source) for name, shown, source in describe(values)}
    assert rows["REDIS_PASSWORD"] == ("(plain text)", "gcsFaultToleranceOptions.redisPassword")
    assert rows["REDIS_USERNAME"] == ("ray", "gcsFaultToleranceOptions.redisUsername")
    assert rows["RAY_external_storage_namespace"] == (cluster.uid, "the RayCluster's uid")
    assert PASSWORD not in repr(describe(values))


def test_describe_names_the_secret_and_the_admin_default() -> None:
    settings = Settings(default_redis_address="redis.ray:6379", default_redis_password_secret=SecretRef("r", "k"))
    values = plan_cluster(facts(annotations=FT), settings).values
    assert values is not None
    rows = {name: (shown, source) for name, shown, source in describe(values)}
    assert rows["REDIS_PASSWORD"] == ("Secret r/k", "the admin's default --default-redis-password-secret")
    assert rows["RAY_REDIS_ADDRESS"] == ("redis.ray:6379", "the admin's default --default-redis-address")
    assert rows[f"{TIMEOUT} (workers)"] == ("600", "the admin's default --worker-reconnect-timeout-s")


# -- the adapter: AdmissionReview requests of each kind ---------------------------------------------------------

def ask(obj: Any, kind: str = "RayCluster", operation: str = "CREATE", old: Any = None, group: str = "ray.io",
        clusters: tuple[ClusterFacts, ...] = (), settings: Settings | None = None) -> tuple[dict[str, Any], str]:
    req = review.AdmissionRequest(uid="u1", group=group, kind=kind, operation=operation, namespace="team-a",
                                  object=obj, old_object=old)
    return asyncio.run(Validation(StaticLookup({(c.namespace, c.name): c for c in clusters}),
                                  settings or Settings()).answer(req))


def service(annotations: dict[str, str], spec_field: str = "rayClusterConfig") -> dict[str, Any]:
    cluster = raycluster(annotations=annotations)
    return {"apiVersion": "ray.io/v1", "kind": "RayService",
            "metadata": {"name": "svc", "namespace": "team-a", "annotations": annotations},
            "spec": {spec_field: cluster["spec"]}}


def test_adapter_answers_warnings() -> None:
    response, outcome = ask(raycluster(annotations=FT))
    assert outcome == "warned" and response == {"uid": "u1", "allowed": True, "warnings": [NO_ADDRESS]}


def test_adapter_allows_silently() -> None:
    assert ask(raycluster(annotations={**FT, **ADDRESS, **SECRET})) == ({"uid": "u1", "allowed": True}, "allowed")


def test_adapter_denies_with_our_message() -> None:
    response, outcome = ask(raycluster(annotations=BAD))
    assert outcome == "denied" and response["allowed"] is False
    assert response["status"]["message"].startswith("ray-ft-webhook: RayCluster default/raycluster-external-redis: ")


def test_adapter_reads_a_rayservice_embedded_cluster_under_its_name() -> None:
    response, outcome = ask(service(BAD), kind="RayService")
    assert outcome == "denied" and "RayService team-a/svc: annotation" in response["status"]["message"]


def test_adapter_reads_a_rayjob_embedded_cluster() -> None:
    job = service(PINNED, spec_field="rayClusterSpec")
    response, outcome = ask({**job, "kind": "RayJob"}, kind="RayJob")
    assert outcome == "warned" and response["warnings"][0].startswith("pinned storage namespace 'shared': on retry")


def test_adapter_ignores_a_rayjob_on_an_existing_cluster() -> None:
    job = {"metadata": {"name": "j", "annotations": BAD}, "spec": {"clusterSelector": {"ray.io/cluster": "c"}}}
    assert ask(job, kind="RayJob") == ({"uid": "u1", "allowed": True}, "ignored")


@pytest.mark.parametrize(("kind", "group", "operation"), [
    ("Pod", "", "CREATE"), ("RayCluster", "ray.io", "DELETE"), ("RayCluster", "other.io", "CREATE")])
def test_adapter_ignores_what_it_does_not_validate(kind: str, group: str, operation: str) -> None:
    assert ask(raycluster(annotations=BAD), kind=kind, group=group, operation=operation)[1] == "ignored"


def test_adapter_update_compares_with_the_old_object() -> None:
    response, outcome = ask(raycluster(annotations={**BAD, "x": "y"}), operation="UPDATE",
                            old=raycluster(annotations=BAD))
    assert outcome == "warned" and response["allowed"] is True


def test_adapter_says_nothing_for_an_update_of_neither_spec_nor_annotations() -> None:
    """KubeRay adds its finalizer by an update: its log must not repeat the findings."""
    old = raycluster(annotations=FT)
    new = raycluster(annotations=FT)
    new["metadata"]["finalizers"] = ["ray.io/gcs-ft-redis-cleanup-finalizer"]
    assert ask(new, operation="UPDATE", old=old) == ({"uid": "u1", "allowed": True}, "ignored")
    assert ask(raycluster(annotations={**FT, "x": "y"}), operation="UPDATE", old=old)[1] == "warned"


def test_adapter_checks_the_live_clusters() -> None:
    response, _ = ask(raycluster(annotations=PINNED), clusters=(other("b", "uid-b", PINNED),))
    assert "as RayCluster default/b" in response["warnings"][0]


def test_every_warning_fits_on_a_kubectl_line_for_ordinary_names() -> None:
    """Warnings are cut at 119 characters by the codec; the ones with names in them must fit for ordinary names."""
    verdicts = [
        check(facts(annotations=PINNED, name="x" * 30, namespace="team-" + "y" * 10),
              others=(parse_raycluster(raycluster(name="z" * 30, namespace="team-" + "y" * 10, uid="uid-b",
                                                  annotations=PINNED)),)),
        check(facts(annotations=PINNED, uid=""), kind="RayService"),
        check(facts(annotations={**FT}, options={"redisAddress": "redis:6379"})),
        check(facts(annotations={**FT, **ADDRESS}, worker_env=[{"name": TIMEOUT, "value": "60"}])),
    ]
    for verdict in verdicts:
        assert verdict.warnings and all(len(w) <= review.MAX_WARNING_LENGTH for w in verdict.warnings), verdict


# -- the rest of the rules, exactly ------------------------------------------------------------------------------

def test_embedded_raycluster_keeps_only_what_the_raycluster_inherits() -> None:
    from webhook.core.validation import embedded_raycluster
    svc = {"metadata": {"name": "svc", "namespace": "team-a", "annotations": {"a": "b"}, "uid": "u",
                        "labels": {"l": "v"}}, "spec": {"rayClusterConfig": {"x": 1}}}
    assert embedded_raycluster("RayService", svc) == {
        "metadata": {"name": "svc", "namespace": "team-a", "annotations": {"a": "b"}}, "spec": {"x": 1}}
    assert embedded_raycluster("RayJob", {"spec": {"rayClusterSpec": {"y": 2}}}) == {"metadata": {}, "spec": {"y": 2}}
    assert embedded_raycluster("RayJob", {"metadata": None, "spec": {"rayClusterSpec": {}}}) == {
        "metadata": {}, "spec": {}}
    assert embedded_raycluster("RayService", {"spec": "nope"}) is None
    assert embedded_raycluster("RayCluster", "nope") is None
    assert embedded_raycluster("RayService", "nope") is None


def test_describe_shows_credentials_by_where_they_come_from() -> None:
    secret = {"valueFrom": {"secretKeyRef": {"name": "users", "key": "ray"}}}
    config = {"valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}
    cluster = facts(options={"redisAddress": "redis:6379", "redisUsername": secret, "redisPassword": config})
    values = plan_cluster(cluster, Settings()).values
    assert values is not None
    rows = {name: (shown, source) for name, shown, source in describe(values)}
    assert rows["REDIS_USERNAME"] == ("Secret users/ray", "gcsFaultToleranceOptions.redisUsername")
    assert rows["REDIS_PASSWORD"] == ("valueFrom", "gcsFaultToleranceOptions.redisPassword")


def test_two_problems_are_listed_in_one_denial_or_note() -> None:
    bad = {**FT, "ray-ft-webhook.io/worker-reconnect-timeout-s": "ten",
           "ray-ft-webhook.io/head-reconnect-timeout-s": "x"}
    denied = check(facts(annotations=bad)).denied
    assert denied is not None and denied.startswith("RayCluster default/raycluster-external-redis: annotation ")
    assert denied.count("; annotation ray-ft-webhook.io/") == 1
    conflicting = facts(annotations={**FT, "ray.io/external-storage-namespace": "x"}, options={"redisAddress": "r:1"})
    verdict = check(conflicting, settings=Settings(deny_kuberay_conflicts=True))
    assert verdict.denied is not None
    assert verdict.denied.count("; KubeRay conflict: ") == 1
    old = facts(annotations={**FT, **ADDRESS, **SECRET})
    new = facts(annotations={**FT, "ray-ft-webhook.io/redis-address": "redis-2:6379",
                             "ray-ft-webhook.io/redis-password-secret": "other"})
    assert check(new, old=old).warnings == ("changes RAY_REDIS_ADDRESS, REDIS_PASSWORD: re-create the head pod to "
                                            "apply (the webhook acts at pod creation)",)


def test_an_update_keeping_a_kuberay_conflict_is_not_denied() -> None:
    conflicting = facts(annotations={**FT}, options={"redisAddress": "redis:6379"})
    verdict = check(conflicting, old=conflicting, settings=Settings(deny_kuberay_conflicts=True))
    assert verdict.denied is None and KUBERAY_REFUSES in verdict.warnings


def test_a_cluster_without_a_redis_address_shares_nothing() -> None:
    assert check(facts(annotations=FT), others=(other("b", "uid-b", {**FT, **ADDRESS}),)).warnings == (NO_ADDRESS,)
    assert shared_storage(facts(annotations=FT), plan_cluster(facts(annotations=FT), Settings()),
                          [other("b", "uid-b", {**FT, **ADDRESS})], Settings()) is None


def test_shared_storage_names_every_other_cluster_with_a_long_namespace_cut() -> None:
    long = {**PINNED, "ray.io/external-storage-namespace": "n" * 25}
    mine = facts(annotations=long)
    found = shared_storage(mine, plan_cluster(mine, Settings()),
                           [other("b", "uid-b", long), other("a", "uid-a", long)], Settings())
    assert found == (f"GCS state at risk: same Redis storage namespace {'n' * 24!r}... as RayCluster "
                     "default/a, default/b")


def test_a_creator_pinning_through_its_options_is_warned_with_the_namespace_cut() -> None:
    verdict = check(facts(uid="", options={"redisAddress": "redis:6379", "externalStorageNamespace": "s" * 17}),
                    kind="RayService")
    assert verdict.warnings == (f"pinned storage namespace {'s' * 16!r}...: on upgrade the old RayCluster's Redis "
                                "cleanup wipes the new one's GCS state",)


TENANT = parse_namespace({"metadata": {"name": "default", "annotations": {
    "ray-ft-webhook.io/redis-address": "tenant-redis:6379", "ray-ft-webhook.io/redis-password-secret": "pw"}}})


def test_the_namespaces_defaults_count_for_the_new_and_the_old_object() -> None:
    new = facts(annotations={**FT, "team": "a"})
    assert validate("RayCluster", new, None, (), Settings(), TENANT) == Verdict()
    assert validate("RayCluster", new, facts(annotations=FT), (), Settings(), TENANT) == Verdict()


def test_the_namespaces_defaults_count_for_the_other_clusters() -> None:
    pinned = {**FT, "ray.io/external-storage-namespace": "shared"}
    new, old, b = facts(annotations={**pinned, "x": "y"}), facts(annotations=pinned), other("b", "uid-b", pinned)
    tenant_of = {"default": TENANT}.get
    shared = "GCS state at risk: same Redis storage namespace 'shared' as RayCluster default/b"
    settings = Settings(deny_shared_storage_namespace=True)
    # An update that keeps the namespace it had: a warning, not a denial.
    assert validate("RayCluster", new, old, (b,), settings, TENANT, tenant_of) == Verdict(warnings=(shared,))
    created = validate("RayCluster", new, None, (b,), settings, TENANT, tenant_of)
    assert created.denied == ("RayCluster default/raycluster-external-redis: storage namespace 'shared' in Redis "
                              "'tenant-redis:6379' is also used by RayCluster default/b: two clusters overwrite "
                              "each other's GCS state")
