"""The wheel, not the source tree: `pip install` of the built wheel into a fresh venv, with the lowest uvicorn
pyproject.toml allows, has every subpackage and runs `render`, `certs generate` and `serve` on the examples.

The editable install the other tests use would hide a subpackage missing from the wheel (it reads the source
tree). The floor matters because `serve`'s connection guard subclasses uvicorn's httptools protocol.
Needs the package registry (pip's cache makes it quick after the first run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _uvicorn_floor() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.startswith("uvicorn"))
    match = re.fullmatch(r"uvicorn(\[[a-z,]+\])?>=([0-9.]+)", spec)
    assert match, f"expected uvicorn[...]>=X in pyproject.toml, got {spec!r}"
    return match.group(2)


def _run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the fresh venv's bin folder, the wheel) with the wheel and uvicorn at its floor installed."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"  # a copy, so the build leaves no build/ or egg-info in the work tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "webhook", source / "webhook", ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", work / "dist", source)
    wheel = next((work / "dist").glob("ray_ft_webhook-*.whl"))
    _run(sys.executable, "-m", "venv", work / "venv")
    bin_dir = work / "venv" / "bin"
    _run(bin_dir / "pip", "install", "--quiet", wheel, f"uvicorn[standard]=={_uvicorn_floor()}")
    return bin_dir, wheel


def test_wheel_holds_every_subpackage(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("webhook/") and n.endswith(".py")}
    in_tree = {p.relative_to(REPO).as_posix() for p in (REPO / "webhook").rglob("*.py")}
    assert in_wheel == in_tree


def test_uvicorn_is_at_the_floor(installed: tuple[Path, Path]) -> None:
    bin_dir, _ = installed
    version = _run(bin_dir / "python", "-c", "import uvicorn; print(uvicorn.__version__)").stdout.strip()
    assert version == _uvicorn_floor()


def test_render_from_the_wheel_equals_the_source_tree(installed: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, _ = installed
    args = ["render", "--raycluster", EXAMPLES / "rayclusters" / "raycluster-external-redis.yaml"]
    for role in ("head", "worker"):
        pod = ["--pod", EXAMPLES / f"pod-{role}.yaml"]
        # Run outside the repository, so the wheel's package is imported and not ./webhook.
        from_wheel = _run(bin_dir / "ray-ft-webhook", *args, *pod, cwd=tmp_path).stdout
        from_tree = _run(sys.executable, "-m", "webhook", *args, *pod, cwd=REPO).stdout
        assert json.loads(from_wheel) == json.loads(from_tree)
        assert json.loads(from_wheel), f"the {role} example gets a patch"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_from_the_wheel_answers_over_tls(installed: tuple[Path, Path], tmp_path: Path) -> None:
    """`serve` with the floor uvicorn: the reloading TLS context is accepted and a real review is patched."""
    bin_dir, _ = installed
    cli = bin_dir / "ray-ft-webhook"
    _run(cli, "certs", "generate", "--out", tmp_path, "--service", "ray-ft-webhook", "--namespace", "test",
         "--ip", "127.0.0.1", cwd=tmp_path)
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(cli), "serve", "--host", "127.0.0.1", "--port", str(port), "--tls-cert", str(tmp_path / "tls.crt"),
         "--tls-key", str(tmp_path / "tls.key"), "--rayclusters-from", str(EXAMPLES / "rayclusters")],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        verify = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=verify, trust_env=False, timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "serve did not answer /healthz within 60 s"
                time.sleep(0.2)
            review = json.loads((EXAMPLES / "admissionreview-head.json").read_text())
            answer = client.post("/mutate", json=review).json()["response"]
        assert answer["allowed"] is True and answer["patchType"] == "JSONPatch"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    assert proc.returncode == 0
