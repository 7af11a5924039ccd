"""The product's Kubernetes client (webhook/common/kubeapi.py) and where it gets its configuration from
(webhook/common/kubeconfig.py, kube.py).

The client is exercised over real HTTPS: `FakeApiserver` is a stdlib http.server behind a TLS context with
certificates from webhook.certs.generate, whose answers each test scripts; it sees what a kube-apiserver would
see (the Authorization header, the client certificate, the query). The real kube-apiserver drives the same client
in tests/e2e and tests/faults.
"""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from urllib3.exceptions import SSLError

from testkit.kuberay_pods import raycluster
from testkit.processes import wait_until
from testkit.webhook import free_port
from webhook.admission.watch import WatchCache, _describe
from webhook.certs import generate
from webhook.common import kubeconfig
from webhook.common.errors import InputError
from webhook.common.kubeapi import ApiError, Client, ClusterConfig, TokenSource, watch_events

# -- a scripted HTTPS apiserver ----------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    client_cn: str | None
    body: Any


# A route answers (status, JSON body) or, for a watch, (200, [event, ...]) streamed one line each.
Answer = tuple[int, Any]


@dataclass
class FakeApiserver:
    folder: Path
    dns_names: list[str] = field(default_factory=lambda: ["localhost"])
    ips: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    routes: dict[tuple[str, str], Callable[[Seen], Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def start(self) -> FakeApiserver:
        self.ca = generate.generate_ca()
        self.client_ca = generate.generate_ca("clients")
        serving = generate.generate_leaf(self.ca, self.dns_names, self.ips)
        (self.folder / "ca.crt").write_bytes(self.ca.cert_pem)
        (self.folder / "server.crt").write_bytes(serving.cert_pem)
        (self.folder / "server.key").write_bytes(serving.key_pem)
        (self.folder / "client-ca.crt").write_bytes(self.client_ca.cert_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.folder / "server.crt", self.folder / "server.key")
        ctx.verify_mode = ssl.CERT_OPTIONAL  # as the apiserver: a client certificate is one way to authenticate
        ctx.load_verify_locations(self.folder / "client-ca.crt")
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                cert = self.connection.getpeercert()  # type: ignore[attr-defined]
                cn = dict(x[0] for x in cert["subject"]).get("commonName") if cert else None
                seen = Seen(self.command, url.path, dict(urllib.parse.parse_qsl(url.query)),
                            self.headers.get("Authorization"), cn, body)
                server.seen.append(seen)
                route = server.routes.get((self.command, url.path))
                status, answer = route(seen) if route else (404, {"kind": "Status", "code": 404})
                if isinstance(answer, list):  # a watch: one event a line, then the stream ends
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for event in answer:
                        self.wfile.write(json.dumps(event).encode() + b"\n")
                        self.wfile.flush()
                    self.close_connection = True
                    return
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client_pair(self, user: str) -> generate.KeyPair:
        return generate.generate_leaf(self.client_ca, [], [], client=True, common_name=user)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[FakeApiserver]:
    folder = tmp_path / "apiserver"
    folder.mkdir()
    server = FakeApiserver(folder).start()
    server.routes[("GET", "/api/v1/namespaces/a")] = lambda seen: (200, {"kind": "Namespace",
                                                                         "metadata": {"name": "a"}})
    yield server
    server.stop()


def write_kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any], namespace: str | None = None,
                     current: str | None = "c") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    context: dict[str, Any] = {"cluster": "k", "user": "u", **({"namespace": namespace} if namespace else {})}
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", **({"current-context": current} if current is not None else {}),
        "clusters": [{"name": "k", "cluster": cluster}], "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": context}],
    }))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def get_namespace(config: ClusterConfig, **kwargs: Any) -> Any:
    return Client(config, **kwargs).get("/api/v1/namespaces/a", timeout=5)


# -- kubeconfig: each way to authenticate, over TLS ---------------------------------------------------------------

def test_token_and_a_relative_ca_file(apiserver: FakeApiserver, tmp_path: Path) -> None:
    """A relative path is relative to the kubeconfig's folder, not to the working directory."""
    (tmp_path / "kube").mkdir()
    (tmp_path / "kube" / "ca.pem").write_bytes(apiserver.ca.cert_pem)
    path = write_kubeconfig(tmp_path / "kube" / "config", {"server": apiserver.url, "certificate-authority": "ca.pem"},
                            {"token": "secret-token"}, namespace="team-a")
    config = kubeconfig.from_kubeconfig([path])
    assert config.namespace == "team-a" and "secret-token" not in repr(config)
    assert get_namespace(config)["metadata"]["name"] == "a"
    assert apiserver.seen[-1].authorization == "Bearer secret-token"


def test_client_certificate_data(apiserver: FakeApiserver, tmp_path: Path) -> None:
    pair = apiserver.client_pair("alice")
    path = write_kubeconfig(tmp_path / "config", {"server": apiserver.url,
                                                  "certificate-authority-data": b64(apiserver.ca.cert_pem)},
                            {"client-certificate-data": b64(pair.cert_pem), "client-key-data": b64(pair.key_pem)})
    get_namespace(kubeconfig.from_kubeconfig([path]))
    assert apiserver.seen[-1].client_cn == "alice" and apiserver.seen[-1].authorization is None


def test_client_certificate_files_relative(apiserver: FakeApiserver, tmp_path: Path) -> None:
    pair = apiserver.client_pair("bob")
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "bob.crt").write_bytes(pair.cert_pem)
    (folder / "bob.key").write_bytes(pair.key_pem)
    (folder / "ca.crt").write_bytes(apiserver.ca.cert_pem)
    path = write_kubeconfig(folder / "config", {"server": apiserver.url, "certificate-authority": "ca.crt"},
                            {"client-certificate": "bob.crt", "client-key": "bob.key"})
    get_namespace(kubeconfig.from_kubeconfig([path]))
    assert apiserver.seen[-1].client_cn == "bob"


def test_basic_auth_and_insecure_skip_tls_verify(apiserver: FakeApiserver, tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", {"server": apiserver.url, "insecure-skip-tls-verify": True},
                            {"username": "admin", "password": "pw"})
    get_namespace(kubeconfig.from_kubeconfig([path]))
    assert apiserver.seen[-1].authorization == "Basic " + b64(b"admin:pw")


def test_the_server_certificate_is_checked(apiserver: FakeApiserver, tmp_path: Path) -> None:
    """Without the CA (the system's do not know it) the call fails: the client never trusts by default."""
    path = write_kubeconfig(tmp_path / "config", {"server": apiserver.url}, {"token": "t"})
    with pytest.raises(SSLError):
        get_namespace(kubeconfig.from_kubeconfig([path]))
    assert apiserver.seen == []


def test_tls_server_name(tmp_path: Path) -> None:
    """A certificate for a name only (not 127.0.0.1): `tls-server-name` is sent and checked instead of the host."""
    server = FakeApiserver(tmp_path, dns_names=["apiserver.internal"], ips=[]).start()
    server.routes[("GET", "/api")] = lambda seen: (200, {"kind": "APIVersions"})
    try:
        cluster = {"server": server.url, "certificate-authority-data": b64(server.ca.cert_pem)}
        with pytest.raises(SSLError, match=r"127\.0\.0\.1"):
            Client(kubeconfig.from_kubeconfig([write_kubeconfig(tmp_path / "plain", cluster, {})])).get("/api")
        named = write_kubeconfig(tmp_path / "named", {**cluster, "tls-server-name": "apiserver.internal"}, {})
        assert Client(kubeconfig.from_kubeconfig([named])).get("/api") == {"kind": "APIVersions"}
    finally:
        server.stop()


def test_token_file_is_read_again(apiserver: FakeApiserver, tmp_path: Path) -> None:
    """`tokenFile` (relative) and the in-cluster token: bound service-account tokens rotate, so the file is read
    again (here every request: token_reread_s=0) and the new token is sent."""
    (tmp_path / "token").write_text("first\n")
    path = write_kubeconfig(tmp_path / "config", {"server": apiserver.url,
                                                  "certificate-authority-data": b64(apiserver.ca.cert_pem)},
                            {"tokenFile": "token"})
    client = Client(kubeconfig.from_kubeconfig([path]), token_reread_s=0)
    client.get("/api/v1/namespaces/a")
    (tmp_path / "token").write_text("second\n")
    client.get("/api/v1/namespaces/a")
    assert [s.authorization for s in apiserver.seen] == ["Bearer first", "Bearer second"]


def test_token_source_rereads_within_a_minute(tmp_path: Path) -> None:
    """The default period is client-go's minute; a failed re-read keeps the last token."""
    now = [0.0]
    token = tmp_path / "token"
    token.write_text("one")
    source = TokenSource(None, token, clock=lambda: now[0])
    assert source.get() == "one"
    token.write_text("two")
    now[0] = 59.0
    assert source.get() == "one"
    now[0] = 60.0
    assert source.get() == "two"
    token.unlink()
    now[0] = 200.0
    assert source.get() == "two"


# -- in-cluster ---------------------------------------------------------------------------------------------------

def service_account(folder: Path, ca: bytes, token: str = "sa-token") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.crt").write_bytes(ca)
    (folder / "token").write_text(token)
    (folder / "namespace").write_text("ray-ft-webhook\n")
    return folder


def test_in_cluster_service_account(apiserver: FakeApiserver, tmp_path: Path) -> None:
    folder = service_account(tmp_path / "sa", apiserver.ca.cert_pem)
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(apiserver.port)}
    config = kubeconfig.in_cluster(env, folder)
    assert config.namespace == "ray-ft-webhook" and config.token_file == folder / "token"
    client = Client(config, token_reread_s=0)
    client.get("/api/v1/namespaces/a")
    (folder / "token").write_text("rotated")  # the kubelet rotates the projected token
    client.get("/api/v1/namespaces/a")
    assert [s.authorization for s in apiserver.seen] == ["Bearer sa-token", "Bearer rotated"]


def test_in_cluster_ipv6_and_what_is_missing(tmp_path: Path) -> None:
    folder = service_account(tmp_path / "sa", b"")
    v6 = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert kubeconfig.in_cluster(v6, folder).server == "https://[fd00::1]:443"
    with pytest.raises(InputError, match="KUBERNETES_SERVICE_PORT is not set"):
        kubeconfig.in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, folder)
    (folder / "token").unlink()
    with pytest.raises(InputError, match=r"service account's .*token cannot be read"):
        kubeconfig.in_cluster(v6, folder)


# -- kubeconfig: what cannot be used is one clear InputError -------------------------------------------------------

@pytest.mark.parametrize(("user", "message"), [
    ({"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1beta1"}},
     r"credentials from an exec plugin \(aws\) are not supported; use a kubeconfig with a token"),
    ({"auth-provider": {"name": "oidc"}}, r"credentials from an auth-provider \(oidc\) are not supported"),
    ({"client-certificate-data": b64(b"x")}, "needs both `client-certificate` and `client-key`"),
    ({"token": "t", "username": "u"}, "a token or a username and password, not both"),
    ({"client-key-data": "not base64!"}, "`client-key-data` is not base64"),
    ({"tokenFile": "missing"}, "`tokenFile` .*missing: cannot read"),
])
def test_unusable_users(tmp_path: Path, user: dict[str, Any], message: str) -> None:
    path = write_kubeconfig(tmp_path / "config", {"server": "https://127.0.0.1:1"}, user)
    with pytest.raises(InputError, match=message):
        kubeconfig.from_kubeconfig([path])


def test_unusable_files(tmp_path: Path) -> None:
    no_context = write_kubeconfig(tmp_path / "a", {"server": "https://x"}, {}, current=None)
    with pytest.raises(InputError, match="no current-context; choose one with `kubectl config use-context`"):
        kubeconfig.from_kubeconfig([no_context])
    other = write_kubeconfig(tmp_path / "b", {"server": "https://x"}, {}, current="nope")
    with pytest.raises(InputError, match="context 'nope' not found"):
        kubeconfig.from_kubeconfig([other])
    (tmp_path / "c").write_text("{not: [yaml")
    with pytest.raises(InputError, match=r"c: not valid YAML or JSON"):
        kubeconfig.from_kubeconfig([tmp_path / "c"])
    with pytest.raises(InputError, match="cannot read"):
        kubeconfig.from_kubeconfig([tmp_path / "missing"])
    (tmp_path / "d").write_text("clusters: 3\n")
    with pytest.raises(InputError, match="`clusters` is not a list"):
        kubeconfig.from_kubeconfig([tmp_path / "d"])
    ftp = write_kubeconfig(tmp_path / "e", {"server": "ftp://x"}, {})
    with pytest.raises(InputError, match="`server` is not an https://"):
        kubeconfig.from_kubeconfig([ftp])
    proxied = write_kubeconfig(tmp_path / "f", {"server": "https://x", "proxy-url": "http://proxy:3128"}, {})
    with pytest.raises(InputError, match="`proxy-url` is not supported"):
        kubeconfig.from_kubeconfig([proxied])


def test_kubeconfig_list_is_merged_like_kubectl(tmp_path: Path) -> None:
    """$KUBECONFIG's files: the first that sets the current context or names an entry wins; files that do not
    exist are skipped; each file's relative paths are its own folder's."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "ca.crt").write_bytes(b"CA")
    first = tmp_path / "one" / "config"
    first.write_text(yaml.safe_dump({"current-context": "c", "users": [{"name": "u", "user": {"token": "t1"}}],
                                     "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    second = write_kubeconfig(tmp_path / "two" / "config", {"server": "https://two", "certificate-authority": "ca.crt"},
                              {"token": "t2"}, current="other")
    files = kubeconfig.default_files({"KUBECONFIG": f"{first}:{tmp_path / 'absent'}:{second}"})
    assert files == [first, second]
    config = kubeconfig.from_kubeconfig(files)
    assert (config.server, config.token, config.ca_pem) == ("https://two", "t1", b"CA")
    with pytest.raises(InputError, match=r"no kubeconfig: ~/.kube/config does not exist"):
        kubeconfig.default_files({"HOME": str(tmp_path)})


# -- watch streams, errors, pages ---------------------------------------------------------------------------------

def rc_event(kind: str, name: str, version: str) -> dict[str, Any]:
    obj = raycluster(name=name, uid=f"uid-{name}")
    obj["metadata"]["resourceVersion"] = version
    return {"type": kind, "object": obj}


def bookmark(version: str) -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"kind": "RayCluster", "apiVersion": "ray.io/v1",
                                            "metadata": {"resourceVersion": version}}}


GONE = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                                    "reason": "Expired", "message": "too old resource version: 5 (20)"}}


def test_watch_events_are_lines_in_any_chunks() -> None:
    lines = b"".join(json.dumps(e).encode() + b"\n" for e in [rc_event("ADDED", "a", "6"), bookmark("9")])
    chunks = [lines[i:i + 7] for i in range(0, len(lines), 7)]  # cut anywhere, mid-line too
    assert [e["type"] for e in watch_events(chunks)] == ["ADDED", "BOOKMARK"]
    with pytest.raises(ApiError) as gone:
        list(watch_events([json.dumps(GONE).encode() + b"\n"]))
    assert (gone.value.status, gone.value.reason) == (410, "Expired")


def test_the_watch_follows_bookmarks_and_relists_on_410(apiserver: FakeApiserver,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Over HTTPS, as the apiserver streams it: the first list, a watch whose last event is a BOOKMARK (the next
    watch starts from its version, not the last object's), then an ERROR 410 in the stream: relisted at once."""
    from webhook.admission import watch

    monkeypatch.setattr(watch, "_WATCH_SECONDS", 1)
    lists: list[str] = []

    def list_(seen: Seen) -> Answer:
        lists.append(seen.query["limit"])
        return 200, {"kind": "RayClusterList", "metadata": {"resourceVersion": str(5 * len(lists))},
                     "items": [raycluster(name="first", uid="uid-first")]}

    streams = iter([[rc_event("ADDED", "a", "6"), bookmark("20")], [GONE]])

    def watch_(seen: Seen) -> Answer:
        return (200, next(streams, []))

    path = "/apis/ray.io/v1/rayclusters"
    apiserver.routes[("GET", path)] = lambda seen: watch_(seen) if seen.query.get("watch") else list_(seen)
    config = ClusterConfig(server=apiserver.url, ca_pem=apiserver.ca.cert_pem, token="t")
    cache = WatchCache(Client(config))
    cache.start()

    def watches() -> list[dict[str, str]]:
        return [s.query for s in list(apiserver.seen) if s.query.get("watch")]

    try:
        wait_until("a relist after the 410, then a watch", lambda: len(lists) >= 2 and len(watches()) >= 3, 10)
    finally:
        cache.stop()
    # From the first list's version; then the BOOKMARK's (not the ADDED object's 6); then the relist's.
    assert [w["resourceVersion"] for w in watches()[:3]] == ["5", "20", "10"]
    assert all(w["allowWatchBookmarks"] == "true" and w["timeoutSeconds"] == "1" for w in watches())
    assert lists[:2] == [str(watch.LIST_PAGE)] * 2 and cache.ready()


def test_pages_follow_continue_tokens_with_the_query(apiserver: FakeApiserver) -> None:
    def page(seen: Seen) -> Answer:
        assert len(apiserver.seen) <= 3, "the continue token is not followed"  # a failed handler: a lost connection
        start = int(seen.query.get("continue") or 0)
        more = {"continue": str(start + 2)} if start + 2 < 5 else {}
        return 200, {"metadata": {"resourceVersion": "7", **more},
                     "items": [{"n": i} for i in range(start, min(start + 2, 5))]}

    apiserver.routes[("GET", "/api/v1/pods")] = page
    client = Client(ClusterConfig(server=apiserver.url, ca_pem=apiserver.ca.cert_pem))
    pages = list(client.list_pages("/api/v1/pods", 2, {"labelSelector": "ray.io/node-type=head,ray.io/cluster"}))
    assert [[i["n"] for i in p["items"]] for p in pages] == [[0, 1], [2, 3], [4]]
    assert [s.query.get("continue") for s in apiserver.seen] == [None, "2", "4"]
    assert {s.query["labelSelector"] for s in apiserver.seen} == {"ray.io/node-type=head,ray.io/cluster"}


def test_writes_send_json_and_a_merge_patch(apiserver: FakeApiserver) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        apiserver.routes[(method, "/apis/x/v1/things")] = lambda seen: (200, {"echo": seen.body})
    client = Client(ClusterConfig(server=apiserver.url, ca_pem=apiserver.ca.cert_pem))
    assert client.create("/apis/x/v1/things", {"a": 1}) == {"echo": {"a": 1}}
    assert client.replace("/apis/x/v1/things", {"b": 2}) == {"echo": {"b": 2}}
    assert client.patch("/apis/x/v1/things", {"c": 3}) == {"echo": {"c": 3}}
    assert client.delete("/apis/x/v1/things") == {"echo": None}


def test_failures_are_one_error_type_and_described(apiserver: FakeApiserver) -> None:
    """HTTP statuses are ApiError; transport failures urllib3's own; `_describe` names each (never the body)."""
    apiserver.routes[("GET", "/forbidden")] = lambda seen: (403, {"kind": "Status", "message": "SECRET-BODY"})
    apiserver.routes[("GET", "/gone")] = lambda seen: (410, {"kind": "Status"})
    apiserver.routes[("GET", "/slow")] = lambda seen: (time.sleep(3), (200, {}))[1]
    client = Client(ClusterConfig(server=apiserver.url, ca_pem=apiserver.ca.cert_pem))

    def reason(path: str, timeout: float = 5.0, on: Client = client) -> str:
        with pytest.raises(Exception) as failed:
            on.get(path, timeout=timeout)
        assert "SECRET-BODY" not in str(failed.value)
        return _describe(failed.value, timeout)

    assert reason("/forbidden") == "forbidden (HTTP 403): check the webhook's RBAC for rayclusters.ray.io"
    assert reason("/missing") == "not found"
    assert reason("/gone") == "resource version too old (HTTP 410)"
    assert reason("/slow", timeout=0.5) == "timed out after 0.5s"
    nobody = Client(ClusterConfig(server=f"https://127.0.0.1:{free_port()}", insecure=True))
    assert reason("/api", on=nobody) == "cannot connect to the Kubernetes API"


def test_a_connection_lost_mid_answer_is_described(tmp_path: Path) -> None:
    """The apiserver goes away in the middle of a response (a restart): a ProtocolError, `connection ... lost`."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")
        conn.close()

    threading.Thread(target=serve_once, daemon=True).start()
    client = Client(ClusterConfig(server=f"http://127.0.0.1:{port}"))
    with pytest.raises(Exception) as lost:
        client.get("/api", timeout=5)
    assert _describe(lost.value) == "connection to the Kubernetes API lost"
    listener.close()


# -- the saving this client exists for -----------------------------------------------------------------------------

def test_serve_never_imports_the_kubernetes_package(tmp_path: Path) -> None:
    """`import kubernetes.client` costs a serve process ~45 MB of RSS. Every product module is imported and serve's
    API-side objects are built (the lookup with its watch threads, the Event recorder, the certificate sync, check's
    and certs' commands): the package must not be loaded by any of it."""
    config = write_kubeconfig(tmp_path / "config", {"server": f"https://127.0.0.1:{free_port()}",
                                                    "insecure-skip-tls-verify": True}, {"token": "t"})
    script = textwrap.dedent(f"""
        import pkgutil, sys
        import webhook
        for module in pkgutil.walk_packages(webhook.__path__, "webhook."):
            if module.name != "webhook.__main__":  # that one runs the command line
                __import__(module.name)
        from webhook.admission.metrics import Metrics
        from webhook.admission.recorder import EventRecorder
        from webhook.certs.sync import CertSync, CertTarget
        from webhook.cli import serve
        from webhook.cli.options import build_parser, resolve_env, serve_options
        from webhook.common import kube
        parser = build_parser()
        args = parser.parse_args(["serve", "--kubeconfig", {str(config)!r}])
        resolve_env(parser, args)
        opts = serve_options(args, None)
        api = kube.api_client(opts.kubeconfig)
        lookup = serve.build_lookup(opts, Metrics(), api)
        EventRecorder(api, Metrics(), "x")
        CertSync(api, CertTarget("ns", "s", "w", "svc"), files=None)
        lookup.stop()
        loaded = sorted(m for m in sys.modules if m == "kubernetes" or m.startswith("kubernetes."))
        print(type(lookup).__name__, loaded)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ApiLookup []", out.stdout
