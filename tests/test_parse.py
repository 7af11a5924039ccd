"""The core's readers one by one: every error message of the RayCluster parser and the pod reader, exactly, and
the boundaries of the small parsers (Secret references, timeouts, Redis addresses, quoting, command lines)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from testkit.kuberay_pods import QUICKSTART_UID, cleanup_line, pod, raycluster
from webhook.core import cleanup, raystart
from webhook.core.namespace import FTDefault, NamespaceFacts, parse_namespace
from webhook.core.patches import escape
from webhook.core.pod import InvalidPod, Owner, read_inputs, read_ray_pod
from webhook.core.raycluster import OurAnnotations, parse_raycluster
from webhook.core.redis_address import canonical_redis_address, parse_redis_address, redacted
from webhook.core.settings import (
    MAX_POSITIVE_INT,
    CARef,
    SecretRef,
    parse_object_name,
    parse_positive_int,
    parse_server_name,
    quote,
)

HEAD = "spec.headGroupSpec"
CONTAINER = f"{HEAD}.template.spec.containers[0]"
OPTIONS = "spec.gcsFaultToleranceOptions"


def head_template(**container: Any) -> dict[str, Any]:
    return {"spec": {"headGroupSpec": {"template": {"spec": {"containers": [container]}}}}}


RAYCLUSTER_ERRORS = {
    "not-an-object": ([], ["RayCluster: expected an object, got list"]),
    "metadata": ({"metadata": []}, ["metadata: expected an object, got list"]),
    "spec": ({"spec": "x"}, ["spec: expected an object, got str"]),
    "annotations": ({"metadata": {"annotations": []}}, ["metadata.annotations: expected an object, got list"]),
    "head": ({"spec": {"headGroupSpec": []}}, [f"{HEAD}: expected an object, got list"]),
    "template": ({"spec": {"headGroupSpec": {"template": []}}}, [f"{HEAD}.template: expected an object, got list"]),
    "pod-spec": ({"spec": {"headGroupSpec": {"template": {"spec": []}}}},
                 [f"{HEAD}.template.spec: expected an object, got list"]),
    "containers": ({"spec": {"headGroupSpec": {"template": {"spec": {"containers": {"a": 1}}}}}},
                   [f"{HEAD}.template.spec.containers: expected a list, got dict"]),
    "container": (head_template() | {"spec": {"headGroupSpec": {"template": {"spec": {"containers": ["ray"]}}}}},
                  [f"{CONTAINER}: expected an object, got str"]),
    "env": (head_template(env={"a": 1}), [f"{CONTAINER}.env: expected a list, got dict"]),
    "env-value-from": (head_template(env=[{"name": "A", "valueFrom": "s"}]),
                       [f"{CONTAINER}.env[0].valueFrom: expected an object, got str"]),
    "names": ({"metadata": {"name": 1, "namespace": [], "uid": 2.5}},
              ["metadata.name: expected a string, got int", "metadata.namespace: expected a string, got list",
               "metadata.uid: expected a string, got float"]),
    "start-params": ({"spec": {"headGroupSpec": {"rayStartParams": []}}},
                     [f"{HEAD}.rayStartParams: expected an object, got list"]),
    "start-param-username": ({"spec": {"headGroupSpec": {"rayStartParams": {"redis-username": 3}}}},
                             [f"{HEAD}.rayStartParams[redis-username]: expected a string, got int"]),
    "options-fields": ({"spec": {"gcsFaultToleranceOptions": {
        "redisAddress": 1, "redisUsername": "u", "externalStorageNamespace": 2, "backend": 3,
        "redisPassword": {"value": 4}}}},
        [f"{OPTIONS}.redisAddress: expected a string, got int",
         f"{OPTIONS}.redisPassword.value: expected a string, got int",
         f"{OPTIONS}.redisUsername: expected an object, got str",
         f"{OPTIONS}.externalStorageNamespace: expected a string, got int",
         f"{OPTIONS}.backend: expected a string, got int"]),
    "our-annotations": ({"metadata": {"annotations": {
        "ray-ft-webhook.io/inject": 1, "ray-ft-webhook.io/redis-username": "a b", "ray-ft-webhook.io/other": "x",
        "ray-ft-webhook.io/redis-address": None, "ray-ft-webhook.io/worker-reconnect-timeout-s": "0",
        "ray-ft-webhook.io/head-reconnect-timeout-s": "5"}}},
        ["metadata.annotations[ray-ft-webhook.io/inject]: expected a string, got int",
         "annotation ray-ft-webhook.io/redis-username: 'a b' must be non-empty and contain no spaces",
         "metadata.annotations[ray-ft-webhook.io/redis-address]: expected a string, got NoneType",
         "annotation ray-ft-webhook.io/worker-reconnect-timeout-s: '0' is not a positive integer (seconds)"]),
    "timeout-then-inject": ({"metadata": {"annotations": {"ray-ft-webhook.io/head-reconnect-timeout-s": "x",
                                                          "ray-ft-webhook.io/inject": "maybe"}}},
                            ["annotation ray-ft-webhook.io/head-reconnect-timeout-s: 'x' is not a positive integer "
                             "(seconds)", "annotation ray-ft-webhook.io/inject: 'maybe' is not \"true\" or \"false\""]),
    # Only an address is redacted: a username is no secret, and the user needs to see what is wrong with it.
    "username-with-at-sign": ({"metadata": {"annotations": {"ray-ft-webhook.io/redis-username": "ray user@x"}}},
                              ["annotation ray-ft-webhook.io/redis-username: 'ray user@x' must be non-empty and "
                               "contain no spaces"]),
    "inject-and-username": (
        {"metadata": {"annotations": {"ray-ft-webhook.io/inject": "maybe", "ray-ft-webhook.io/redis-username": ""}}},
        ["annotation ray-ft-webhook.io/inject: 'maybe' is not \"true\" or \"false\"",
         "annotation ray-ft-webhook.io/redis-username: '' must be non-empty and contain no spaces"]),
    "value-from-key": ({"spec": {"gcsFaultToleranceOptions": {"redisPassword": {"valueFrom": {1: "x"}}}}},
                       [f"{OPTIONS}.redisPassword.valueFrom: has a key that is not a string"]),
    # 1 dict + 1 list + 999 numbers: one node over the limit of 1000.
    "value-from-too-large": ({"spec": {"gcsFaultToleranceOptions": {"redisPassword": {
        "valueFrom": {"a": list(range(999))}}}}}, [f"{OPTIONS}.redisPassword.valueFrom: too large"]),
    "value-from-at-the-limit": ({"spec": {"gcsFaultToleranceOptions": {"redisPassword": {
        "valueFrom": {"a": list(range(998))}}}}}, []),
    "value-from-list": ({"spec": {"gcsFaultToleranceOptions": {"redisUsername": {"valueFrom": [1]}}}},
                        [f"{OPTIONS}.redisUsername.valueFrom: expected an object, got list"]),
    "worker-groups": ({"spec": {"workerGroupSpecs": "x"}}, ["spec.workerGroupSpecs: expected a list, got str"]),
    "worker-group": ({"spec": {"workerGroupSpecs": [3]}}, ["spec.workerGroupSpecs[0]: expected an object, got int"]),
    "worker-group-env": ({"spec": {"workerGroupSpecs": [
        {"groupName": "g", "template": {"spec": {"containers": [{"env": {"a": 1}}]}}}]}},
        ["spec.workerGroupSpecs[0].template.spec.containers[0].env: expected a list, got dict"]),
    "worker-group-name": ({"spec": {"workerGroupSpecs": [{"groupName": 7}]}},
                          ["spec.workerGroupSpecs[0].groupName: expected a string, got int"]),
    "tls-annotations": ({"metadata": {"annotations": {
        "ray-ft-webhook.io/redis-ca-configmap": "a/b/c", "ray-ft-webhook.io/redis-client-cert-secret": "A",
        "ray-ft-webhook.io/redis-server-name": "a b"}}},
        ["annotation ray-ft-webhook.io/redis-ca-configmap: 'a/b/c' is not NAME or NAME/KEY of a ConfigMap",
         "annotation ray-ft-webhook.io/redis-client-cert-secret: 'A' is not the NAME of a Secret",
         "annotation ray-ft-webhook.io/redis-server-name: 'a b' is not a host name"]),
}


@pytest.mark.parametrize("obj, errors", RAYCLUSTER_ERRORS.values(), ids=RAYCLUSTER_ERRORS.keys())
def test_raycluster_errors_name_the_field(obj: Any, errors: list[str]) -> None:
    assert list(parse_raycluster(obj).errors) == errors


def test_raycluster_facts() -> None:
    facts = parse_raycluster(raycluster(
        annotations={"ray-ft-webhook.io/head-reconnect-timeout-s": "5", "ray-ft-webhook.io/zz": "1",
                     "ray-ft-webhook.io/aa": "1", "team/x": "y"},
        head_start_params={"redis-password": "p", "num-cpus": "0"}))
    assert (facts.name, facts.namespace, facts.uid) == ("raycluster-external-redis", "default", QUICKSTART_UID)
    assert facts.ours.head_reconnect_timeout_s == 5 and facts.ours.worker_reconnect_timeout_s is None
    assert facts.ours.unknown_keys == ("ray-ft-webhook.io/aa", "ray-ft-webhook.io/zz")
    assert facts.head_start_params == {"redis-password": "p"}
    assert facts.options is None and facts.errors == ()
    assert parse_raycluster({"spec": {"gcsFaultToleranceOptions": {"backend": ""}}}).options.backend == "redis"  # type: ignore[union-attr]


def test_head_env_reads_what_the_container_gets() -> None:
    """The last entry of a name wins; valueFrom gives no literal; an entry without a value is empty; a broken
    entry is reported and the entries after it are still read."""
    env = [{"name": "REDIS_PASSWORD", "value": "x"}, {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {}}},
           {"name": "RAY_REDIS_ADDRESS"}, {"value": "no name"},
           {"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "90"}, {"name": "OTHER", "value": "o"}]
    facts = parse_raycluster(head_template(env=env))
    assert facts.errors == (f"{CONTAINER}.env[3]: expected an object with a string name",)
    assert facts.head_env.names == {"REDIS_PASSWORD", "RAY_REDIS_ADDRESS", "RAY_gcs_rpc_server_reconnect_timeout_s",
                                    "OTHER"}
    assert facts.head_env.values == {"RAY_REDIS_ADDRESS": "", "RAY_gcs_rpc_server_reconnect_timeout_s": "90"}


def ray_pod(change: Any = None, role: str = "worker") -> dict[str, Any]:
    p = pod(raycluster(), role)
    if change is not None:
        change(p)
    return p


INVALID_PODS = {
    "not-an-object": ([], "the object is not a JSON object"),
    "metadata": ({"metadata": ["x"]}, "metadata is not an object"),
    "labels": ({"metadata": {"labels": ["x"]}}, "metadata.labels is not an object"),
    "owner-refs": (ray_pod(lambda p: p["metadata"].update(ownerReferences={"a": 1})),
                   "metadata.ownerReferences is not a list"),
    "owner-ref-entry": (ray_pod(lambda p: p["metadata"].update(ownerReferences=["x"])),
                        "metadata.ownerReferences has an entry that is not an object"),
    "owner-without-uid": (ray_pod(lambda p: p["metadata"]["ownerReferences"][0].update(uid="")),
                          "the RayCluster ownerReference needs a name and a uid"),
    "owner-without-name": (ray_pod(lambda p: p["metadata"]["ownerReferences"][0].pop("name")),
                           "the RayCluster ownerReference needs a name and a uid"),
    "owner-empty-name": (ray_pod(lambda p: p["metadata"]["ownerReferences"][0].update(name="")),
                         "the RayCluster ownerReference needs a name and a uid"),
    "owner-name-not-a-string": (ray_pod(lambda p: p["metadata"]["ownerReferences"][0].update(name=5)),
                                "the RayCluster ownerReference needs a name and a uid"),
    "annotations": (ray_pod(lambda p: p["metadata"].update(annotations=["a"])),
                    "metadata.annotations is not an object"),
    "no-spec": (ray_pod(lambda p: p.pop("spec")), "spec.containers[0] (the Ray container) is missing"),
    "no-containers": (ray_pod(lambda p: p["spec"].update(containers=[])),
                      "spec.containers[0] (the Ray container) is missing"),
    "container-not-an-object": (ray_pod(lambda p: p["spec"].update(containers=["ray"])),
                                "spec.containers[0] (the Ray container) is missing"),
    "env": (ray_pod(lambda p: p["spec"]["containers"][0].update(env={"a": 1})), "spec.containers[0].env is not a list"),
    "env-entry": (ray_pod(lambda p: p["spec"]["containers"][0].update(env=["A=1"])),
                  "spec.containers[0].env[0] has no name"),
    "env-name": (ray_pod(lambda p: p["spec"]["containers"][0].update(env=[{"name": 1}])),
                 "spec.containers[0].env[0] has no name"),
}


@pytest.mark.parametrize("obj, message", INVALID_PODS.values(), ids=INVALID_PODS.keys())
def test_invalid_pods_name_the_field(obj: Any, message: str) -> None:
    with pytest.raises(InvalidPod) as raised:
        read_ray_pod(obj, "default")
    assert str(raised.value) == message


OWNERS = {
    "controller-ref": (None, Owner("default", "raycluster-external-redis", QUICKSTART_UID)),
    "label-only": (lambda p: p["metadata"].pop("ownerReferences"), Owner("default", "raycluster-external-redis", None)),
    "not-the-controller": (lambda p: p["metadata"]["ownerReferences"][0].update(controller=False),
                           Owner("default", "raycluster-external-redis", None)),
    "controller-missing": (lambda p: p["metadata"]["ownerReferences"][0].pop("controller"),
                           Owner("default", "raycluster-external-redis", None)),
    "other-kind": (lambda p: p["metadata"]["ownerReferences"][0].update(kind="RayJob"),
                   Owner("default", "raycluster-external-redis", None)),
    "other-api-version": (lambda p: p["metadata"]["ownerReferences"][0].update(apiVersion="ray.io/v2"),
                          Owner("default", "raycluster-external-redis", None)),
    "no-owner": (lambda p: (p["metadata"].pop("ownerReferences"), p["metadata"]["labels"].update(
        {"ray.io/cluster": ""})), None),
    "namespace-from-the-pod": (lambda p: p["metadata"].update(namespace="team"), "team"),
    "no-namespace-anywhere": (lambda p: p["metadata"].pop("namespace"), ""),
}


@pytest.mark.parametrize("change, owner", OWNERS.values(), ids=OWNERS.keys())
def test_owner(change: Any, owner: Owner | str | None) -> None:
    p = ray_pod(change)
    facts = read_ray_pod(p, "" if isinstance(owner, str) else "default")
    if isinstance(owner, str):
        assert facts is not None and facts.owner.namespace == owner
    else:
        assert (facts.owner if facts else None) == owner


def test_pod_facts() -> None:
    p = ray_pod(role="head")
    container = p["spec"]["containers"][0]
    container["env"] = [{"name": "KUBERAY_GEN_RAY_START_CMD", "value": "ray start --head"}, {"name": "A"},
                        {"name": "A", "value": "2"}]
    container["args"] = ["ulimit -n 65536; ray start --head", "second"]
    facts = read_ray_pod(p, "default")
    assert facts is not None
    assert (facts.role, facts.args0, facts.gen_cmd_index, facts.gen_cmd) == (
        "head", "ulimit -n 65536; ray start --head", 0, "ray start --head")
    assert facts.env_indexes("A") == [1, 2] and facts.env_value("A") == "2" and facts.env_value("B") is None
    container["env"][0] = {"name": "KUBERAY_GEN_RAY_START_CMD", "valueFrom": {"configMapKeyRef": {}}}
    container["args"] = [5]
    facts = read_ray_pod(p, "default")
    assert facts is not None and (facts.gen_cmd_index, facts.gen_cmd, facts.args0) == (None, None, None)
    # Both a value and a valueFrom (only a file for `render` can hold that): not a literal, so not KubeRay's line.
    container["env"][0] = {"name": "KUBERAY_GEN_RAY_START_CMD", "value": "ray start", "valueFrom": {"a": {}}}
    facts = read_ray_pod(p, "default")
    assert facts is not None and (facts.gen_cmd_index, facts.gen_cmd) == (None, None)
    container["env"][0] = {"name": "KUBERAY_GEN_RAY_START_CMD"}
    container["args"] = "ray start"
    facts = read_ray_pod(p, "default")
    assert facts is not None and (facts.gen_cmd_index, facts.args0) == (None, None)


@pytest.mark.parametrize("text, ref", [
    ("pw", SecretRef("pw", "password")), ("pw/key", SecretRef("pw", "key")),
    (" a.b-c/K_e.y-1 ", SecretRef("a.b-c", "K_e.y-1")),
    ("a" * 253, SecretRef("a" * 253)), (f"pw/{'k' * 253}", SecretRef("pw", "k" * 253)),
    ("a" * 254, None), (f"pw/{'k' * 254}", None), ("pw/", None), ("/key", None), ("a/b/c", None), ("Pw", None),
    ("-pw", None), ("pw-", None), ("a..b", None), ("p_w", None), ("pw/k y", None), ("pw/k:y", None),
    ("a.b", SecretRef("a.b")),
])
def test_secret_ref(text: str, ref: SecretRef | None) -> None:
    if ref is None:
        with pytest.raises(ValueError, match="is not NAME or NAME/KEY"):
            SecretRef.parse(text)
    else:
        assert SecretRef.parse(text) == ref and str(ref) == f"{ref.name}/{ref.key}"


@pytest.mark.parametrize("text, value", [
    ("1", 1), ("0600", 600), ("1234567890", 1234567890), (str(MAX_POSITIVE_INT), MAX_POSITIVE_INT),
    ("", None), ("0", None), (str(MAX_POSITIVE_INT + 1), None), ("00000000001", None), ("1 ", None), ("+1", None),
])
def test_positive_int(text: str, value: int | None) -> None:
    if value is None:
        with pytest.raises(ValueError, match=r"^'.*' is not a positive integer$"):
            parse_positive_int(text)
    else:
        assert parse_positive_int(text) == value


def test_quote_cuts_long_values() -> None:
    assert quote("x" * 40) == repr("x" * 40)
    assert quote("x" * 41) == repr("x" * 40) + "..."
    assert quote("abcdef", 5) == "'abcde'..."


@pytest.mark.parametrize("address, problem", [
    ("r:1", None), ("r:65535", None), ("r:0", "has no valid port"), ("r:65536", "has no valid port"),
    ("[:6379", "has no host:port"), ("[]:6379", "has no host:port"), ("[::1]:6379", None),
    ("x://redis://r:1", "has scheme 'x', not redis or rediss"),
])
def test_redis_address_boundaries(address: str, problem: str | None) -> None:
    if problem is None:
        assert parse_redis_address(f" {address} ") == address
    else:
        with pytest.raises(ValueError) as raised:
            parse_redis_address(address)
        assert str(raised.value) == f"{address!r}: {problem}"


def test_redacted() -> None:
    assert redacted("redis://u:p@w@r:1") == "***@r:1"
    assert redacted("a:1,b:2") == "a:1,b:2"


def test_escape() -> None:
    assert escape("a~/b/~") == "a~0~1b~1~0"


def test_ray_start_flags() -> None:
    assert raystart.flag_name("--redis-password=a=b") == "--redis-password"
    assert raystart.add_flags("ray start --head --block", ["--a=1", "--b=2"]) == "ray start --head --a=1 --b=2 --block"
    assert raystart.add_flags("python x.py", ["--a=1"]) == "python x.py"
    assert raystart.add_flags("ray start --a=0", ["--a=1"]) == "ray start --a=0"


@pytest.mark.parametrize("line, expected", [
    ("cleanup_redis_storage(host=h, port=p)", "cleanup_redis_storage(host=h, port=p, " + cleanup.USERNAME_ARG + ")"),
    ("cleanup_redis_storage( host=h )", "cleanup_redis_storage( host=h, " + cleanup.USERNAME_ARG + ")"),
    ("cleanup_redis_storage(host=h,)", "cleanup_redis_storage(host=h," + cleanup.USERNAME_ARG + ")"),
    ("cleanup_redis_storage()", "cleanup_redis_storage(" + cleanup.USERNAME_ARG + ")"),
    ("x(cleanup_redis_storage(a=f(')'))); cleanup_redis_storage(b=1)",
     "x(cleanup_redis_storage(a=f(')'), " + cleanup.USERNAME_ARG + ")); cleanup_redis_storage(b=1)"),
    ("cleanup_redis_storage(a=1", "cleanup_redis_storage(a=1"),
])
def test_cleanup_username(line: str, expected: str) -> None:
    assert cleanup.add_username(line) == expected


def test_cleanup_username_on_kuberays_line() -> None:
    line = cleanup_line()
    assert cleanup.add_username(line).count("username=") == 1 and cleanup.add_username(line).startswith(line[:40])
    assert cleanup.add_username(cleanup_line(username=True)) == cleanup_line(username=True)


def test_worker_timeouts_per_group() -> None:
    groups = [{"groupName": name, "template": {"spec": {"containers": [{"env": env}]}}} for name, env in (
        ("plain", []), ("own", [{"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "30"}]),
        ("secret", [{"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "valueFrom": {"configMapKeyRef": {}}}]))]
    facts = parse_raycluster({"spec": {"workerGroupSpecs": groups}})
    assert facts.worker_timeouts == (("plain", None), ("own", "30")) and facts.errors == ()


@pytest.mark.parametrize(("refs", "kind"), [
    ([{"kind": "RayJob", "controller": True}], "RayJob"),
    ([{"kind": "RayJob", "controller": False}], None),
    ([{"kind": "RayJob"}], None),
    (["RayJob", {"kind": "RayService", "controller": True}], "RayService"),
    ([{"kind": 5, "controller": True}, {"kind": "RayService", "controller": True}], "RayService"),
    ("not-a-list", None),
])
def test_controller_kind(refs: Any, kind: str | None) -> None:
    assert parse_raycluster({"metadata": {"ownerReferences": refs}}).owner_kind == kind


NAMESPACES = {
    "not-an-object": ([], NamespaceFacts("")),
    "metadata": ({"metadata": []}, NamespaceFacts("")),
    "annotations": ({"metadata": {"name": "a", "annotations": []}}, NamespaceFacts("a")),
    "name": ({"metadata": {"name": 3}}, NamespaceFacts("")),
    "ft-default-any-case": ({"metadata": {"name": "a", "annotations": {"ray-ft-webhook.io/ft-default": " Enabled "}}},
                            NamespaceFacts("a", ft_default=FTDefault.ENABLED)),
    "ft-default-not-a-string": ({"metadata": {"name": "a", "annotations": {"ray-ft-webhook.io/ft-default": 1}}},
                                NamespaceFacts("a", errors=('annotation ray-ft-webhook.io/ft-default: \'1\' is not '
                                                            '"disabled", "enabled", "enabled-including-rayjobs"',))),
    "ours": ({"metadata": {"name": "a", "annotations": {"ray-ft-webhook.io/ft-default": "disabled",
                                                       "ray-ft-webhook.io/redis-address": "r:1"}}},
             NamespaceFacts("a", ours=OurAnnotations(redis_address="r:1"))),
}


@pytest.mark.parametrize("obj, facts", NAMESPACES.values(), ids=NAMESPACES.keys())
def test_namespace(obj: Any, facts: NamespaceFacts) -> None:
    """ft-default is a key of the Namespace's (not reported as unknown there); a wrong shape gives no defaults."""
    assert parse_namespace(obj) == facts


@pytest.mark.parametrize(("text", "ok"), [
    ("redis.example", True), ("X.example", True), ("a" * 253, True), ("a" * 254, False), ("", False), (" ", False),
    ("a:1", False), ("a/b", False), ("u@a", False), ("a b", False), ("réd", False),
])
def test_server_name(text: str, ok: bool) -> None:
    if ok:
        assert parse_server_name(text) == text
    else:
        with pytest.raises(ValueError, match=f"^{re.escape(quote(text))} is not a host name$"):
            parse_server_name(text)


def test_object_name_and_ca_messages() -> None:
    with pytest.raises(ValueError) as raised:
        parse_object_name("A")
    assert str(raised.value) == "'A' is not an object name (lower-case letters, digits, '-' and '.')"
    with pytest.raises(ValueError) as raised:
        CARef.parse("ConfigMap", "a/b/c")
    assert str(raised.value) == "'a/b/c' is not NAME or NAME/KEY (a ConfigMap name and an optional key)"


@pytest.mark.parametrize(("address", "namespace", "canonical"), [
    ("redis:6379", "team-a", "redis.team-a.svc:6379"),
    ("REDISS://Redis:6380", "team-a", "redis.team-a.svc:6380"),
    ("redis.team-a.svc.cluster.local:6379", "x", "redis.team-a.svc:6379"),
    ("rediss://b.example:1, a.example:2", "x", "a.example:2,b.example:1"),
    ("[::1]:6379", "x", "[::1]:6379"),
])
def test_canonical_redis_address(address: str, namespace: str, canonical: str) -> None:
    assert canonical_redis_address(address, namespace) == canonical


@pytest.mark.parametrize(("volumes", "mounts", "message"), [
    ("x", None, "spec.volumes is not a list of objects with a name"),
    (["x"], None, "spec.volumes is not a list of objects with a name"),
    ([{"name": 1}], None, "spec.volumes is not a list of objects with a name"),
    (None, "x", "spec.containers[0].volumeMounts is not a list of objects with a name and a mountPath"),
    (None, [{"name": "a"}], "spec.containers[0].volumeMounts is not a list of objects with a name and a mountPath"),
    (None, [{"mountPath": "/a"}], "spec.containers[0].volumeMounts is not a list of objects with a name and a "
                                  "mountPath"),
    (None, ["x"], "spec.containers[0].volumeMounts is not a list of objects with a name and a mountPath"),
])
def test_volumes_and_mounts_are_read_safely(volumes: Any, mounts: Any, message: str) -> None:
    p = ray_pod()
    if volumes is not None:
        p["spec"]["volumes"] = volumes
    if mounts is not None:
        p["spec"]["containers"][0]["volumeMounts"] = mounts
    with pytest.raises(InvalidPod) as raised:
        read_ray_pod(p, "default")
    assert str(raised.value) == message


def test_volumes_and_mounts() -> None:
    p = ray_pod()
    p["spec"]["volumes"] = [{"name": "a", "emptyDir": {}}, {"name": "b"}]
    p["spec"]["containers"][0]["volumeMounts"] = [{"name": "a", "mountPath": "/a"}]
    facts = read_ray_pod(p, "default")
    assert facts is not None and facts.volumes == frozenset({"a", "b"}) and facts.mounts == (("a", "/a"),)


def test_read_inputs_are_the_parts_read_ray_pod_reads() -> None:
    """The memo's key (`pod.read_inputs`): exactly these parts, in this order; None for a pod of another shape."""
    worker = pod(raycluster(), "worker")
    worker["metadata"]["annotations"] = {"a": "b"}
    meta, ray = worker["metadata"], worker["spec"]["containers"][0]
    expected = ("team", "worker", "raycluster-external-redis", meta["ownerReferences"], {"a": "b"}, ray["env"],
                ray.get("args"), ray["volumeMounts"], worker["spec"]["volumes"])
    assert read_inputs(worker, "team") == expected
    assert read_inputs(worker, "")[0] == meta["namespace"] == "default"
    del meta["annotations"], ray["env"], ray["volumeMounts"], worker["spec"]["volumes"], meta["ownerReferences"]
    assert read_inputs(worker, "team") == ("team", "worker", "raycluster-external-redis", None, None, None,
                                           ray.get("args"), None, None)
    for odd in ([], {}, {"metadata": {"labels": {}}}, {"metadata": [], "spec": {}}, {"metadata": {}, "spec": []},
                {"metadata": {"labels": []}, "spec": {"containers": [{}]}},
                {"metadata": {"labels": {}}, "spec": {"containers": {}}},
                {"metadata": {"labels": {}}, "spec": {"containers": []}},
                {"metadata": {"labels": {}}, "spec": {"containers": ["x"]}}):
        assert read_inputs(odd, "team") is None, odd
    assert read_inputs({"metadata": {"labels": {}}, "spec": {"containers": [{}]}}, "t") == (
        "t", None, None, None, None, None, None, None, None)
