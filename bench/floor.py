"""The floor: the least a correct answer to the benchmark's mix needs, on the ceiling's transport.

Like the ceiling (bench/ceiling.py: same uvicorn, TLS and settings) it reads the body and parses it with orjson;
then it does only what any webhook that answers correctly must add: check that the review is a pod CREATE, find
what decides the pod's patch (the same parts of the pod our memo keys on, `pod.read_inputs`, encoded by orjson)
and send the answer for those parts with the request's uid. The answers are computed before it starts, by our
planner over the mix's pods (its RayClusters and admin defaults), so it does no planning, no lookup, no
metrics and no checks beyond those: a webhook whose memo always hits and that costs nothing else. What ours
spends above it is our framing, metrics, limits and the memo's bookkeeping.

    python bench/floor.py PORT CERT KEY      # answers the mix of bench/workload.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / part) for part in ("", "hack", "bench")]

import ceiling  # noqa: E402
import workload  # noqa: E402

from webhook.admission import review  # noqa: E402
from webhook.admission.lookup import StaticLookup  # noqa: E402
from webhook.core.mutation import mutate  # noqa: E402
from webhook.core.pod import read_inputs, read_ray_pod  # noqa: E402
from webhook.core.settings import SecretRef, Settings  # noqa: E402


def make_app(lookup: StaticLookup, settings: Settings, bodies: list[bytes]) -> Any:
    """The floor's ASGI app for `bodies` (the mix): their answers, by the encoded parts of their pods."""
    answers: dict[bytes, dict[str, Any]] = {}
    for body in bodies:
        req = review.parse_review(body)
        pod = read_ray_pod(req.object, req.namespace)
        cluster = lookup.cached(pod.owner) if pod is not None else None
        if pod is not None and cluster is not None:
            result = mutate(cluster, pod, settings, lookup.namespace(req.namespace))
            answers[orjson.dumps(read_inputs(req.object, req.namespace))] = review.patched(
                "", review.json_patch(result.ops), result.warnings)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = orjson.loads(await ceiling.read_body(receive))["request"]
        answer: dict[str, Any] = {"allowed": True}
        if request["operation"] == "CREATE" and request["kind"]["kind"] == "Pod":
            parts = read_inputs(request["object"], request["namespace"])
            answer = answers.get(orjson.dumps(parts), answer) if parts is not None else answer
        await ceiling.respond(send, {**answer, "uid": request["uid"]})

    return app


def mix_app() -> Any:
    folder = workload.write_clusters(Path(tempfile.mkdtemp(prefix="ray-ft-floor-")), workload.clusters())
    settings = Settings(default_redis_address=workload.DEFAULT_REDIS_ADDRESS,
                        default_redis_password_secret=SecretRef.parse(workload.DEFAULT_REDIS_PASSWORD_SECRET))
    return make_app(StaticLookup.from_folder(folder), settings, [orjson.dumps(r) for _, r in workload.mix()])


if __name__ == "__main__":
    ceiling.serve(mix_app(), int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
