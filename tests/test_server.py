"""The real `serve` over real TLS (uvicorn on 127.0.0.1, httpx verifying the CA): protocol, every bad-input
case with its exact answer, health, readiness, metrics, TLS versions and keep-alive.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
import yaml

from testkit.kuberay_pods import QUICKSTART_UID, pod, quickstart_raycluster, raycluster
from testkit.webhook import WebhookProcess, start_webhook
from webhook.admission.limits import MAX_BODY_BYTES

BAD_CLUSTER = raycluster(
    name="bad-annotations", uid="0000-bad",
    annotations={"ray.io/ft-enabled": "true", "ray-ft-webhook.io/worker-reconnect-timeout-s": "ten"},
)


def review(obj: Any, uid: str = "req-1", operation: str = "CREATE", namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": operation, "namespace": namespace, "object": obj, "dryRun": False,
        },
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rayclusters")
    (folder / "quickstart.yaml").write_text(yaml.safe_dump(quickstart_raycluster()))
    (folder / "bad.json").write_text(json.dumps(BAD_CLUSTER))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, folder: Path) -> Iterator[WebhookProcess]:
    hook = start_webhook(tmp_path_factory.mktemp("tls"), ["--rayclusters-from", str(folder)])
    yield hook
    assert hook.stop() == 0, hook.logs()


@pytest.fixture()
def client(server: WebhookProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def post(client: httpx.Client, body: Any, content_type: str = "application/json") -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/mutate", content=data, headers={"Content-Type": content_type})


def test_patches_quickstart_head(client: httpx.Client) -> None:
    p = pod(quickstart_raycluster(), "head")
    r = post(client, review(p, uid="abc-123"))
    assert r.status_code == 200
    body = r.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    resp = body["response"]
    assert resp["uid"] == "abc-123" and resp["allowed"] is True and resp["patchType"] == "JSONPatch"
    patched = jsonpatch.apply_patch(p, json.loads(base64.b64decode(resp["patch"])))
    env = {e["name"]: e.get("value") for e in patched["spec"]["containers"][0]["env"]}
    assert env["RAY_external_storage_namespace"] == QUICKSTART_UID
    assert patched["metadata"]["annotations"]["ray.io/ft-enabled"] == "true"
    assert "warnings" not in resp


def test_worker_gets_timeout(client: httpx.Client) -> None:
    resp = post(client, review(pod(quickstart_raycluster(), "worker"))).json()["response"]
    ops = json.loads(base64.b64decode(resp["patch"]))
    assert {"op": "add", "path": "/spec/containers/0/env/-",
            "value": {"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "600"}} in ops


def test_non_ray_pod_and_update_are_allowed_untouched(client: httpx.Client) -> None:
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": [{"name": "c"}]}}
    assert post(client, review(plain)).json()["response"] == {"uid": "req-1", "allowed": True}
    update = review(pod(quickstart_raycluster(), "head"), operation="UPDATE")
    assert post(client, update).json()["response"] == {"uid": "req-1", "allowed": True}


def test_bad_annotation_is_denied_with_its_name_and_value(client: httpx.Client) -> None:
    resp = post(client, review(pod(BAD_CLUSTER, "worker"))).json()["response"]
    assert resp["allowed"] is False and resp["status"]["code"] == 403
    assert "ray-ft-webhook.io/worker-reconnect-timeout-s: 'ten' is not a positive integer" in resp["status"]["message"]
    assert "patch" not in resp


def test_unknown_raycluster_is_denied_by_default(client: httpx.Client) -> None:
    resp = post(client, review(pod(raycluster(name="gone", uid="u-1", annotations={"ray.io/ft-enabled": "true"}))))
    body = resp.json()["response"]
    assert body["allowed"] is False and body["status"]["code"] == 503
    assert body["status"]["message"] == "ray-ft-webhook: RayCluster default/gone not found in the manifest folder"


def test_invalid_ray_pod_is_denied(client: httpx.Client) -> None:
    p = pod(quickstart_raycluster(), "head")
    p["spec"]["containers"][0]["env"] = "nope"
    body = post(client, review(p)).json()["response"]
    assert body["allowed"] is False and body["status"] == {
        "code": 400, "message": "ray-ft-webhook: invalid Ray pod: spec.containers[0].env is not a list"}


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, "request body is not a JSON object"),
    ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}}, 400,
     "expected apiVersion admission.k8s.io/v1 kind AdmissionReview, got apiVersion 'admission.k8s.io/v1beta1' "
     "kind 'AdmissionReview'"),
    ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, 400, "AdmissionReview has no request object"),
    ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}, 400,
     "AdmissionReview request has no uid"),
    ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}}, 400,
     "AdmissionReview request has no uid"),
], ids=["not-json", "not-object", "v1beta1", "no-request", "no-uid", "empty-uid"])
def test_bad_reviews_get_400(client: httpx.Client, body: Any, status: int, message: str | None) -> None:
    r = post(client, body)
    assert r.status_code == status
    if message is None:
        assert r.json()["error"].startswith("request body is not valid JSON: ")
    else:
        assert r.json() == {"error": message}


def test_wrong_content_type_gets_415(client: httpx.Client) -> None:
    r = post(client, review(pod(quickstart_raycluster())), content_type="text/plain")
    assert r.status_code == 415
    assert r.json() == {"error": "Content-Type must be application/json, got 'text/plain'"}
    r = client.post("/mutate", content=b"{}", headers={"Content-Type": ""})
    assert r.status_code == 415


def test_declared_oversize_body_gets_413_without_reading(server: WebhookProcess) -> None:
    """Send only the headers of a 7 MiB request: the answer comes before any body byte."""
    ctx = ssl.create_default_context(cafile=str(server.ca))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % (7 * 1024 * 1024))
        head = b""
        while b'limit"}' not in head and (chunk := tls.recv(65536)):
            head += chunk
    assert head.decode().startswith("HTTP/1.1 413")
    assert f'"request body of {7 * 1024 * 1024} bytes is over the {MAX_BODY_BYTES}-byte limit"' in head.decode()


def test_streamed_oversize_body_gets_413(client: httpx.Client) -> None:
    """A chunked body with no Content-Length, endless in principle: the read stops at the limit."""
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        while sent < 64 * 1024 * 1024:  # bounded: at most 64 MiB are ever offered
            sent += 65536
            yield b" " * 65536

    try:
        r = client.post("/mutate", content=chunks(), headers={"Content-Type": "application/json"})
    except httpx.TransportError:
        pytest.fail("server closed the connection instead of answering 413")
    assert r.status_code == 413
    assert r.json() == {"error": f"request body is over the {MAX_BODY_BYTES}-byte limit"}


def test_health_readiness_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").text == "ok\n"
    post(client, review(pod(quickstart_raycluster(), "worker")))
    text = client.get("/metrics").text
    assert 'ray_ft_webhook_admissions_total{outcome="patched"}' in text
    assert 'ray_ft_webhook_admission_duration_seconds_bucket{le="0.001"}' in text
    assert 'ray_ft_webhook_raycluster_cache_total{result="hit"}' in text
    assert "ray_ft_webhook_rayclusters_cached 2.0" in text  # the two RayClusters of the folder
    assert "ray_ft_webhook_certificate_expiry_timestamp_seconds" in text
    assert "ray_ft_webhook_cache_synced 1.0" in text  # what /readyz says, as a number an alert can read
    assert "ray_ft_webhook_incomplete_heads_total 0.0" in text


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_is_refused(server: WebhookProcess) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(server.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with contextlib.suppress(ssl.SSLError):
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def test_plain_http_is_not_served(server: WebhookProcess) -> None:
    with httpx.Client(trust_env=False, timeout=5) as c, pytest.raises(httpx.TransportError):
        c.get(f"http://127.0.0.1:{server.port}/healthz")


def test_connection_is_kept_alive_beyond_uvicorns_default(server: WebhookProcess) -> None:
    """The apiserver reuses idle connections; uvicorn's default would close them after 5 s."""
    ctx = ssl.create_default_context(cafile=str(server.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok\n"
        first_socket = conn.sock
        time.sleep(7)
        conn.request("GET", "/healthz")  # http.client never reconnects silently: a closed socket raises
        assert conn.getresponse().read() == b"ok\n"
        assert conn.sock is first_socket
    finally:
        conn.close()
