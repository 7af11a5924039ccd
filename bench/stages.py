"""Where one admission's CPU goes, without TLS and HTTP: each stage of our `/mutate` timed in-process over the
benchmark's mix, next to the ceiling's, the floor's and our whole ASGI apps (with the memo of decisions, and
with it off: every pod planned). CPU time (time.process_time), best of 5.

    taskset -c 0 .venv/bin/python bench/stages.py     # prints JSON: microseconds per request, by stage
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / part) for part in ("", "hack", "bench")]

import ceiling  # noqa: E402
import floor  # noqa: E402
import orjson  # noqa: E402
import workload  # noqa: E402

from webhook.admission import review  # noqa: E402
from webhook.admission.app import Health, create_app  # noqa: E402
from webhook.admission.decisions import Decisions  # noqa: E402
from webhook.admission.handler import Admission  # noqa: E402
from webhook.admission.limits import Limits  # noqa: E402
from webhook.admission.lookup import StaticLookup  # noqa: E402
from webhook.admission.metrics import Metrics  # noqa: E402
from webhook.core.mutation import mutate  # noqa: E402
from webhook.core.pod import read_ray_pod  # noqa: E402
from webhook.core.settings import SecretRef, Settings  # noqa: E402

ROUNDS = 300


def per_request(fn: Callable[[], Any], requests: int) -> float:
    """Microseconds of CPU per request for `fn`, which handles `requests` requests; best of 5."""
    best = float("inf")
    for _ in range(5):
        began = time.process_time()
        for _ in range(ROUNDS):
            fn()
        best = min(best, (time.process_time() - began) / (ROUNDS * requests))
    return best * 1e6


async def call(app: Any, body: bytes) -> None:
    """One POST /mutate through an ASGI app, as uvicorn would call it."""
    scope = {"type": "http", "method": "POST", "path": "/mutate", "raw_path": b"/mutate", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "http_version": "1.1", "scheme": "https", "root_path": "", "state": {}}
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        return None

    await app(scope, receive, send)


def main() -> None:
    folder = workload.write_clusters(Path(tempfile.mkdtemp(prefix="ray-ft-stages-")), workload.clusters())
    lookup = StaticLookup.from_folder(folder)
    settings = Settings(default_redis_address=workload.DEFAULT_REDIS_ADDRESS,
                        default_redis_password_secret=SecretRef.parse(workload.DEFAULT_REDIS_PASSWORD_SECRET))
    bodies = [orjson.dumps(r) for _, r in workload.mix()]
    n = len(bodies)
    reqs = [review.parse_review(b) for b in bodies]
    pods = [read_ray_pod(r.object, r.namespace) for r in reqs]
    facts = [(lookup.cached(p.owner), p) for p in pods if p is not None]
    results = [mutate(c, p, settings) for c, p in facts if c is not None]
    metrics = Metrics()
    ours = create_app(lookup, settings, Health(lambda: True, lambda: True), metrics)
    memo_off = create_app(lookup, settings, Health(lambda: True, lambda: True), Metrics(),
                          Limits(decision_memo_bytes=0))
    floor_app = floor.make_app(lookup, settings, bodies)
    decisions = Decisions()
    keys = [decisions.key(r.object, r.namespace) for r in reqs]
    handler = Admission(lookup, settings, Metrics())
    loop = asyncio.new_event_loop()
    for r in reqs:
        loop.run_until_complete(handler.answer(r))

    def through(app: Any) -> Callable[[], Any]:
        async def all_bodies() -> None:
            for body in bodies:
                await call(app, body)
        return lambda: loop.run_until_complete(all_bodies())

    def observe() -> None:
        metrics.in_flight.up()
        metrics.in_flight.down()
        metrics.admissions.add("patched")
        metrics.latency.observe(0.001)

    def each(fn: Callable[[Any], Any], items: list[Any]) -> Callable[[], None]:
        """Call `fn` on every item, dropping each result at once (as a request does)."""
        def run() -> None:
            for item in items:
                fn(item)
        return run

    def response(pair: tuple[review.AdmissionRequest, Any]) -> bytes:
        req, result = pair
        return review.encode(review.patched(req.uid, review.json_patch(result.ops), result.warnings))

    pairs = list(zip(reqs, results, strict=False))
    out = {
        "ceiling app (parse + echo)": per_request(through(ceiling.app), n),
        "floor app (parse + memo key + stored answer)": per_request(through(floor_app), n),
        "ours app (whole /mutate)": per_request(through(ours), n),
        "ours app, memo off (every pod planned)": per_request(through(memo_off), n),
        "orjson.loads": per_request(each(orjson.loads, bodies), n),
        "parse_review": per_request(each(review.parse_review, bodies), n),
        "memo key (read_inputs + orjson)": per_request(each(lambda r: decisions.key(r.object, r.namespace), reqs), n),
        "memo recall": per_request(each(lambda k: handler.decisions.recall(k, lookup, settings) if k else None,
                                        keys), n),
        "read_ray_pod": per_request(each(lambda r: read_ray_pod(r.object, r.namespace), reqs), n),
        "lookup.cached": per_request(each(lambda p: lookup.cached(p.owner) if p else None, pods), n),
        "mutate (plan + ops)": per_request(each(lambda cp: mutate(cp[0], cp[1], settings), facts), n),
        "patch + response encode": per_request(each(response, pairs), n),
        "metrics (4 updates)": per_request(each(lambda _: observe(), bodies), n),
    }
    out["requests in the mix"] = n
    out["of them Ray pods (memo, or plan + ops)"] = len(results)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
