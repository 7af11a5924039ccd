"""The container image, built from ./Dockerfile with podman and run the way manifests/base/deployment.yaml runs
it: uid 65532, read-only root filesystem, no capabilities, no new privileges, certificates and RayClusters
mounted read-only. It must lint clean, serve TLS, answer an admission exactly as the code does, and exit 0
on SIGTERM.

The tier is skipped on a machine where podman cannot be installed, but never in CI: there a missing tool or a
failed build fails the run, or a green CI would prove nothing about the image.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from testkit import processes
from testkit.webhook import free_port, make_certs
from webhook.cli.render import render
from webhook.common.manifests import load_one
from webhook.core.settings import Settings

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"
INSTALL_HINT = "bash hack/install-podman.sh"
EXAMPLES = ROOT / "examples"
UID = 65532
TLS_DIR = "/etc/ray-ft-webhook/tls"
RAYCLUSTERS_DIR = "/etc/ray-ft-webhook/rayclusters"
READY_TIMEOUT_S = 60
GRACE_S = 20


@dataclass(frozen=True)
class Podman:
    """podman with our containers.conf (runc, cgroupfs, settable ulimits), and the image under test."""

    image: str
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=check)


@dataclass(frozen=True)
class Container:
    """One detached webhook container on 127.0.0.1:`port` (host network), known by its ID only."""

    podman: Podman
    id: str
    port: int
    ca: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"https://127.0.0.1:{self.port}", verify=self.context(), trust_env=False,
                            timeout=10)

    def inspect(self, field: str) -> str:
        return self.podman("inspect", "--format", f"{{{{{field}}}}}", self.id).stdout.strip()

    def logs(self) -> str:
        done = self.podman("logs", "--tail", "60", self.id, check=False)
        return (done.stdout + done.stderr)[-6000:]

    def remove(self) -> None:
        self.podman("rm", "--force", "--time", "0", self.id, check=False)


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the image tier must run; `{INSTALL_HINT}` sets it up)", pytrace=False)
    pytest.skip(f"{reason}; enable with: {INSTALL_HINT}")


@pytest.fixture(scope="module")
def podman() -> Podman:
    """Install podman (a no-op when present) and build the image; the build's progress goes to stderr."""
    try:
        install = subprocess.run(["bash", str(ROOT / "hack" / "install-podman.sh"), sys.prefix],
                                 capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail("hack/install-podman.sh did not finish in 900 s", pytrace=False)
    sys.stderr.write(install.stderr)
    if install.returncode != 0:
        last = (install.stderr.strip().splitlines() or ["no output"])[-1]
        if shutil.which("podman") is None:
            _unavailable(f"podman is not installed and hack/install-podman.sh failed: {last}")
        pytest.fail(f"hack/install-podman.sh failed (exit {install.returncode}): {last}", pytrace=False)
    env = {**os.environ, "CONTAINERS_CONF": install.stdout.strip().splitlines()[-1]}
    try:
        # stderr is not captured here: the build's progress shows live with -s, and in the report on failure.
        build = subprocess.run(["bash", str(ROOT / "hack" / "image.sh")], env=env, stdout=subprocess.PIPE,
                               text=True, timeout=1500)
    except subprocess.TimeoutExpired:
        pytest.fail("hack/image.sh did not finish in 1500 s", pytrace=False)
    if build.returncode != 0:
        pytest.fail(f"hack/image.sh failed (exit {build.returncode}); its output is in the captured stderr",
                    pytrace=False)
    return Podman(image=build.stdout.strip().splitlines()[-1], env=env)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates for 127.0.0.1 from the project's code, readable by uid 65532.

    make_certs writes tls.key 0600 for root, which the container's uid 65532 cannot read. This private copy is
    made world-readable (0644 files, 0755 folder), which is what a Kubernetes Secret volume gives by default
    (defaultMode 0644): simpler than chown to 65532, and the same for every base and engine.
    """
    folder = tmp_path_factory.mktemp("image-tls")
    make_certs(folder)
    folder.chmod(0o755)
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (folder / name).chmod(0o644)
    return folder


def start(podman: Podman, tls_dir: Path) -> Container:
    """Run the image as the Deployment does, serving the example RayClusters, and wait for /readyz.

    The image's own CMD (`serve`) runs: the certificate comes from the image's default paths, and the port,
    address and RayCluster folder from RAY_FT_WEBHOOK_* variables, which the image's defaults must not hide.
    """
    port = free_port()
    run = podman(
        "run", "--detach", "--pull=never", "--network=host",
        "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges",
        "--volume", f"{tls_dir}:{TLS_DIR}:ro",
        "--volume", f"{EXAMPLES / 'rayclusters'}:{RAYCLUSTERS_DIR}:ro",
        "--env", "RAY_FT_WEBHOOK_HOST=127.0.0.1", "--env", f"RAY_FT_WEBHOOK_PORT={port}",
        "--env", f"RAY_FT_WEBHOOK_RAYCLUSTERS_FROM={RAYCLUSTERS_DIR}",
        podman.image,
        check=False,
    )
    if run.returncode != 0:
        pytest.fail(f"podman run failed (exit {run.returncode}): {run.stderr.strip()}", pytrace=False)
    container = Container(podman, run.stdout.strip(), port, tls_dir / "ca.crt")
    with container.client() as client:
        def ready() -> bool:
            if container.inspect(".State.Running") != "true":
                raise processes.WaitTimeout("the container stopped")
            return client.get("/readyz").status_code == 200

        try:
            processes.wait_until("the container's /readyz", ready, READY_TIMEOUT_S, interval=0.25,
                                 ignore=(httpx.TransportError,))
            return container
        except processes.WaitTimeout as exc:
            failure = str(exc)
    logs = container.logs()
    container.remove()
    pytest.fail(f"{failure}:\n{logs}", pytrace=False)


@pytest.fixture(scope="module")
def webhook(podman: Podman, tls_dir: Path) -> Iterator[Container]:
    container = start(podman, tls_dir)
    yield container
    container.remove()


def test_dockerfile_passes_hadolint(podman: Podman) -> None:
    hadolint = Path(sys.prefix) / "bin" / "hadolint"
    done = subprocess.run([str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_runs_as_non_root_without_privileges(podman: Podman, webhook: Container) -> None:
    """Checked on the running webhook process itself (rootful podman: container uids are host uids)."""
    assert podman("image", "inspect", "--format", "{{.Config.User}}", podman.image).stdout.strip() == f"{UID}:{UID}"
    pid = webhook.inspect(".State.Pid")
    status = processes.status(int(pid))
    assert status["Uid"].split() == [str(UID)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(UID)] * 4, status["Gid"]
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    root = [line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            if line.split()[4] == "/"]
    assert root and "ro" in root[-1][5].split(","), root


def test_healthz_over_tls(webhook: Container) -> None:
    with webhook.client() as client:
        answer = client.get("/healthz")
    assert answer.status_code == 200, answer.text


def test_mutates_the_sample_head_pod_as_the_code_does(webhook: Container) -> None:
    review = json.loads((EXAMPLES / "admissionreview-head.json").read_text())
    cluster = load_one(EXAMPLES / "rayclusters" / "raycluster-external-redis.yaml", "RayCluster")
    expected = render(cluster, review["request"]["object"], Settings())
    assert expected.patch, "the sample must need a patch, or this test proves nothing"

    with webhook.client() as client:
        answer = client.post("/mutate", json=review)
    assert answer.status_code == 200, answer.text
    response = answer.json()["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == json.loads(json.dumps(expected.patch))


def test_sigterm_exits_0_with_an_idle_keepalive_connection(podman: Podman, tls_dir: Path) -> None:
    """`podman stop` sends SIGTERM (SIGKILL after the grace period, exit 137): exit 0 means a clean shutdown."""
    container = start(podman, tls_dir)
    conn = http.client.HTTPSConnection("127.0.0.1", container.port, context=container.context(), timeout=10)
    try:
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200 and answer.getheader("connection", "").lower() != "close"
        assert conn.sock is not None  # open and idle, as the apiserver keeps its connections

        # Bounded by podman itself: SIGKILL after GRACE_S. Exit code 0 is the guarantee (the server exited on
        # SIGTERM with the idle connection open, before the SIGKILL); how long it took is not asserted.
        started = time.monotonic()
        stop = podman("stop", "--time", str(GRACE_S), container.id, timeout=GRACE_S + 30, check=False)
        took = time.monotonic() - started
        assert stop.returncode == 0, stop.stderr
        code = container.inspect(".State.ExitCode")
        assert code == "0", (f"exit code {code} {took:.1f} s after SIGTERM (137: still running when podman sent "
                             f"SIGKILL after the {GRACE_S} s grace period):\n{container.logs()}")

        # And the idle connection did not outlive the server: EOF (or a reset), not a read timeout.
        conn.sock.settimeout(5)
        with contextlib.suppress(ConnectionError, ssl.SSLEOFError):
            assert conn.sock.recv(1) == b""
    finally:
        conn.close()
        container.remove()
