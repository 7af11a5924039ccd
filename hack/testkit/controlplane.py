"""A throwaway Kubernetes control plane (etcd + kube-apiserver, optionally kube-controller-manager).

The end-to-end tests need a real kube-apiserver calling the webhook, not a fake: admission ordering,
patch application, `caBundle` trust and RBAC are exactly what they check. There are no containers
here, so the binaries built by `hack/testbin.sh` run as plain processes on 127.0.0.1, with OS-picked
free ports and everything (data, certificates, kubeconfigs, logs) in one temporary folder.

Every process runs in its own session and is stopped by PID: SIGTERM, then SIGKILL after a grace period.

Manual use, from the repository root:

    PYTHONPATH=hack .venv/bin/python -m testkit.controlplane          # prints the admin kubeconfig, Ctrl-C stops
    PYTHONPATH=hack .venv/bin/python -m testkit.controlplane --smoke  # start, create a namespace and a CRD, stop
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from testkit import kube, processes
from testkit.paths import TESTBIN_SCRIPT
from testkit.webhook import WEBHOOK_NAMESPACE, free_ports, manifest
from webhook.certs.generate import KeyPair, generate_ca, generate_leaf

ADMIN_USER = "admin"
ADMIN_GROUPS = ("system:masters",)
# The identity the webhook runs as in the e2e tests: a ServiceAccount name, but presented as a client cert.
WEBHOOK_USER = "system:serviceaccount:ray-ft-webhook:ray-ft-webhook"

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# kube-controller-manager's controllers that only make sense with a cloud provider or a pod network.
_KCM_DISABLED_CONTROLLERS = (
    "cloud-node-lifecycle-controller",
    "node-route-controller",
    "service-lb-controller",
    "node-ipam-controller",
)
_LOCAL_NO_PROXY = "127.0.0.1,localhost"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached; the message carries the log tails."""


def testbin_dir(binaries: Sequence[str] = ("kube-apiserver", "etcd")) -> Path:
    """The folder with the control-plane binaries: `$RAY_FT_WEBHOOK_TESTBIN`, else `hack/testbin.sh`'s.

    The script is a fast no-op when the binaries are cached; otherwise it builds them (minutes, progress on
    stderr), so the first run of the e2e tests on a fresh machine is slow rather than failing.
    """
    override = os.environ.get("RAY_FT_WEBHOOK_TESTBIN")
    if override:
        return Path(override)
    try:
        return Path(processes.run_script(TESTBIN_SCRIPT, binaries).strip())
    except processes.CommandFailed as exc:
        raise ControlPlaneError(str(exc)) from None


def _write_private(path: Path, data: bytes) -> Path:
    """Write a secret (key or kubeconfig with an embedded key) readable by the owner only."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _subprocess_env() -> dict[str, str]:
    """The parent's environment, with loopback excluded from any proxy (etcd, webhook and API traffic)."""
    env = dict(os.environ)
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = ",".join(filter(None, [env.get(key, ""), _LOCAL_NO_PROXY]))
    return env


class ControlPlane:
    """etcd and kube-apiserver (and optionally kube-controller-manager) in a temporary folder.

    Usage: `with ControlPlane() as cp: ...` or `start()`/`stop()`. After start, `url`, `ca_pem` (the
    serving CA to trust) and `admin_kubeconfig` (user `admin` in `system:masters`) are set; any other
    identity comes from `write_kubeconfig` or `client_cert`, signed by the `--client-ca-file` CA.
    """

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        with_controller_manager: bool = False,
        ready_timeout: float = 90.0,
        stop_timeout: float = 10.0,
        base_dir: Path | None = None,
        keep_dir: bool = False,
    ) -> None:
        self._bin_dir = bin_dir
        self.with_controller_manager = with_controller_manager
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._base_dir = base_dir
        self.keep_dir = keep_dir

        self.workdir: Path | None = None
        self.url = ""
        self.etcd_url = ""
        self.apiserver_port = 0
        self.controller_manager_port = 0
        self.ca_pem = b""
        self.admin_kubeconfig = Path()
        self.startup_seconds = 0.0
        self._resolved_bin_dir: Path | None = None
        self._serving_ca: KeyPair | None = None
        self._client_ca: KeyPair | None = None
        # Processes in start order; kept after stop() so logs() still works.
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd, then kube-apiserver (and kube-controller-manager); return once all are healthy.

        On any failure everything already started is stopped, and the error carries the log tails.
        """
        if any(proc.poll() is None for proc in self._procs.values()):
            raise ControlPlaneError("already started")
        self._procs.clear()
        binaries = ["kube-apiserver", "etcd"]
        if self.with_controller_manager:
            binaries.append("kube-controller-manager")
        bin_dir = self._resolved_bin_dir = self._bin_dir or testbin_dir(binaries)
        for name in binaries:
            if not os.access(bin_dir / name, os.X_OK):
                raise ControlPlaneError(f"{bin_dir / name} is missing; run {TESTBIN_SCRIPT}")

        self.workdir = Path(tempfile.mkdtemp(prefix="ray-ft-controlplane-", dir=self._base_dir))
        began = time.monotonic()
        try:
            self._write_credentials()
            self._start_etcd(bin_dir)
            self._start_apiserver(bin_dir)
            if self.with_controller_manager:
                self._start_controller_manager(bin_dir)
        except BaseException as exc:
            logs = self.logs(tail_lines=40)
            self.stop()
            if isinstance(exc, ControlPlaneError):
                raise ControlPlaneError(f"{exc}\n{logs}") from exc
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop every started process by PID, newest first: SIGTERM, then SIGKILL after `stop_timeout`."""
        for proc in reversed(list(self._procs.values())):
            processes.stop_process(proc, self.stop_timeout)
        if self.workdir is not None and not self.keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_apiserver(self, kill: bool = False) -> int | None:
        """Stop kube-apiserver alone by PID (SIGTERM, or SIGKILL with `kill`); etcd keeps the data. Returns its
        exit code. `start_apiserver` brings it back on the same port."""
        proc = self._procs["kube-apiserver"]
        if kill and proc.poll() is None:
            proc.kill()
        return processes.stop_process(proc, self.stop_timeout)

    def start_apiserver(self) -> float:
        """Start kube-apiserver again on its port with the same flags, etcd and credentials (after
        `stop_apiserver`); returns the seconds until its /readyz answered 200."""
        if self._procs["kube-apiserver"].poll() is None:
            raise ControlPlaneError("kube-apiserver is still running")
        assert self._resolved_bin_dir is not None
        began = time.monotonic()
        try:
            self._start_apiserver(self._resolved_bin_dir, port=self.apiserver_port)
        except ControlPlaneError as exc:
            raise ControlPlaneError(f"{exc}\n{self.logs(tail_lines=40)}") from exc
        return time.monotonic() - began

    # -- identities --------------------------------------------------------------------------------

    def client_cert(self, user: str, groups: Sequence[str] = ()) -> KeyPair:
        """A client certificate for `user` in `groups` (CN and O, as the apiserver reads them)."""
        if self._client_ca is None:
            raise ControlPlaneError("not started")
        return generate_leaf(self._client_ca, [], [], days=1, client=True, common_name=user, organizations=list(groups))

    def kubeconfig(self, user: str, groups: Sequence[str] = ()) -> dict[str, Any]:
        """A kubeconfig (as a dict) for `user` in `groups`, certificates embedded."""
        cert = self.client_cert(user, groups)
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {"server": self.url, "certificate-authority-data": _b64(self.ca_pem)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(cert.cert_pem),
                        "client-key-data": _b64(cert.key_pem),
                    },
                }
            ],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
            "current-context": "e2e",
        }

    def write_kubeconfig(self, path: Path, user: str, groups: Sequence[str] = ()) -> Path:
        """Write a kubeconfig for `user` in `groups` to `path` (mode 0600; JSON, which is valid YAML)."""
        return _write_private(Path(path), json.dumps(self.kubeconfig(user, groups), indent=2).encode())

    # -- diagnostics -------------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        """PIDs of the running processes, by binary name."""
        return {name: proc.pid for name, proc in self._procs.items() if proc.poll() is None}

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running process, by binary name."""
        return {name: processes.status_kib(proc.pid, "VmRSS") * 1024 for name, proc in self._procs.items()
                if proc.poll() is None}

    def logs(self, tail_lines: int | None = 200) -> str:
        """The processes' logs (the last `tail_lines` of each), for printing when a test fails.

        Read them before stop(), which removes the folder unless `keep_dir` is set.
        """
        if self.workdir is None:
            return ""
        parts = []
        for name in self._procs:
            path = self.workdir / f"{name}.log"
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            if tail_lines is not None:
                lines = lines[-tail_lines:]
            proc = self._procs.get(name)
            state = "not started" if proc is None else "running" if proc.poll() is None else f"exited {proc.returncode}"
            parts.append(f"===== {name} ({state}), {path} =====\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- internals ---------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        assert self.workdir is not None
        return self.workdir / name

    def _write_credentials(self) -> None:
        """Serving CA + cert (SANs 127.0.0.1/localhost), client CA, service-account key, admin kubeconfig."""
        self._serving_ca = generate_ca("ray-ft-e2e-serving-ca", days=2)
        self._client_ca = generate_ca("ray-ft-e2e-client-ca", days=2)
        self.ca_pem = self._serving_ca.cert_pem
        serving = generate_leaf(
            self._serving_ca, ["localhost", "kubernetes", "kubernetes.default.svc"], ["127.0.0.1"], days=1
        )
        self._path("serving-ca.crt").write_bytes(self._serving_ca.cert_pem)
        self._path("apiserver.crt").write_bytes(serving.cert_pem)
        _write_private(self._path("apiserver.key"), serving.key_pem)
        self._path("client-ca.crt").write_bytes(self._client_ca.cert_pem)
        _write_private(self._path("client-ca.key"), self._client_ca.key_pem)

        sa_key = ec.generate_private_key(ec.SECP256R1())
        _write_private(
            self._path("sa.key"),
            sa_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        self._path("sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        # The readiness probes authenticate as admin too, so a broken client CA shows up at start.
        admin = self.client_cert(ADMIN_USER, ADMIN_GROUPS)
        self._path("admin.crt").write_bytes(admin.cert_pem)
        _write_private(self._path("admin.key"), admin.key_pem)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        proc = processes.start(args, log=self._path(f"{name}.log"), env=_subprocess_env(), cwd=self.workdir)
        self._procs[name] = proc
        return proc

    def _wait_healthy(self, name: str, port: int, path: str, context: ssl.SSLContext | None, deadline: float) -> None:
        """Poll GET `path` on 127.0.0.1:`port` until 200; fail early if the process exits."""
        proc = self._procs[name]
        last = "no answer yet"
        while True:
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with code {proc.returncode} before becoming healthy")
            conn: http.client.HTTPConnection = (
                http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
                if context is not None
                else http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            )
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}: {body[-500:]}"
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{name} not healthy at {path} after {self.ready_timeout:.0f} s: {last}")
            time.sleep(0.25)

    def _admin_tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))
        context.load_cert_chain(self._path("admin.crt"), self._path("admin.key"))
        return context

    def _start_etcd(self, bin_dir: Path) -> None:
        client_port, peer_port = free_ports(2)
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=e2e",
                f"--data-dir={self._path('etcd-data')}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=e2e={peer_url}",
                "--initial-cluster-state=new",
                # Throwaway data: skipping fsync makes every write (and so every API call) much faster.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait_healthy("etcd", client_port, "/health", None, time.monotonic() + self.ready_timeout)

    def _start_apiserver(self, bin_dir: Path, port: int | None = None) -> None:
        if port is None:
            (self.apiserver_port,) = free_ports(1)
            self.url = f"https://127.0.0.1:{self.apiserver_port}"
            self.admin_kubeconfig = self.write_kubeconfig(self._path("admin.kubeconfig"), ADMIN_USER, ADMIN_GROUPS)
        self._spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={self._path('apiserver-certs')}",
                f"--tls-cert-file={self._path('apiserver.crt')}",
                f"--tls-private-key-file={self._path('apiserver.key')}",
                f"--client-ca-file={self._path('client-ca.crt')}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={self._path('sa.pub')}",
                f"--service-account-signing-key-file={self._path('sa.key')}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # Nothing creates a namespace's `default` ServiceAccount without the controller manager.
                "--disable-admission-plugins=ServiceAccount",
                # On by default; named so nobody drops them: the webhook under test is called through them.
                "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                # No Endpoints for the `kubernetes` Service: newer versions reject a loopback address there.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        self._wait_healthy(
            "kube-apiserver",
            self.apiserver_port,
            "/readyz",
            self._admin_tls_context(),
            time.monotonic() + self.ready_timeout,
        )

    def _start_controller_manager(self, bin_dir: Path) -> None:
        (self.controller_manager_port,) = free_ports(1)
        # With --use-service-account-credentials=false every controller runs as this one identity, so it
        # needs the powers of all of them.
        kubeconfig = self.write_kubeconfig(
            self._path("controller-manager.kubeconfig"), "system:kube-controller-manager", ["system:masters"]
        )
        controllers = ",".join(["*", *(f"-{c}" for c in _KCM_DISABLED_CONTROLLERS)])
        self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                # The apiserver has no front-proxy (requestheader) CA to look up; without this every
                # request logs "missing content for CA bundle".
                "--authentication-skip-lookup=true",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.controller_manager_port}",
                f"--cert-dir={self._path('controller-manager-certs')}",
                "--leader-elect=false",
                f"--controllers={controllers}",
                "--use-service-account-credentials=false",
                # Token controller: signs legacy SA token Secrets and publishes ca.crt into each namespace.
                f"--root-ca-file={self._path('serving-ca.crt')}",
                f"--service-account-private-key-file={self._path('sa.key')}",
                # CSR signer: lets tests obtain client certificates through the certificates API.
                f"--cluster-signing-cert-file={self._path('client-ca.crt')}",
                f"--cluster-signing-key-file={self._path('client-ca.key')}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            ],
        )
        # Its serving certificate is self-signed in --cert-dir; /healthz is readable without credentials.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self._wait_healthy(
            "kube-controller-manager",
            self.controller_manager_port,
            "/healthz",
            insecure,
            time.monotonic() + self.ready_timeout,
        )


def install_webhook_identity(cp: ControlPlane, api: client.ApiClient, dyn: DynamicClient, path: Path) -> Path:
    """The webhook's namespace and RBAC from manifests/base, and a kubeconfig for its identity."""
    kube.ensure_namespace(api, WEBHOOK_NAMESPACE)
    for obj in manifest("base/rbac.yaml"):
        kube.apply(dyn, obj)
    return cp.write_kubeconfig(path, WEBHOOK_USER)


# -- manual use ----------------------------------------------------------------------------------------

RAYCLUSTER_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "rayclusters.ray.io"},
    "spec": {
        "group": "ray.io",
        "names": {
            "kind": "RayCluster",
            "listKind": "RayClusterList",
            "plural": "rayclusters",
            "singular": "raycluster",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                "subresources": {"status": {}},
            }
        ],
    },
}


def smoke_test(cp: ControlPlane, timeout: float = 30.0) -> dict[str, float]:
    """Create a namespace and the minimal RayCluster CRD and wait until it is Established.

    Returns the seconds each step took. Uses the `kubernetes` client, as the tests will.
    """
    api = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))  # type: ignore[no-untyped-call]
    timings: dict[str, float] = {}
    began = time.monotonic()
    name = f"smoke-{os.getpid()}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    timings["namespace"] = time.monotonic() - began

    began = time.monotonic()
    client.ApiextensionsV1Api(api).create_custom_resource_definition(cast(Any, RAYCLUSTER_CRD))  # dicts as they are
    kube.wait_established(api, ["rayclusters.ray.io"], timeout)
    timings["crd_established"] = time.monotonic() - began

    # The CRD is served: an empty list in the new namespace proves discovery and storage work.
    custom = client.CustomObjectsApi(api)
    items = cast(dict[str, Any], custom.list_namespaced_custom_object("ray.io", "v1", name, "rayclusters"))
    if items["items"] != []:
        raise ControlPlaneError(f"expected no RayClusters in a new namespace, got {items}")
    return timings


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testkit.controlplane",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--controller-manager", action="store_true", help="also run kube-controller-manager")
    parser.add_argument("--smoke", action="store_true", help="run the smoke test and stop instead of waiting")
    parser.add_argument("--bin-dir", type=Path, help="folder with the binaries (default: hack/testbin.sh's)")
    args = parser.parse_args(argv)

    cp = ControlPlane(args.bin_dir, with_controller_manager=args.controller_manager)
    # Ctrl-C and SIGTERM both end in stop(), so nothing is left running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cp.start()
    except ControlPlaneError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        rss = ", ".join(f"{n} {b / 2**20:.0f} MiB" for n, b in cp.rss_bytes().items())
        print(f"started in {cp.startup_seconds:.1f} s at {cp.url}; RSS: {rss}", file=sys.stderr)
        if args.smoke:
            timings = smoke_test(cp)
            steps = ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
            print(f"smoke test passed: {steps}", file=sys.stderr)
            rss = ", ".join(f"{n} {b / 2**20:.0f} MiB" for n, b in cp.rss_bytes().items())
            print(f"RSS after the smoke test: {rss}", file=sys.stderr)
            return 0
        print(f"export KUBECONFIG={cp.admin_kubeconfig}", file=sys.stderr)
        print(cp.admin_kubeconfig)
        sys.stdout.flush()
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    except BaseException:
        print(cp.logs(tail_lines=40), file=sys.stderr)
        raise
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
