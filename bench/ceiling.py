"""The ceiling: a bare uvicorn app that answers every AdmissionReview "allowed" with no logic.

Same transport as `ray-ft-webhook serve`: uvicorn (uvloop + httptools), the same TLS context
(webhook.certs.tls: TLS >= 1.2, the same ECDSA P-256 certificate), keep-alive 120 s, no access log, no proxy
headers, the start-up heap frozen out of the garbage collector. It imports nothing else of ours (a smaller
heap, as a bare app has). The body is parsed (orjson) only to echo the uid, which any answer must do; so
the gap between this and our webhook is exactly our routing, decision, patch and metrics.

    python bench/ceiling.py PORT CERT KEY
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from webhook.certs.tls import ReloadingTLS

# As webhook.cli.serve (not imported: it would bring the kubernetes client and FastAPI into this heap).
KEEP_ALIVE_S, GRACEFUL_SHUTDOWN_S = 120, 10

HEADERS = [(b"content-type", b"application/json")]


async def read_body(receive: Any) -> bytes:
    """The request body, however many messages it comes in."""
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def respond(send: Any, response: dict[str, Any]) -> None:
    """Send `response` as an AdmissionReview v1 answer."""
    body = orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    await send({"type": "http.response.start", "status": 200,
                "headers": [*HEADERS, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Raw ASGI: read the body, echo the uid in an allowed AdmissionReview response."""
    if scope["type"] != "http":
        return
    uid = orjson.loads(await read_body(receive))["request"]["uid"]
    await respond(send, {"uid": uid, "allowed": True})


def main() -> None:
    serve(app, int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))


def serve(asgi: Any, port: int, cert: Path, key: Path) -> None:
    """Run `asgi` as `serve` runs ours (also the floor's transport, bench/floor.py)."""
    tls = ReloadingTLS(cert, key)
    gc.collect()
    gc.freeze()
    uvicorn.Server(uvicorn.Config(
        asgi, host="127.0.0.1", port=port, lifespan="off",
        ssl_context_factory=lambda _config, _default: tls.context,
        timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        access_log=False, log_config=None, log_level="warning", server_header=False, proxy_headers=False,
    )).run()


if __name__ == "__main__":
    main()
