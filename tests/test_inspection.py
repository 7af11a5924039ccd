"""`check`'s pure verdict (core.inspection): every head status, what counts as incomplete, the values and their
sources, and that no secret value ever reaches a report. Head pods come from the KubeRay pod model, admitted
(or not) by the one code path the server runs (`render`)."""

from __future__ import annotations

import copy
from typing import Any

from testkit.kuberay_pods import LEGACY, QUICKSTART_UID, env_secret, pod, quickstart_raycluster, raycluster
from webhook.cli.check import as_json, exit_code, table
from webhook.cli.render import render
from webhook.core.inspection import FT, ClusterReport, Head, Status, inspect_cluster, pick_head
from webhook.core.plan import NO_ADDRESS
from webhook.core.raycluster import parse_raycluster
from webhook.core.settings import SecretRef, Settings

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
    assert (r.head.status, r.status) == (Head.STALE, Status.INCOMPLETE)
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


def test_a_head_injected_while_ft_was_on_is_stale_once_it_is_off() -> None:
    rc = raycluster(annotations=FT_ON)
    head = admitted(rc, ADMIN)
    off = copy.deepcopy(rc)
    del off["metadata"]["annotations"]["ray.io/ft-enabled"]
    r = check(off, [head])
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
