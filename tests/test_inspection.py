"""`check`'s pure verdict (core.inspection): every head status, what counts as incomplete, the values and their
sources, and that no secret value ever reaches a report. Head pods come from the KubeRay pod model, admitted
(or not) by the one code path the server runs (`render`)."""

from __future__ import annotations

import copy
from typing import Any

from testkit.kuberay_pods import LEGACY, QUICKSTART_UID, env_secret, pod, quickstart_raycluster, raycluster
from webhook.cli.check import as_json, exit_code, table
from webhook.cli.render import render
from webhook.core.inspection import FT, TEMPLATE, ClusterReport, Head, HeadReport, Status, inspect_cluster, pick_head
from webhook.core.namespace import NamespaceFacts, parse_namespace
from webhook.core.plan import NO_ADDRESS
from webhook.core.raycluster import parse_raycluster
from webhook.core.settings import SecretRef, Settings
from webhook.core.validation import KUBERAY_REFUSES

FT_ON = {"ray.io/ft-enabled": "true"}
ADMIN = Settings(default_redis_address="redis.admin:6379", default_redis_password_secret=SecretRef("admin-pw", "pw"))


def admitted(cluster: dict[str, Any], settings: Settings, **pod_args: Any) -> dict[str, Any]:
    """The head pod as the webhook under `settings` stored it."""
    return render(cluster, pod(cluster, "head", **pod_args), settings).pod


def check(cluster: dict[str, Any], heads: list[dict[str, Any]], settings: Settings = ADMIN,
          others: tuple[dict[str, Any], ...] = ()) -> ClusterReport:
    facts = parse_raycluster(cluster)
    return inspect_cluster(facts, heads, settings, [facts, *(parse_raycluster(o) for o in others)])


def test_head_admitted_by_the_webhook_carries_the_configuration() -> None:
    rc = raycluster(annotations=FT_ON)
    r = check(rc, [admitted(rc, ADMIN)])
    assert (r.ft, r.head.status, r.status, r.gaps) == (FT.ON, Head.CARRIES, Status.COMPLETE, ())
    assert r.why == "annotation ray.io/ft-enabled=true"
    assert r.head.pod == "raycluster-external-redis-head-x7k2p"
    assert dict((n, (v, s)) for n, v, s in r.values) == {
        "RAY_external_storage_namespace": (QUICKSTART_UID, "the RayCluster's uid"),
        "RAY_REDIS_ADDRESS": ("redis.admin:6379", "the admin's default --default-redis-address"),
        "REDIS_PASSWORD": ("Secret admin-pw/pw", "the admin's default --default-redis-password-secret"),
        "RAY_gcs_rpc_server_reconnect_timeout_s (workers)": ("600", "the admin's default --worker-reconnect-timeout-s"),
    }
    assert exit_code([r]) == 0


def test_kuberays_own_ft_values_count_as_carried() -> None:
    """KubeRay >= 1.3 writes the options' values itself; present wins, and they are not the webhook's to judge."""
    password = {"valueFrom": env_secret("REDIS_PASSWORD", "s")["valueFrom"]}
    rc = raycluster(options={"redisAddress": "redis:6379", "redisPassword": password})
    r = check(rc, [admitted(rc, ADMIN, kuberay_ft=True)])
    assert (r.why, r.head.status, r.status) == ("spec.gcsFaultToleranceOptions", Head.CARRIES, Status.COMPLETE)


def test_head_created_before_the_webhook_lacks_what_the_plan_adds() -> None:
    rc = raycluster(annotations=FT_ON)
    r = check(rc, [pod(rc, "head")])
    assert (r.head.status, r.status) == (Head.MISSING, Status.INCOMPLETE)
    assert r.head.missing == ("ray.io/ft-enabled", "ray.io/external-storage-namespace",
                              "RAY_external_storage_namespace", "RAY_REDIS_ADDRESS", "REDIS_PASSWORD",
                              "--redis-password")
    assert r.gaps == ()  # the cluster itself is fine: only its running head is not
    assert exit_code([r]) == 1


def test_head_admitted_before_a_change_of_the_admins_defaults_is_stale() -> None:
    rc = raycluster(annotations=FT_ON)
    head = admitted(rc, ADMIN)
    now = Settings(default_redis_address="redis.new:6379", default_redis_password_secret=SecretRef("new-pw"))
    r = check(rc, [head], now)
    assert (r.head.status, r.head.pod, r.status) == (Head.STALE, HEAD_NAME, Status.INCOMPLETE)
    assert r.head.stale == (
        "RAY_REDIS_ADDRESS: the head has 'redis.admin:6379', now 'redis.new:6379'",
        "REDIS_PASSWORD: the head has Secret admin-pw/pw, now Secret new-pw/password",
    )


def test_head_admitted_before_a_change_of_the_raycluster_is_stale() -> None:
    """A pinned storage namespace: the env and the annotation the webhook wrote both differ now."""
    rc = raycluster(annotations=FT_ON)
    head = admitted(rc, ADMIN)
    changed = copy.deepcopy(rc)
    changed["metadata"]["annotations"]["ray.io/external-storage-namespace"] = "pinned"
    r = check(changed, [head])
    assert r.head.status == Head.STALE
    assert r.head.stale == (
        f"RAY_external_storage_namespace: the head has '{QUICKSTART_UID}', now 'pinned'",
        f"annotation ray.io/external-storage-namespace: the head has '{QUICKSTART_UID}', now 'pinned'",
    )


def test_a_value_injected_earlier_and_not_now_is_stale() -> None:
    rc = raycluster(annotations=FT_ON)
    head = admitted(rc, Settings(default_redis_address="r:1", head_reconnect_timeout_s=30))
    r = check(rc, [head], Settings(default_redis_address="r:1"))
    assert r.head.status == Head.STALE
    assert r.head.stale == ("RAY_gcs_rpc_server_reconnect_timeout_s: the head has '30', now none",)


def test_values_the_user_set_are_never_stale() -> None:
    """Present wins at admission: a head whose own RAY_REDIS_ADDRESS differs from the source is not the
    webhook's to re-create."""
    rc = raycluster(annotations=FT_ON)
    head = admitted(rc, ADMIN)
    head["spec"]["containers"][0]["env"].insert(0, {"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "5"})
    r = check(rc, [head], Settings(default_redis_address="redis.admin:6379", head_reconnect_timeout_s=9,
                                   default_redis_password_secret=SecretRef("admin-pw", "pw")))
    assert r.head.status == Head.CARRIES


def test_plain_text_passwords_are_never_shown_even_when_they_differ() -> None:
    rc = raycluster(options={"redisAddress": "r:6379", "redisPassword": {"value": "first-s3cret"}})
    head = admitted(rc, Settings())
    changed = copy.deepcopy(rc)
    changed["spec"]["gcsFaultToleranceOptions"]["redisPassword"]["value"] = "second-s3cret"
    r = check(changed, [head], Settings())
    assert r.head.stale == ("REDIS_PASSWORD: the head has (plain text), now (plain text) (another value)",)
    shown = repr(r) + table([r], "x") + repr(as_json(r))
    assert "s3cret" not in shown
    assert ("REDIS_PASSWORD", "(plain text)", "gcsFaultToleranceOptions.redisPassword") in r.values


def test_no_head_pod_is_not_complete() -> None:
    rc = raycluster(annotations=FT_ON)
    r = check(rc, [])
    assert (r.head.status, r.head.pod, r.status) == (Head.NONE, None, Status.INCOMPLETE)


def test_no_redis_address_from_any_source_is_incomplete_even_with_a_complete_head() -> None:
    rc = raycluster(annotations=FT_ON)
    r = check(rc, [admitted(rc, Settings())], Settings())
    assert r.head.status == Head.CARRIES
    assert r.gaps == (NO_ADDRESS,) and NO_ADDRESS in r.findings
    assert r.status == Status.INCOMPLETE
    assert "  incomplete: GCS fault tolerance is on but no Redis address is set" in table([r], "x")


def test_an_address_ray_cannot_parse_is_no_address() -> None:
    rc = raycluster(options={"redisAddress": "http://redis:6379"})
    r = check(rc, [admitted(rc, ADMIN)])
    assert NO_ADDRESS in r.gaps and r.status == Status.INCOMPLETE
    assert any("redisAddress 'http://redis:6379' not injected" in f for f in r.findings)


def test_username_without_password_is_incomplete() -> None:
    rc = raycluster(annotations={**FT_ON, "ray-ft-webhook.io/redis-username": "ray"})
    r = check(rc, [admitted(rc, Settings(default_redis_address="r:1"))], Settings(default_redis_address="r:1"))
    assert r.gaps == ("Redis username from annotation ray-ft-webhook.io/redis-username but no password from any "
                      "source: Ray's GCS aborts",)
    assert r.status == Status.INCOMPLETE


def test_a_worker_timeout_not_above_the_heads_is_a_warning_only() -> None:
    rc = raycluster(annotations={**FT_ON, "ray-ft-webhook.io/worker-reconnect-timeout-s": "30"})
    r = check(rc, [admitted(rc, ADMIN)])
    assert r.status == Status.COMPLETE and r.gaps == ()
    assert "warning: worker group 'small-group' GCS reconnect timeout 30s" in table([r], "x")


def test_a_shared_storage_namespace_is_incomplete() -> None:
    pinned = {**FT_ON, "ray.io/external-storage-namespace": "shared"}
    a = raycluster(name="a", uid="uid-a", annotations=pinned)
    b = raycluster(name="b", uid="uid-b", annotations=pinned)
    r = check(a, [admitted(a, ADMIN)], others=(b,))
    assert r.status == Status.INCOMPLETE
    assert r.gaps == ("GCS state at risk: same Redis storage namespace 'shared' as RayCluster default/b",)


def test_values_the_head_template_sets_are_shown_as_winning() -> None:
    r = check(quickstart_raycluster(), [admitted(quickstart_raycluster(), ADMIN)])
    assert r.status == Status.COMPLETE
    values = {n: (v, s) for n, v, s in r.values}
    assert values["RAY_REDIS_ADDRESS"] == ("redis:6379", "the head template's env (wins)")
    assert values["REDIS_PASSWORD"] == ("(set)", "the head template's env (wins)")


def test_ft_off_and_skipped_clusters_are_not_counted() -> None:
    off = raycluster()
    r = check(off, [admitted(off, ADMIN)])
    assert (r.ft, r.head.status, r.status, r.values) == (FT.OFF, Head.NOT_APPLICABLE, Status.NOT_COUNTED, ())
    assert r.why == "no ray.io/ft-enabled=true annotation and no spec.gcsFaultToleranceOptions"
    skipped = raycluster(annotations={**FT_ON, "ray-ft-webhook.io/inject": "false"})
    r2 = check(skipped, [pod(skipped, "head")])
    assert (r2.ft, r2.why, r2.status) == (FT.SKIPPED, "ray-ft-webhook.io/inject is false", Status.NOT_COUNTED)
    assert exit_code([r, r2]) == 0


def checked_after_ft_was_turned_off() -> ClusterReport:
    """The report on a head admitted while FT was on, once the RayCluster's ft-enabled annotation is gone."""
    rc = raycluster(annotations=FT_ON)
    head = admitted(rc, ADMIN)
    off = copy.deepcopy(rc)
    del off["metadata"]["annotations"]["ray.io/ft-enabled"]
    return check(off, [head])


def test_a_head_injected_while_ft_was_on_is_stale_once_it_is_off() -> None:
    r = checked_after_ft_was_turned_off()
    assert (r.ft, r.head.status, r.status) == (FT.OFF, Head.STALE, Status.NOT_COUNTED)
    assert "RAY_REDIS_ADDRESS: injected earlier, not now" in r.head.stale


def test_a_denied_cluster_is_incomplete_whether_or_not_ft_is_on() -> None:
    rc = raycluster(annotations={"ray-ft-webhook.io/head-reconnect-timeout-s": "soon"})
    r = check(rc, [])
    assert (r.ft, r.status) == (FT.DENIED, Status.INCOMPLETE)
    assert r.gaps == ("annotation ray-ft-webhook.io/head-reconnect-timeout-s: 'soon' is not a positive integer "
                      "(seconds)",)


def test_a_cluster_being_deleted_is_not_counted() -> None:
    rc = raycluster(annotations=FT_ON)
    rc["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    r = check(rc, [])
    assert (r.deleting, r.status) == (True, Status.NOT_COUNTED)


def test_an_unreadable_head_pod_is_reported_not_raised() -> None:
    rc = raycluster(annotations=FT_ON)
    head = pod(rc, "head")
    head["spec"]["containers"][0]["env"] = "nope"
    r = check(rc, [head])
    assert (r.head.status, r.head.detail, r.status) == (
        Head.UNREADABLE, "spec.containers[0].env is not a list", Status.INCOMPLETE)


def test_pick_head_prefers_the_newest_live_head_of_this_raycluster() -> None:
    rc = raycluster(annotations=FT_ON)
    facts = parse_raycluster(rc)

    def head(suffix: str, created: str, uid: str = QUICKSTART_UID, deleting: bool = False) -> dict[str, Any]:
        p = pod(rc, "head", suffix=suffix)
        p["metadata"]["creationTimestamp"] = created
        p["metadata"]["ownerReferences"][0]["uid"] = uid
        if deleting:
            p["metadata"]["deletionTimestamp"] = created
        return p

    old, new = head("old", "2026-01-01T00:00:00Z"), head("new", "2026-01-02T00:00:00Z")
    going = head("going", "2026-01-03T00:00:00Z", deleting=True)
    other = head("other", "2026-01-04T00:00:00Z", uid="a-previous-raycluster")
    assert pick_head(facts, [old, going, new, other]) is new
    assert pick_head(facts, [going, other]) is going
    assert pick_head(facts, [other]) is None


def test_no_clusters_exit_0() -> None:
    assert exit_code([]) == 0
    assert table([], "namespace x") == "No RayClusters in namespace x.\n"


def test_table_and_json() -> None:
    good, bad = raycluster(name="good", annotations=FT_ON), raycluster(name="bad", annotations=FT_ON)
    reports = [check(good, [admitted(good, ADMIN)]), check(bad, [pod(bad, "head")])]
    lines = table(reports, "x").splitlines()
    assert lines[:3] == [
        "NAMESPACE  RAYCLUSTER  FT  HEAD                         STATUS",
        "default    good        on  carries the configuration    complete",
        "default    bad         on  re-create the head to apply  incomplete",
    ]
    assert "  head pod bad-head-x7k2p: re-create the head to apply" in lines
    assert list(as_json(reports[0])) == [
        "namespace", "name", "ft", "why", "status", "deleting", "head", "values", "findings", "gaps"]
    assert as_json(reports[1])["head"]["missing"][:2] == ["ray.io/ft-enabled", "ray.io/external-storage-namespace"]


def test_kuberay_placeholder_the_webhook_replaced_is_compared_like_an_added_entry() -> None:
    """KubeRay <= 1.2's empty REDIS_PASSWORD, replaced in place by the webhook: carried, then stale."""
    rc = raycluster(annotations=FT_ON)
    head = admitted(rc, ADMIN, version=LEGACY)
    assert check(rc, [head]).head.status == Head.CARRIES
    r = check(rc, [head], Settings(default_redis_address="redis.admin:6379",
                                   default_redis_password_secret=SecretRef("rotated")))
    assert r.head.stale == ("REDIS_PASSWORD: the head has Secret admin-pw/pw, now Secret rotated/password",)


HEAD_NAME = "raycluster-external-redis-head-x7k2p"


def test_an_unreadable_or_foreign_head_pod_is_named_with_why() -> None:
    rc = raycluster(annotations=FT_ON)
    broken = pod(rc, "head")
    broken["spec"]["containers"][0]["env"] = "nope"
    assert check(rc, [broken]).head == HeadReport(Head.UNREADABLE, HEAD_NAME,
                                                  detail="spec.containers[0].env is not a list")
    # A worker labelled with the cluster's name is not its head.
    worker = pod(rc, "worker")
    r = check(rc, [worker])
    assert r.head == HeadReport(Head.UNREADABLE, "raycluster-external-redis-small-group-worker-x7k2p",
                                detail="not a head pod of a RayCluster")
    assert r.status == Status.INCOMPLETE
    # A pod of the cluster without Ray's node-type label is no Ray pod at all.
    unlabelled = pod(rc, "head")
    del unlabelled["metadata"]["labels"]["ray.io/node-type"]
    assert check(rc, [unlabelled]).head == HeadReport(Head.UNREADABLE, HEAD_NAME,
                                                      detail="not a head pod of a RayCluster")


def test_heads_of_clusters_the_webhook_leaves_alone_are_named() -> None:
    r = checked_after_ft_was_turned_off()
    assert (r.head.status, r.head.pod) == (Head.STALE, HEAD_NAME)
    assert r.head.stale == tuple(f"{n}: injected earlier, not now" for n in (
        "ray.io/ft-enabled", "ray.io/external-storage-namespace", "RAY_external_storage_namespace",
        "RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "--redis-password"))
    never = raycluster()
    assert check(never, [pod(never, "head")]).head == HeadReport(Head.NOT_APPLICABLE, HEAD_NAME)


def test_a_denied_cluster_still_reports_its_head() -> None:
    rc = raycluster(annotations={**FT_ON, "ray-ft-webhook.io/head-reconnect-timeout-s": "soon"})
    head = admitted(raycluster(annotations=FT_ON), ADMIN)
    r = check(rc, [head])
    denial = "annotation ray-ft-webhook.io/head-reconnect-timeout-s: 'soon' is not a positive integer (seconds)"
    assert r == ClusterReport("default", "raycluster-external-redis", FT.DENIED, "the webhook denies its pods", (),
                              (denial,), (denial,), r.head, False)
    # The webhook gives its pods nothing now: what it injected earlier is stale.
    assert (r.head.status, r.head.pod) == (Head.STALE, HEAD_NAME)
    assert "RAY_REDIS_ADDRESS: injected earlier, not now" in r.head.stale
    never = raycluster(annotations={"ray-ft-webhook.io/head-reconnect-timeout-s": "soon"})
    never["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    r2 = check(never, [pod(never, "head")])
    assert (r2.head, r2.deleting, r2.status) == (HeadReport(Head.NOT_APPLICABLE, HEAD_NAME), True, Status.NOT_COUNTED)


def test_off_and_skipped_reports_in_full() -> None:
    skipped = raycluster(options={"redisAddress": "redis:6379"},
                         annotations={"ray-ft-webhook.io/inject": "false", "ray.io/ft-enabled": "false"})
    skipped["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    r = check(skipped, [pod(skipped, "head")])
    conflict = next(f for f in r.findings if f != KUBERAY_REFUSES)
    assert r == ClusterReport("default", "raycluster-external-redis", FT.SKIPPED, "ray-ft-webhook.io/inject is false",
                              (), (conflict, KUBERAY_REFUSES), (), HeadReport(Head.NOT_APPLICABLE, HEAD_NAME), True)


def test_why_ft_is_on_names_both_fields() -> None:
    rc = raycluster(annotations={"ray.io/ft-enabled": "True"}, options={"redisAddress": "redis:6379"})
    assert check(rc, []).why == "annotation ray.io/ft-enabled=True and spec.gcsFaultToleranceOptions"
    assert check(raycluster(options={"redisAddress": "redis:6379"}), []).why == "spec.gcsFaultToleranceOptions"


def test_the_namespaces_defaults_judge_the_cluster_and_its_head() -> None:
    tenant = parse_namespace({"metadata": {"name": "team", "annotations": {
        "ray-ft-webhook.io/redis-address": "tenant-redis:6379",
        "ray-ft-webhook.io/redis-password-secret": "tenant-pw/secret",
        "ray-ft-webhook.io/head-reconnect-timeout-s": "45"}}})
    rc = raycluster(namespace="team", annotations=FT_ON)
    head = render(rc, pod(rc, "head"), ADMIN, {"metadata": {"name": "team", "annotations": {
        "ray-ft-webhook.io/redis-address": "tenant-redis:6379",
        "ray-ft-webhook.io/redis-password-secret": "tenant-pw/secret",
        "ray-ft-webhook.io/head-reconnect-timeout-s": "45"}}}).pod
    facts = parse_raycluster(rc)
    seen: list[str] = []

    def namespace_of(name: str) -> NamespaceFacts | None:
        seen.append(name)
        return tenant if name == "team" else None

    r = inspect_cluster(facts, [head], ADMIN, [facts], namespace_of)
    assert "team" in seen
    assert (r.head.status, r.status) == (Head.CARRIES, Status.COMPLETE)
    values = {n: (v, s) for n, v, s in r.values}
    assert values["RAY_REDIS_ADDRESS"] == ("tenant-redis:6379",
                                           "annotation ray-ft-webhook.io/redis-address on Namespace team")
    # Without the Namespace, the same head is stale against the admin's defaults.
    r2 = inspect_cluster(facts, [head], ADMIN, [facts])
    assert r2.head.status == Head.STALE
    assert "RAY_REDIS_ADDRESS: the head has 'tenant-redis:6379', now 'redis.admin:6379'" in r2.head.stale


def test_the_namespaces_defaults_find_a_shared_storage_namespace() -> None:
    """Another cluster keeps its state in the same Redis only through its Namespace's default address."""
    tenant = parse_namespace({"metadata": {"name": "team", "annotations": {
        "ray-ft-webhook.io/redis-address": "tenant-redis:6379"}}})
    pinned = {**FT_ON, "ray.io/external-storage-namespace": "shared"}
    a = parse_raycluster(raycluster(name="a", uid="uid-a", namespace="team", annotations=pinned))
    b = parse_raycluster(raycluster(name="b", uid="uid-b", namespace="team", annotations=pinned))
    r = inspect_cluster(a, [], ADMIN, [a, b], lambda name: tenant if name == "team" else None)
    shared = "GCS state at risk: same Redis storage namespace 'shared' as RayCluster team/b"
    assert r.gaps == (shared,) and r.findings == (shared,)


def test_values_rows_in_order_with_the_heads_own_timeout() -> None:
    rc = raycluster(annotations=FT_ON)
    s = Settings(default_redis_address="redis.admin:6379", head_reconnect_timeout_s=30)
    r = check(rc, [admitted(rc, s)], s)
    assert r.values == (
        ("RAY_external_storage_namespace", QUICKSTART_UID, "the RayCluster's uid"),
        ("RAY_REDIS_ADDRESS", "redis.admin:6379", "the admin's default --default-redis-address"),
        ("RAY_gcs_rpc_server_reconnect_timeout_s (head)", "30", "the admin's default --head-reconnect-timeout-s"),
        ("RAY_gcs_rpc_server_reconnect_timeout_s (workers)", "600", "the admin's default --worker-reconnect-timeout-s"),
    )


def test_the_head_templates_own_values_as_shown() -> None:
    template = [{"name": "RAY_REDIS_ADDRESS", "value": "redis://:hunter2@redis:6379"},
                {"name": "REDIS_PASSWORD", "value": ""},
                {"name": "RAY_external_storage_namespace", "value": "me:mine@home"},
                {"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "77"}]
    rc = raycluster(annotations=FT_ON, head_env=template)
    r = check(rc, [admitted(rc, ADMIN)])
    assert r.values == (
        ("RAY_external_storage_namespace", "(set)", TEMPLATE),
        ("RAY_REDIS_ADDRESS", "***@redis:6379", TEMPLATE),
        ("REDIS_PASSWORD", "(empty)", TEMPLATE),
        ("RAY_gcs_rpc_server_reconnect_timeout_s (head)", "77", TEMPLATE),
        ("RAY_gcs_rpc_server_reconnect_timeout_s (workers)", "600", "the admin's default --worker-reconnect-timeout-s"),
    )
    plain = raycluster(annotations=FT_ON, head_env=[{"name": "REDIS_PASSWORD", "value": "s3cret"}])
    assert ("REDIS_PASSWORD", "(plain text)", TEMPLATE) in check(plain, [admitted(plain, ADMIN)]).values


def _tamper(head: dict[str, Any], name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """`head` with its Ray container's env entry `name` replaced by `entry`."""
    env = head["spec"]["containers"][0]["env"]
    env[next(i for i, e in enumerate(env) if e["name"] == name)] = {"name": name, **entry}
    return head


def test_stale_credentials_are_shown_by_where_they_come_from() -> None:
    rc = raycluster(annotations=FT_ON)
    from_config = _tamper(admitted(rc, ADMIN), "REDIS_PASSWORD", {"valueFrom": {"configMapKeyRef": {"name": "c"}}})
    assert check(rc, [from_config]).head.stale == (
        "REDIS_PASSWORD: the head has valueFrom, now Secret admin-pw/pw",)
    plain = _tamper(admitted(rc, ADMIN), "REDIS_PASSWORD", {"value": "s3cret"})
    assert check(rc, [plain]).head.stale == ("REDIS_PASSWORD: the head has (plain text), now Secret admin-pw/pw",)
    empty = raycluster(options={"redisAddress": "r:6379", "redisPassword": {"value": ""}})
    r = check(empty, [_tamper(admitted(empty, Settings()), "REDIS_PASSWORD", {"value": "s3cret"})], Settings())
    assert r.head.stale == ("REDIS_PASSWORD: the head has (plain text), now empty",)


def test_stale_values_are_quoted_up_to_60_characters() -> None:
    long = "redis-" + "x" * 60 + ".svc:6379"
    rc = raycluster(annotations={**FT_ON, "ray.io/external-storage-namespace": "n" * 61})
    head = admitted(rc, Settings(default_redis_address=long))
    changed = copy.deepcopy(rc)
    changed["metadata"]["annotations"]["ray.io/external-storage-namespace"] = "m" * 61
    now = "r" * 55 + ":6379"
    r = check(changed, [head], Settings(default_redis_address=now))
    assert r.head.stale == (
        f"RAY_REDIS_ADDRESS: the head has {long[:60]!r}..., now {now!r}",
        f"RAY_external_storage_namespace: the head has {'n' * 60!r}..., now {'m' * 60!r}...",
        f"annotation ray.io/external-storage-namespace: the head has {'n' * 60!r}..., now {'m' * 60!r}...",
    )


def test_an_annotation_an_earlier_version_injected_and_this_one_does_not_is_stale() -> None:
    rc = raycluster(options={"redisAddress": "redis:6379"})
    head = admitted(rc, ADMIN)
    head["metadata"]["annotations"]["example.com/old"] = "o" * 61
    head["metadata"]["annotations"]["ray-ft-webhook.io/injected"] += ",example.com/old"
    assert check(rc, [head]).head.stale == (f"annotation example.com/old: the head has {'o' * 60!r}..., now none",)


def test_only_injected_env_entries_can_be_stale() -> None:
    """A head whose injected list names env entries only (no annotation) is still compared."""
    rc = raycluster(annotations=FT_ON)
    head = admitted(rc, ADMIN)
    head["metadata"]["annotations"]["ray-ft-webhook.io/injected"] = "RAY_REDIS_ADDRESS"
    now = Settings(default_redis_address="redis.new:6379", default_redis_password_secret=SecretRef("admin-pw", "pw"))
    assert check(rc, [head], now).head.stale == (
        "RAY_REDIS_ADDRESS: the head has 'redis.admin:6379', now 'redis.new:6379'",)
    head["metadata"]["annotations"]["ray-ft-webhook.io/injected"] = "ray.io/external-storage-namespace"
    head["metadata"]["annotations"]["ray.io/external-storage-namespace"] = "old"
    assert check(rc, [head], now).head.stale == (
        f"annotation ray.io/external-storage-namespace: the head has 'old', now '{QUICKSTART_UID}'",)


def test_pick_head_skips_what_is_not_this_clusters_head() -> None:
    rc = raycluster(annotations=FT_ON)
    facts = parse_raycluster(rc)

    def head(suffix: str, created: str | None) -> dict[str, Any]:
        p = pod(rc, "head", suffix=suffix)
        if created is not None:
            p["metadata"]["creationTimestamp"] = created
        return p

    mine = head("mine", "2026-01-01T00:00:00Z")
    no_metadata = {"metadata": "nope"}
    unlabelled = head("unlabelled", "2026-01-05T00:00:00Z")
    unlabelled["metadata"]["labels"] = None
    other_cluster = head("other", "2026-01-05T00:00:00Z")
    other_cluster["metadata"]["labels"]["ray.io/cluster"] = "another"
    elsewhere = head("elsewhere", "2026-01-05T00:00:00Z")
    elsewhere["metadata"]["namespace"] = "elsewhere"
    previous = head("previous", "2026-01-05T00:00:00Z")
    previous["metadata"]["ownerReferences"][0]["uid"] = "a-previous-raycluster"
    for skipped in (no_metadata, unlabelled, other_cluster, elsewhere, previous):
        assert pick_head(facts, [skipped, mine]) is mine
    # Owned by something else than a RayCluster (or by nothing): not a previous RayCluster's.
    adopted = head("adopted", "2026-01-05T00:00:00Z")
    adopted["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "uid": "rs"}]
    orphan = head("orphan", "2026-01-06T00:00:00Z")
    del orphan["metadata"]["ownerReferences"]
    assert pick_head(facts, [mine, adopted]) is adopted
    assert pick_head(facts, [mine, adopted, orphan]) is orphan
    # No creationTimestamp sorts oldest; the same second: the first listed.
    assert pick_head(facts, [head("unknown", None), mine]) is mine
    twin = head("twin", "2026-01-01T00:00:00Z")
    assert pick_head(facts, [mine, twin]) is mine and pick_head(facts, [twin, mine]) is twin


def test_a_head_pod_whose_name_is_not_a_string_is_reported_unnamed() -> None:
    rc = raycluster(annotations=FT_ON)
    head = admitted(rc, ADMIN)
    head["metadata"]["name"] = 7
    assert check(rc, [head]).head == HeadReport(Head.CARRIES, None)


def test_a_namespace_default_added_after_the_head_was_created_is_missing() -> None:
    rc = raycluster(namespace="team", annotations=FT_ON)
    head = admitted(rc, ADMIN)
    tenant = parse_namespace({"metadata": {"name": "team", "annotations": {
        "ray-ft-webhook.io/head-reconnect-timeout-s": "45"}}})
    facts = parse_raycluster(rc)
    r = inspect_cluster(facts, [head], ADMIN, [facts], lambda name: tenant)
    assert r.head == HeadReport(Head.MISSING, "raycluster-external-redis-head-x7k2p",
                                missing=("RAY_gcs_rpc_server_reconnect_timeout_s",))


def test_an_injected_entry_without_a_value_is_shown_empty() -> None:
    rc = raycluster(annotations=FT_ON)
    s = Settings(default_redis_address="redis.admin:6379", head_reconnect_timeout_s=30)
    head = _tamper(admitted(rc, s), "RAY_gcs_rpc_server_reconnect_timeout_s", {})
    assert check(rc, [head], s).head.stale == ("RAY_gcs_rpc_server_reconnect_timeout_s: the head has '', now '30'",)


def test_a_username_resting_on_the_templates_own_password_is_not_stale() -> None:
    """Only the webhook's own entries are taken off the head before it is judged again: the template's
    REDIS_PASSWORD stays, so the injected username still has its password."""
    secret = {"secretKeyRef": {"name": "own", "key": "pw"}}
    rc = raycluster(annotations={**FT_ON, "ray-ft-webhook.io/redis-username": "ray"},
                    head_env=[{"name": "REDIS_PASSWORD", "valueFrom": secret}])
    settings = Settings(default_redis_address="redis.admin:6379")
    head = admitted(rc, settings)
    assert "REDIS_USERNAME" in head["metadata"]["annotations"]["ray-ft-webhook.io/injected"]
    assert check(rc, [head], settings).head.status == Head.CARRIES
