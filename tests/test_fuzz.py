"""Fuzzing: structurally random AdmissionReviews and RayClusters through the real code, seeded and bounded.

Three slices: AdmissionReviews in-process through the ASGI `/mutate` route (KubeRay pods mutated at random, and
pure junk), a few thousand over real HTTPS against `serve`, and RayCluster manifests through the parser and the
plan. Whatever comes in, the webhook must answer without an internal error, and every patch must be base64 JSON
that applies to the pod, adds no env name twice, leaves the user's entries alone and is idempotent.

CI runs a fixed slice (seed FUZZ_SEED, default below; FUZZ_SCALE=1). `make fuzz` runs FUZZ_SCALE=20 with a
fresh seed; a failure names the seed and case number, so `FUZZ_SEED=... FUZZ_SCALE=...` replays it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonpatch
import orjson
import pytest

from testkit.kuberay_pods import cleanup_pod, env_secret, pod, raycluster
from testkit.webhook import WebhookProcess, start_webhook
from webhook.admission.app import Health, create_app
from webhook.admission.lookup import StaticLookup
from webhook.core.mutation import mutate
from webhook.core.pod import InvalidPod, read_ray_pod
from webhook.core.raycluster import parse_raycluster
from webhook.core.settings import SecretRef, Settings

pytestmark = pytest.mark.fuzz

SEED = int(os.environ.get("FUZZ_SEED", "1105"))
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
IN_PROCESS = int(100_000 * SCALE)
OVER_HTTPS = int(2_000 * SCALE)
RAYCLUSTERS = int(10_000 * SCALE)

TIMEOUT = "RAY_gcs_rpc_server_reconnect_timeout_s"
FT_ENV = ("RAY_external_storage_namespace", "RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "REDIS_USERNAME", TIMEOUT,
          "KUBERAY_GEN_RAY_START_CMD")
ALLOWED_PATH = re.compile(
    r"^/metadata/annotations(/[^/]+)?$|^/spec/containers/0/env(/-|/\d+|/\d+/value)?$|^/spec/containers/0/args/0$"
)
# Spliced into the encoded body in place of this marker: numbers orjson cannot write (over 64 bits).
BIG_INT_MARK = "\x01bigint\x01"
BIG_INT = b"1" + b"0" * 40
ODD_STRINGS = (
    "", " ", "\uff16\uff10\uff10", "\u0663", "\u00b2", "\u2460", "9" * 11, "1" * 5000, "-1", "0", "1.5", "600 ",
    "\x00", "\u202etrue", "true", "TRUE", "$REDIS_PASSWORD", "ray start --head", "a/b/c", "ray.io/v1", "RayCluster",
    "head", "worker", "\U0001f600" * 3, "x" * 300, "redis:6379", "~1/~0", "--redis-password=x", BIG_INT_MARK,
)
SECRET_REF = {"secretKeyRef": {"name": "s", "key": "k"}}
CONTENT_TYPES = ("text/plain", "application/json; charset=utf-8", "", "APPLICATION/JSON", "application/json;;")
SETTINGS = (
    Settings(),
    Settings(default_redis_address="redis.ray:6379", default_redis_password_secret=SecretRef("admin-pw", "pass"),
             worker_reconnect_timeout_s=900, head_reconnect_timeout_s=90),
)


@pytest.fixture(autouse=True)
def quiet_warnings() -> Iterator[None]:
    """Thousands of "lookup failed" warnings cost more than the admissions; errors (a bug) still show."""
    logger = logging.getLogger("webhook")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


class Gen:
    """Cheap random structure from one `random.Random`: values, mutations, RayClusters and pods."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def string(self) -> str:
        r = self.r
        roll = r.random()
        if roll < 0.5:
            return r.choice(ODD_STRINGS)
        if roll < 0.8:
            return "".join(r.choice("abz09-._/:~$ \u00e9\u4e2d") for _ in range(r.randrange(12)))
        if roll < 0.98:
            return "".join(chr(r.randrange(1, 0xD7FF)) for _ in range(r.randrange(1, 8)))
        return r.choice("x\u4e2d9") * r.randrange(10_000, 200_000)

    def value(self, depth: int = 0) -> Any:
        r = self.r
        kind = r.randrange(10 if depth < 3 else 7)
        if kind == 0:
            return None
        if kind == 1:
            return r.choice((True, False))
        if kind == 2:
            return r.choice((0, -1, 1, 600, 2**31, 2**63 - 1, -(2**63)))
        if kind == 3:
            return r.choice((0.0, -0.5, 1e308, 600.0))
        if kind in (4, 5, 6):
            return self.string()
        if kind in (7, 8):
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        return {self.string()[:20]: self.value(depth + 1) for _ in range(r.randrange(4))}

    def env_entry(self) -> dict[str, Any]:
        r = self.r
        name = r.choice(FT_ENV) if r.random() < 0.8 else self.string()
        roll = r.random()
        if roll < 0.65:
            return {"name": name, "value": r.choice(ODD_STRINGS) if r.random() < 0.5 else str(r.randrange(1, 2000))}
        if roll < 0.85:
            return env_secret(name, "user-secret")
        if roll < 0.97:
            return {"name": name}
        return {"name": name, r.choice(("value", "valueFrom")): self.value(2)}

    def _nodes(self, doc: Any) -> Iterator[tuple[Any, Any]]:
        """(container, key) pairs along one random walk down `doc`."""
        node = doc
        while isinstance(node, dict | list) and node:
            key = self.r.choice(list(node)) if isinstance(node, dict) else self.r.randrange(len(node))
            yield node, key
            node = node[key]

    def mutate(self, doc: Any) -> None:
        """One structural change somewhere in `doc`: a wrong type, null, a list for an object, a deletion..."""
        r = self.r
        walk = list(self._nodes(doc))
        if not walk:
            return
        # Mostly deep (leaves are where odd values live), sometimes a whole branch.
        parent, key = walk[-1] if r.random() < 0.6 else r.choice(walk)
        roll = r.random()
        if roll < 0.35:
            parent[key] = self.value()
        elif roll < 0.5:
            parent[key] = None
        elif roll < 0.6:
            parent[key] = [parent[key]]
        elif roll < 0.75 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent[key], str):
            parent[key] = self.string()
        else:
            parent[key] = {} if r.random() < 0.5 else []

    def duplicate_env(self, p: dict[str, Any]) -> None:
        """Insert an entry (a copy of one there, or an FT variable) at a random place of the Ray container's env."""
        env = p["spec"]["containers"][0].setdefault("env", [])
        entry = dict(self.r.choice(env)) if env and self.r.random() < 0.5 else self.env_entry()
        if self.r.random() < 0.5 and "value" in entry:
            entry["value"] = self.r.choice(ODD_STRINGS)
        env.insert(self.r.randrange(len(env) + 1), entry)

    def raycluster(self, name: str) -> dict[str, Any]:
        """A RayCluster that KubeRay could be given: FT on or off, every source of every value, odd values."""
        r = self.r
        annotations: dict[str, Any] = {}
        pick: Callable[[tuple[str, ...]], str] = r.choice
        if r.random() < 0.75:
            annotations["ray.io/ft-enabled"] = r.choice(("true", "True", "true", "true", "false", ""))
        for key, choices in (
            ("ray.io/external-storage-namespace", ("ns-a", "")),
            ("ray-ft-webhook.io/redis-address", ("redis:6379", "rediss://r:6380", "a:1,b:2", " ")),
            ("ray-ft-webhook.io/redis-password-secret", ("pw", "pw/key", "a/b/c")),
            ("ray-ft-webhook.io/redis-username", ("ray",)),
            ("ray-ft-webhook.io/worker-reconnect-timeout-s", ("600", "30", "0", "\uff16\uff10\uff10", "1" * 5000)),
            ("ray-ft-webhook.io/head-reconnect-timeout-s", ("60", "\u00b2")),
            ("ray-ft-webhook.io/inject", ("true", "false", "nope")),
            ("ray-ft-webhook.io/unknown", ("x",)),
        ):
            if r.random() < 0.15:
                annotations[key] = pick(choices) if r.random() < 0.9 else self.string()
        options = None
        if r.random() < 0.4:
            options = {k: v for k, v in (
                ("redisAddress", "r:6379"), ("externalStorageNamespace", "opt"),
                ("redisPassword", r.choice(({"value": "pw"}, {"valueFrom": SECRET_REF}))),
                ("redisUsername", {"value": "u"}), ("backend", r.choice(("redis", "rocksdb"))),
            ) if r.random() < 0.5}
        params = {"num-cpus": "0"}
        if r.random() < 0.3:
            params["redis-password"] = r.choice(("$REDIS_PASSWORD", "plain", ""))
        if r.random() < 0.1:
            params["redis-username"] = "u"
        head_env = [self.env_entry() for _ in range(r.randrange(3))]
        return raycluster(name=name, uid=f"uid-{name}", annotations=annotations, options=options,
                          head_env=head_env, head_start_params=params)

    def odd_raycluster(self, name: str) -> dict[str, Any]:
        cluster = self.raycluster(name)
        for _ in range(self.r.randrange(4)):
            self.mutate(cluster)
        return cluster


def ray_pod(g: Gen, cluster: dict[str, Any]) -> dict[str, Any]:
    """A pod KubeRay would make for `cluster`, with the user's own entries (maybe duplicated) first."""
    role = g.r.choice(("head", "worker", "redis-cleanup"))
    if role == "redis-cleanup":
        p = cleanup_pod(cluster, kuberay_ft=g.r.random() < 0.5)
    else:
        p = pod(cluster, role, owner=g.r.random() < 0.8)
    container = p["spec"]["containers"][0]
    container["env"] = [g.env_entry() for _ in range(g.r.randrange(3))] + container["env"]
    if g.r.random() < 0.1:
        del container["env"]
    if g.r.random() < 0.3:
        p["metadata"]["annotations"] = {"team/a~b": "x", "ray.io/ft-enabled": "true"} if g.r.random() < 0.5 else {}
    return p


# --- the checks every patch must pass -------------------------------------------------------------------------

def env_of(p: Any) -> list[Any]:
    try:
        env = p["spec"]["containers"][0].get("env") or []
    except (KeyError, IndexError, TypeError, AttributeError):
        return []
    return env if isinstance(env, list) else []


def check_patch(original: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Assert the patch's properties on `original`; returns the patched pod."""
    for op in ops:
        assert op["op"] in ("add", "replace") and ALLOWED_PATH.match(op["path"]), op
    patched = jsonpatch.JsonPatch(ops).apply(orjson.loads(orjson.dumps(original)), in_place=True)
    old_env, new_env = env_of(original), env_of(patched)
    old_names = [e["name"] for e in old_env]
    added = [e["name"] for e in new_env[len(old_env):]]
    assert len(added) == len(set(added)) and not set(added) & set(old_names), f"env name duplicated: {added}"
    for i, entry in enumerate(old_env):
        if new_env[i] != entry:  # only KubeRay's lone generated command line or its lone empty placeholders
            assert old_names.count(entry["name"]) == 1, f"changed a duplicated env entry {entry['name']}"
            placeholders = ("REDIS_PASSWORD", "RAY_REDIS_ADDRESS")  # KubeRay <= 1.2's and 1.7's
            assert entry["name"] in ("KUBERAY_GEN_RAY_START_CMD", *placeholders), f"changed {entry['name']}"
            placeholder = entry.get("value") in ("", None) and not entry.get("valueFrom")
            assert entry["name"] not in placeholders or placeholder, f"changed a user's {entry['name']}"
    if "REDIS_USERNAME" in added:  # Ray's GCS aborts on a username without a password
        passwords = [e for e in new_env if e["name"] == "REDIS_PASSWORD"]
        assert passwords and ("valueFrom" in passwords[-1] or passwords[-1].get("value")), "username, no password"
    old_ann = original["metadata"].get("annotations") or {}
    new_ann = patched["metadata"].get("annotations") or {}
    assert all(new_ann[k] == v for k, v in old_ann.items() if k != "ray-ft-webhook.io/injected")
    return patched


# --- in-process: the ASGI /mutate route ---------------------------------------------------------------------

def review_body(obj: Any, uid: str, g: Gen | None = None) -> bytes:
    request: dict[str, Any] = {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                               "resource": {"group": "", "version": "v1", "resource": "pods"},
                               "operation": "CREATE", "namespace": "default", "object": obj}
    doc: Any = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    if g is not None:  # the review's own structure, mutated too
        if g.r.random() < 0.05:
            request["namespace"] = g.r.choice(("", None, 5))
        for _ in range(g.r.randrange(3)):
            g.mutate(doc)
    return orjson.dumps(doc).replace(orjson.dumps(BIG_INT_MARK), BIG_INT)


class Route:
    """Calls the real ASGI app in-process: one event loop, no HTTP, the whole request/response path."""

    def __init__(self, lookup: StaticLookup, settings: Settings) -> None:
        self.app = create_app(lookup, settings, Health(lambda: True, lambda: True))

    async def post(self, body: bytes) -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/mutate",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
        await self.app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def check_answer(status: int, body: bytes, obj: Any, where: str) -> list[dict[str, Any]]:
    """No 5xx, no internal error; returns the decoded patch (empty when none)."""
    assert status in (200, 400, 413, 415), f"{where}: HTTP {status} {body[:300]!r}"
    if status != 200:
        return []
    response = orjson.loads(body)["response"]
    if not response["allowed"]:
        code, message = response["status"]["code"], response["status"]["message"]
        assert code in (400, 403, 503) and "internal error" not in message, f"{where}: {response}"
        return []
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    ops = orjson.loads(base64.b64decode(response["patch"], validate=True))
    assert isinstance(obj, dict) and isinstance(ops, list) and ops, where
    return ops


def world(g: Gen, clusters: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Well-formed RayClusters (pods are made from these), and what the lookup holds: some of them odd."""
    good = [g.raycluster(f"rc-{i}") for i in range(clusters)]
    served = [orjson.loads(orjson.dumps(c)) for c in good]
    for cluster in served[: clusters // 4]:
        for _ in range(g.r.randrange(1, 4)):
            g.mutate(cluster["spec"] if g.r.random() < 0.7 else cluster["metadata"].setdefault("annotations", {}))
    return good, served


def lookup_of(clusters: list[dict[str, Any]]) -> StaticLookup:
    facts = (parse_raycluster(c) for c in clusters)
    return StaticLookup({(f.namespace or "default", f.name): f for f in facts})


def one_case(g: Gen, good: list[dict[str, Any]]) -> tuple[bytes, Any]:
    """One review body and the object in it: a mutated Ray pod (mostly) or junk."""
    roll = g.r.random()
    if roll < 0.03:
        return bytes(g.r.randrange(256) for _ in range(g.r.randrange(64))), None
    if roll < 0.06:
        return review_body(g.value(), "u", g), None
    p = ray_pod(g, g.r.choice(good))
    if g.r.random() < 0.3:
        g.duplicate_env(p)
    for _ in range(g.r.choice((0, 0, 1, 1, 2, 3))):
        g.mutate(p)
    return review_body(p, "u"), p


async def _in_process(seed: int, count: int) -> int:
    g = Gen(seed)
    good, served = world(g, 300)
    routes = [Route(lookup_of(served), s) for s in SETTINGS]
    patched_count = 0
    for n in range(count):
        where = f"FUZZ_SEED={seed} case {n}"
        route = g.r.choice(routes)
        body, obj = one_case(g, good)
        ops = check_answer(*await route.post(body), obj, where)
        if not ops:
            continue
        patched_count += 1
        try:
            patched = check_patch(obj, ops)
            again = check_answer(*await route.post(review_body(patched, "u2")), patched, where)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}\npod: {json.dumps(obj)[:3000]}\nops: {ops}") from None
        assert again == [], f"{where}: not idempotent, second run: {again}"
    return patched_count


def test_in_process_reviews() -> None:
    patched = asyncio.run(_in_process(SEED, IN_PROCESS))
    # The slice must exercise the interesting path, not only rejections.
    assert patched > IN_PROCESS // 5, patched


# --- over real HTTPS: the serve subprocess ------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebhookProcess, list[dict[str, Any]]]]:
    g = Gen(SEED + 1)
    good, served = world(g, 100)
    folder = tmp_path_factory.mktemp("fuzz-rayclusters")
    for i, cluster in enumerate(served):
        (folder / f"rc-{i}.json").write_text(json.dumps(cluster))
    hook = start_webhook(tmp_path_factory.mktemp("fuzz-tls"), ["--rayclusters-from", str(folder),
                                                                "--default-redis-address", "redis:6379"])
    yield hook, good
    assert hook.stop() == 0, hook.logs()[-3000:]


def test_over_https(served: tuple[WebhookProcess, list[dict[str, Any]]]) -> None:
    hook, good = served
    g = Gen(SEED + 2)
    patched_count = 0
    with hook.client() as client:
        for n in range(OVER_HTTPS):
            where = f"FUZZ_SEED={SEED} https case {n}"
            body, obj = one_case(g, good)
            content_type = "application/json" if g.r.random() < 0.97 else g.r.choice(CONTENT_TYPES)
            r = client.post("/mutate", content=body, headers={"Content-Type": content_type})
            ops = check_answer(r.status_code, r.content, obj, where)
            if ops:
                patched_count += 1
                patched = check_patch(obj, ops)
                again = client.post("/mutate", content=review_body(patched, "u2"),
                                    headers={"Content-Type": "application/json"})
                assert check_answer(again.status_code, again.content, patched, where) == [], where
    assert patched_count > OVER_HTTPS // 5
    assert "admission failed" not in hook.logs()


# --- RayClusters through the parser and the plan ------------------------------------------------------------

def test_rayclusters_through_parser_and_plan() -> None:
    g = Gen(SEED + 3)
    pods = {role: pod(raycluster(name="rc", uid="uid-rc"), role) for role in ("head", "worker")}
    pods["redis-cleanup"] = cleanup_pod(raycluster(name="rc", uid="uid-rc"))
    facts_of = {role: read_ray_pod(p, "default") for role, p in pods.items()}
    for n in range(RAYCLUSTERS):
        where = f"FUZZ_SEED={SEED} raycluster case {n}"
        cluster = g.odd_raycluster("rc") if g.r.random() < 0.7 else g.value()
        facts = parse_raycluster(cluster)
        role, settings = g.r.choice(("head", "worker", "redis-cleanup")), g.r.choice(SETTINGS)
        pod_facts = facts_of[role]
        assert pod_facts is not None
        result = mutate(facts, pod_facts, settings)
        if result.denied is not None:
            assert not result.ops and facts.errors, where
            continue
        if not result.ops:
            continue
        try:
            patched = check_patch(pods[role], orjson.loads(orjson.dumps(list(result.ops))))
            again = read_ray_pod(patched, "default")
        except (AssertionError, InvalidPod) as exc:
            raise AssertionError(f"{where}: {exc}\ncluster: {json.dumps(cluster)[:3000]}") from None
        assert again is not None and mutate(facts, again, settings).ops == (), f"{where}: not idempotent"
