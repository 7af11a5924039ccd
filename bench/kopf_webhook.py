"""The kopf peer: `@kopf.on.mutate` doing ray-ft-webhook's injection, with kopf's own admission server.

The decision is ours (webhook.core.pod.read_ray_pod, webhook.core.mutation.mutate on RayClusters parsed once by
webhook.core.raycluster.parse_raycluster from the same folder); everything around it is kopf's: aiohttp server
(kopf.WebhookServer with the same certificate; Python's default server context, TLS >= 1.2), its review
parsing, handler execution, and its patch, which applies our ops to a deep copy of the pod and diffs it
(kopf.Patch.as_json_patch). kopf cannot serve admissions without a Kubernetes API (it waits for its
resource scan first), so bench/run.py runs it against the local control plane of hack/testkit/controlplane.py.

    KUBECONFIG=... BENCH_PORT=... BENCH_CERTS=DIR BENCH_RAYCLUSTERS=DIR \
        python -m kopf run --standalone --all-namespaces bench/kopf_webhook.py
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jsonpatch
import kopf

from webhook.admission.lookup import StaticLookup
from webhook.core.mutation import mutate
from webhook.core.pod import read_ray_pod
from webhook.core.settings import SecretRef, Settings

CERTS = Path(os.environ.get("BENCH_CERTS", "certs"))
LOOKUP = StaticLookup.from_folder(Path(os.environ.get("BENCH_RAYCLUSTERS", "examples/rayclusters")))
SETTINGS = Settings(
    default_redis_address=os.environ.get("BENCH_DEFAULT_REDIS_ADDRESS") or None,
    default_redis_password_secret=SecretRef.parse(os.environ["BENCH_DEFAULT_REDIS_PASSWORD_SECRET"])
    if os.environ.get("BENCH_DEFAULT_REDIS_PASSWORD_SECRET") else None,
)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Serve admissions on BENCH_PORT with the bench certificate; no webhook configuration management."""
    settings.admission.server = kopf.WebhookServer(
        addr="127.0.0.1", port=int(os.environ["BENCH_PORT"]), certfile=str(CERTS / "tls.crt"),
        pkeyfile=str(CERTS / "tls.key"), cafile=str(CERTS / "ca.crt"))
    settings.admission.managed = None
    settings.posting.enabled = False
    # Like ray-ft-webhook, nothing is logged per admission (kopf logs every handler run at INFO).
    logging.getLogger().setLevel(logging.WARNING)


@kopf.on.mutate("pods", id="mutate", operation="CREATE")
def inject(body: kopf.Body, patch: kopf.Patch, warnings: list[str], **_: Any) -> None:
    """Our decision; kopf turns the transformation into a JSON Patch by diffing."""
    pod = read_ray_pod(body, body.metadata.namespace or "")
    if pod is None:
        return
    cluster = LOOKUP.cached(pod.owner)
    if cluster is None:
        raise kopf.AdmissionError(f"RayCluster {pod.owner.namespace}/{pod.owner.name} not found", code=503)
    result = mutate(cluster, pod, SETTINGS)
    if result.denied is not None:
        raise kopf.AdmissionError(result.denied, code=403)
    warnings.extend(result.warnings)
    if result.ops:
        ops = [dict(op) for op in result.ops]
        patch.fns.append(lambda raw: jsonpatch.apply_patch(raw, ops, in_place=True))
