"""Properties of the plan over generated RayClusters and pods (hypothesis):

- the ops are only add/replace on allowed paths and apply to the pod they came from under `apply_strictly`, an
  applier written here (so the patched pod is not `render`'s own jsonpatch result) that also refuses an `add`
  over an existing key and a `replace` of a missing one; `render`'s pod is the same;
- running the plan on its own output yields no ops (safe under reinvocationPolicy: IfNeeded); when another
  webhook removed an env entry the webhook added, running it again puts that entry back and the
  `ray-ft-webhook.io/injected` list stays what it was;
- nothing the pod already had is changed, except flags appended to KubeRay's generated command lines and
  KubeRay <= 1.2's empty REDIS_PASSWORD placeholder on a head whose template does not set it;
- no env name is ever duplicated; the output is deterministic.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from testkit.kuberay_pods import cleanup_pod, pod, raycluster
from webhook.cli.render import render
from webhook.core import cleanup
from webhook.core.settings import SecretRef, Settings

FT_ENV = ["RAY_external_storage_namespace", "RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "REDIS_USERNAME",
          "RAY_gcs_rpc_server_reconnect_timeout_s"]
ALLOWED_PATH = re.compile(
    r"^/metadata/annotations(/[^/]+)?$|^/spec/containers/0/env(/-|/\d+|/\d+/value)?$|^/spec/containers/0/args/0$"
)

text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.:/~$", min_size=0, max_size=12)
secret_ref = st.fixed_dictionaries({"secretKeyRef": st.fixed_dictionaries({"name": st.just("s"), "key": st.just("k")})})
credential = st.one_of(st.fixed_dictionaries({"value": text}), st.fixed_dictionaries({"valueFrom": secret_ref}))
options = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    "redisAddress": text, "redisPassword": credential, "redisUsername": credential,
    "externalStorageNamespace": text,
}))
our_annotations = st.fixed_dictionaries({}, optional={
    "ray.io/ft-enabled": st.sampled_from(["true", "false", "True", ""]),
    "ray.io/external-storage-namespace": text,
    "ray-ft-webhook.io/redis-address": st.sampled_from(["redis:6379", "rediss://r:6380", "a:1,b:2"]),
    "ray-ft-webhook.io/redis-password-secret": st.sampled_from(["pw", "pw/key", "a.b/c_d"]),
    "ray-ft-webhook.io/redis-username": st.sampled_from(["ray", "default"]),
    "ray-ft-webhook.io/worker-reconnect-timeout-s": st.sampled_from(["600", "30", "1"]),
    "ray-ft-webhook.io/head-reconnect-timeout-s": st.sampled_from(["60", "120"]),
    "ray-ft-webhook.io/inject": st.sampled_from(["true", "false"]),
    "team/a~b": st.just("x"),
})
env_entry = st.builds(
    lambda name, value, from_secret: {"name": name, "valueFrom": {"secretKeyRef": {"name": "u", "key": "k"}}}
    if from_secret else {"name": name, "value": value},
    st.sampled_from([*FT_ENV, "OTHER"]), text, st.booleans(),
)
admin = st.builds(
    Settings,
    default_redis_address=st.one_of(st.none(), st.just("admin:6379")),
    default_redis_password_secret=st.one_of(st.none(), st.just(SecretRef("admin-pw"))),
    worker_reconnect_timeout_s=st.sampled_from([600, 900]),
    head_reconnect_timeout_s=st.one_of(st.none(), st.just(90)),
)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], Settings]:
    cluster = raycluster(
        annotations=draw(our_annotations),
        options=draw(options),
        head_env=draw(st.lists(env_entry, max_size=3, unique_by=lambda e: e["name"])),
        head_start_params=draw(st.fixed_dictionaries({}, optional={
            "redis-password": st.sampled_from(["$REDIS_PASSWORD", "plain"]), "num-cpus": st.just("0")})),
    )
    role = draw(st.sampled_from(["head", "worker", "redis-cleanup"]))
    if role == "redis-cleanup":  # found by its ray.io/cluster label: its controller is the Job
        p = cleanup_pod(cluster, kuberay_ft=draw(st.booleans()))
    else:
        p = pod(cluster, role, owner=draw(st.booleans()))
    container = p["spec"]["containers"][0]
    extra = draw(st.lists(env_entry, max_size=3, unique_by=lambda e: e["name"]))
    taken = {e["name"] for e in container["env"]}
    container["env"] = [e for e in extra if e["name"] not in taken] + container["env"]
    if draw(st.booleans()):
        del container["env"]
    if draw(st.booleans()):
        p["metadata"]["annotations"] = draw(st.dictionaries(st.sampled_from(["a/b", "x~y", "ray.io/ft-enabled"]), text))
    return cluster, p, draw(admin)


def sorted_env(p: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(p["spec"]["containers"][0]["env"], key=lambda e: str(e["name"]))


def apply_strictly(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A copy of `doc` with the add/replace `ops` applied; AssertionError when an `add` would overwrite a key
    (RFC 6902 allows it; the webhook must never do it to the user's values) or a `replace` finds nothing."""
    out = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        value = copy.deepcopy(op["value"])
        if isinstance(node, list):
            if op["op"] == "add":
                assert last == "-", op  # the builder appends, never inserts
                node.append(value)
            else:
                assert int(last) < len(node), op
                node[int(last)] = value
        else:
            assert (last in node) == (op["op"] == "replace"), op
            node[last] = value
    return out


@settings(max_examples=400, deadline=None)
@given(scenario(), st.data())
def test_patch_properties(case: tuple[dict[str, Any], dict[str, Any], Settings], data: st.DataObject) -> None:
    cluster, original, admin_settings = case
    before = copy.deepcopy(original)
    result = render(cluster, original, admin_settings)
    assert original == before, "render must not mutate its input"
    if result.denied is not None:
        assert result.patch == []
        return

    for op in result.patch:
        assert op["op"] in ("add", "replace")
        assert ALLOWED_PATH.match(op["path"]), op["path"]
        if op["op"] == "add" and op["path"].startswith("/metadata/annotations/"):
            assert "/" not in op["path"].removeprefix("/metadata/annotations/")

    patched = apply_strictly(original, result.patch)
    assert patched == result.pod

    # Deterministic.
    assert render(cluster, original, admin_settings).patch == result.patch
    old_env = original["spec"]["containers"][0].get("env", [])
    new_env = patched["spec"]["containers"][0].get("env", [])
    # Idempotent.
    assert render(cluster, patched, admin_settings).patch == []
    # Reinvoked after another webhook removed one entry the webhook appended: back, the injected list unchanged.
    if len(new_env) > len(old_env):
        removed = copy.deepcopy(patched)
        del removed["spec"]["containers"][0]["env"][data.draw(st.integers(len(old_env), len(new_env) - 1))]
        again = apply_strictly(removed, render(cluster, removed, admin_settings).patch)
        assert again["metadata"] == patched["metadata"]
        assert sorted_env(again) == sorted_env(patched)
    names = [e["name"] for e in new_env]
    # No name already present is added again (KubeRay's FT step on a conflicting RayCluster, which KubeRay
    # itself refuses, can give the cleanup pod a name twice already).
    appended = names[len(old_env):]
    assert len(appended) == len(set(appended)) and not set(appended) & {e["name"] for e in old_env}, \
        "duplicated env name"
    template_env = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].get("env", [])
    # KubeRay's own empty placeholders (<= 1.2's password, 1.7's address) may be replaced, nothing else.
    placeholders = ({"name": "REDIS_PASSWORD", "value": ""}, {"name": "RAY_REDIS_ADDRESS", "value": ""})
    for i, entry in enumerate(old_env):
        if entry["name"] == "KUBERAY_GEN_RAY_START_CMD":
            assert new_env[i]["value"].startswith(entry["value"].split(" --")[0])
        elif entry in placeholders and entry["name"] not in [e["name"] for e in template_env] \
                and original["metadata"]["labels"]["ray.io/node-type"] in ("head", "redis-cleanup"):
            assert new_env[i]["name"] == entry["name"]
        else:
            assert new_env[i] == entry, "an existing env entry changed"
    old_ann = original["metadata"].get("annotations") or {}
    new_ann = patched["metadata"].get("annotations") or {}
    assert all(new_ann[k] == v for k, v in old_ann.items() if k != "ray-ft-webhook.io/injected")
    # Every flag the command had is still there; at most one of each credential flag.
    old_args, new_args = original["spec"]["containers"][0]["args"][0], patched["spec"]["containers"][0]["args"][0]
    if original["metadata"]["labels"]["ray.io/node-type"] == "redis-cleanup":
        # The cleanup line is only ever told to pass the username the webhook added; nothing else changes.
        added = {e["name"] for e in new_env} - {e["name"] for e in old_env}
        assert new_args == (cleanup.add_username(old_args) if "REDIS_USERNAME" in added else old_args)
        assert added <= {"RAY_external_storage_namespace", "RAY_REDIS_ADDRESS", "REDIS_USERNAME", "REDIS_PASSWORD"}
        assert set(new_ann) - set(old_ann) <= {"ray-ft-webhook.io/injected"}
    assert set(old_args.split()) <= set(new_args.split()) or "username=" in new_args
    for flag in ("--redis-password", "--redis-username"):
        assert len(re.findall(rf"{flag}(=|\s|$)", new_args)) <= 1
