"""Per-namespace defaults and `ft-default` (issue 14, sections 3 and 4): a Namespace's annotations between the
RayCluster's own and the admin's, named as the source; a broken one denied; FT turned on at RayCluster CREATE
only where it is safe to."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from testkit.kuberay_pods import pod, raycluster
from webhook.admission import review
from webhook.admission.defaults import Defaulting
from webhook.admission.lookup import StaticLookup
from webhook.cli.render import Rendered, render
from webhook.core.defaulting import ft_default
from webhook.core.namespace import FTDefault, parse_namespace
from webhook.core.raycluster import parse_raycluster
from webhook.core.settings import SecretRef, Settings

FT = {"ray.io/ft-enabled": "true"}
ADMIN = Settings(default_redis_address="admin-redis:6379", default_redis_password_secret=SecretRef("admin-pw"))


def namespace(annotations: dict[str, str], name: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "annotations": annotations}}


def run(cluster_annotations: dict[str, str], ns_annotations: dict[str, str] | None,
        settings: Settings = ADMIN, role: str = "head") -> Rendered:
    cluster = raycluster(annotations=cluster_annotations)
    ns = namespace(ns_annotations) if ns_annotations is not None else None
    return render(cluster, pod(cluster, role), settings, ns)


def env(result: Rendered) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in result.pod["spec"]["containers"][0].get("env", [])}


TENANT = {"ray-ft-webhook.io/redis-address": "tenant-redis:6379",
          "ray-ft-webhook.io/redis-password-secret": "tenant-pw/secret",
          "ray-ft-webhook.io/worker-reconnect-timeout-s": "900"}


def test_the_namespace_is_between_the_cluster_and_the_admin() -> None:
    result = run(FT, TENANT)
    assert env(result)["RAY_REDIS_ADDRESS"] == "tenant-redis:6379"
    assert env(result)["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "tenant-pw", "key": "secret"}}
    assert result.event is not None
    assert ("RAY_REDIS_ADDRESS=tenant-redis:6379 (annotation ray-ft-webhook.io/redis-address on Namespace default)"
            in result.event.note)


def test_the_clusters_own_annotation_wins_over_the_namespace() -> None:
    result = run({**FT, "ray-ft-webhook.io/redis-address": "own:6379"}, TENANT)
    assert env(result)["RAY_REDIS_ADDRESS"] == "own:6379"
    assert env(result)["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "tenant-pw", "key": "secret"}}


def test_the_clusters_plain_start_param_password_wins_over_the_namespaces_secret() -> None:
    cluster = raycluster(annotations=FT, head_start_params={"redis-password": "in-the-cluster"})
    result = render(cluster, pod(cluster, "head"), ADMIN, namespace(TENANT))
    assert env(result)["REDIS_PASSWORD"] == "in-the-cluster"


def test_the_admin_fills_what_the_namespace_leaves() -> None:
    result = run(FT, {"ray-ft-webhook.io/redis-password-secret": "tenant-pw"})
    assert env(result)["RAY_REDIS_ADDRESS"] == "admin-redis:6379"
    assert env(result)["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "tenant-pw", "key": "password"}}


def test_a_workers_timeout_from_the_namespace() -> None:
    assert env(run(FT, TENANT, role="worker"))["RAY_gcs_rpc_server_reconnect_timeout_s"] == "900"


def test_injection_off_for_a_whole_namespace_unless_the_cluster_says_on() -> None:
    assert run(FT, {"ray-ft-webhook.io/inject": "false"}).skipped == "ray-ft-webhook.io/inject is false"
    assert run({**FT, "ray-ft-webhook.io/inject": "true"}, {"ray-ft-webhook.io/inject": "false"}).skipped is None


def test_a_broken_namespace_annotation_denies_naming_the_namespace() -> None:
    result = run(FT, {"ray-ft-webhook.io/worker-reconnect-timeout-s": "soon"})
    assert result.denied == ("RayCluster default/raycluster-external-redis: Namespace default: annotation "
                             "ray-ft-webhook.io/worker-reconnect-timeout-s: 'soon' is not a positive integer (seconds)")


def test_unknown_namespace_annotation_warns() -> None:
    result = run(FT, {"ray-ft-webhook.io/redis-adress": "x"})
    assert "unknown annotation ray-ft-webhook.io/redis-adress on Namespace default is ignored" in result.warnings


def test_the_namespace_object_must_be_the_pods() -> None:
    from webhook.common.errors import InputError

    cluster = raycluster(annotations=FT)
    with pytest.raises(InputError, match="the Namespace object is 'other'"):
        render(cluster, pod(cluster, "head"), ADMIN, namespace(TENANT, name="other"))


# -- ft-default ---------------------------------------------------------------------------------------------

def decide_default(cluster_annotations: dict[str, str] | None, ns_annotations: dict[str, str] | None,
                   settings: Settings = ADMIN, owner_kind: str | None = None, **kwargs: Any) -> Any:
    cluster = raycluster(annotations=cluster_annotations, **kwargs)
    if owner_kind is not None:
        cluster["metadata"]["ownerReferences"] = [{"apiVersion": "ray.io/v1", "kind": owner_kind, "name": "x",
                                                   "uid": "u", "controller": True}]
    ns = parse_namespace(namespace(ns_annotations)) if ns_annotations is not None else None
    return ft_default(parse_raycluster(cluster), ns, settings, cluster_annotations is not None)


ON = {"ray-ft-webhook.io/ft-default": "enabled"}


def test_ft_default_adds_the_annotation() -> None:
    assert decide_default({"team": "a"}, ON).ops == (
        {"op": "add", "path": "/metadata/annotations/ray.io~1ft-enabled", "value": "true"},)
    assert decide_default(None, ON).ops == (
        {"op": "add", "path": "/metadata/annotations", "value": {"ray.io/ft-enabled": "true"}},)


@pytest.mark.parametrize(("cluster", "ns", "kwargs", "skipped"), [
    ({}, {}, {}, "the Namespace does not ask for FT by default"),
    ({}, {"ray-ft-webhook.io/ft-default": "disabled"}, {}, "the Namespace does not ask for FT by default"),
    ({"ray.io/ft-enabled": "false"}, ON, {}, "the RayCluster sets GCS FT itself"),
    ({"ray.io/ft-enabled": "TRUE"}, ON, {}, "the RayCluster sets GCS FT itself"),
    ({}, ON, {"options": {"redisAddress": "r:6379"}}, "the RayCluster sets GCS FT itself"),
    ({}, ON, {"owner_kind": "RayJob"}, "a RayJob's cluster (ft-default: enabled-including-rayjobs turns it on)"),
    ({"ray-ft-webhook.io/inject": "false"}, ON, {}, "ray-ft-webhook.io/inject is false"),
])
def test_ft_default_leaves_alone(cluster: dict[str, str], ns: dict[str, str], kwargs: dict[str, Any],
                                 skipped: str) -> None:
    result = decide_default(cluster, ns, **kwargs)
    assert result.ops == () and result.skipped == skipped and result.warning is None


def test_ft_default_for_a_rayjob_when_asked_and_for_a_rayservice() -> None:
    everything = {"ray-ft-webhook.io/ft-default": "enabled-including-rayjobs"}
    assert decide_default({}, everything, owner_kind="RayJob").ops
    assert decide_default({}, ON, owner_kind="RayService").ops


def test_ft_default_never_without_a_redis_address_and_says_so() -> None:
    result = decide_default({}, ON, settings=Settings())
    assert result.ops == () and result.warning == (
        "ray-ft-webhook.io/ft-default of Namespace default: GCS FT not turned on, no Redis address from any source")
    assert decide_default({}, {**ON, "ray-ft-webhook.io/redis-address": "tenant:6379"}, settings=Settings()).ops


def test_ft_default_value_is_checked() -> None:
    ns = parse_namespace(namespace({"ray-ft-webhook.io/ft-default": "yes"}))
    assert ns.ft_default is FTDefault.DISABLED
    assert ns.errors == ('annotation ray-ft-webhook.io/ft-default: \'yes\' is not "disabled", "enabled", '
                         '"enabled-including-rayjobs"',)


def ask(obj: Any, ns_annotations: dict[str, str], operation: str = "CREATE") -> tuple[dict[str, Any], str]:
    lookup = StaticLookup({}, {"default": parse_namespace(namespace(ns_annotations))})
    req = review.AdmissionRequest(uid="u1", group="ray.io", kind="RayCluster", operation=operation,
                                  namespace="default", object=obj)
    return asyncio.run(Defaulting(lookup, ADMIN).answer(req))


def test_the_adapter_patches_and_ignores() -> None:
    response, outcome = ask(raycluster(annotations={"team": "a"}), ON)
    assert outcome == "patched" and response["patchType"] == "JSONPatch"
    assert ask(raycluster(annotations={"team": "a"}), {})[1] == "skipped"
    assert ask(raycluster(annotations={"team": "a"}), ON, operation="UPDATE")[1] == "ignored"
    assert ask(raycluster(annotations=FT), ON) == ({"uid": "u1", "allowed": True}, "skipped")


def test_ft_default_without_an_address_from_any_source_turns_nothing_on() -> None:
    from webhook.core.defaulting import Defaulted
    ns = parse_namespace(namespace({"ray-ft-webhook.io/ft-default": "enabled"}))
    assert ft_default(parse_raycluster(raycluster()), ns, Settings(), True) == Defaulted(
        skipped="no Redis address", warning="ray-ft-webhook.io/ft-default of Namespace default: GCS FT not turned "
                                            "on, no Redis address from any source")
