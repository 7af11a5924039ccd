"""What a test does when a tool it needs is missing: with CI=true it fails, elsewhere it skips with one line
saying how to get the tool; and kubectl, helm, promtool, cert-manager's and prometheus-operator's CRDs, found or
fetched the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testkit.paths import CRDS_SCRIPT, HELM_SCRIPT, PROMTOOL_SCRIPT, TESTBIN_SCRIPT


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def missing(tool: str, how: str) -> None:
    """Fail in CI, skip elsewhere, with one line saying how to get `tool`."""
    message = f"{tool} not available: {how}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def kubectl() -> str:
    """kubectl: $RAY_FT_WEBHOOK_KUBECTL, else the one hack/testbin.sh builds (needs Go), else the PATH's."""
    if override := os.environ.get("RAY_FT_WEBHOOK_KUBECTL"):
        return override
    if shutil.which("go"):
        out = subprocess.run(["bash", str(TESTBIN_SCRIPT), "kubectl"], stdout=subprocess.PIPE, text=True,
                             check=False)
        if out.returncode == 0:
            return str(Path(out.stdout.strip()) / "kubectl")
        if in_ci():
            pytest.fail("hack/testbin.sh kubectl failed (see its output above)")
    found = shutil.which("kubectl")
    if found is None:
        missing("kubectl", "install Go so hack/testbin.sh can build it, or put kubectl on PATH")
    return found


def crds(project: str) -> Path:
    """The folder of `project`'s CRD files (cert-manager, prometheus-operator), fetched from its Go module by
    hack/crds.sh (needs Go); for cert-manager $RAY_FT_WEBHOOK_CERT_MANAGER_CRDS overrides. Missing: fails with
    CI=true, skips elsewhere."""
    if project == "cert-manager" and (override := os.environ.get("RAY_FT_WEBHOOK_CERT_MANAGER_CRDS")):
        return Path(override)
    if shutil.which("go") is None:
        missing(f"{project}'s CRDs", "install Go so hack/crds.sh can fetch them from the Go module proxy")
    out = subprocess.run(["bash", str(CRDS_SCRIPT), project], stdout=subprocess.PIPE, text=True, check=False)
    if out.returncode != 0:
        missing(f"{project}'s CRDs", f"hack/crds.sh {project} failed (see its output above)")
    return Path(out.stdout.strip())



def _built(tool: str, script: Path, needs: str, env_var: str) -> str:
    """`tool`: $`env_var`, else the one `script` builds or fetches (when `needs` is on PATH), else the PATH's."""
    if override := os.environ.get(env_var):
        return override
    if shutil.which(needs):
        out = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
        if out.returncode == 0:
            return str(Path(out.stdout.strip()) / tool)
        if in_ci():
            pytest.fail(f"hack/{script.name} failed (see its output above)")
    found = shutil.which(tool)
    if found is None:
        missing(tool, f"install {needs} so hack/{script.name} can provide it, or put {tool} on PATH "
                f"(or set {env_var})")
    return found


def helm() -> str:
    """helm v3: $RAY_FT_WEBHOOK_HELM, else the one hack/helm.sh builds from the Go module proxy, else the PATH's."""
    return _built("helm", HELM_SCRIPT, "go", "RAY_FT_WEBHOOK_HELM")


def promtool() -> str:
    """promtool: $RAY_FT_WEBHOOK_PROMTOOL, else the one hack/promtool.sh takes out of Debian's prometheus package,
    else the PATH's."""
    return _built("promtool", PROMTOOL_SCRIPT, "apt-get", "RAY_FT_WEBHOOK_PROMTOOL")
