"""What a test does when a tool it needs is missing: with CI=true it fails, elsewhere it skips with one line
saying how to get the tool; and kubectl, found or built the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testkit.paths import TESTBIN_SCRIPT


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
