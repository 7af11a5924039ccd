"""Finding the external tools some tests need; in CI (CI=true) a missing tool fails, elsewhere it skips."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
        out = subprocess.run([str(REPO / "hack" / "testbin.sh"), "kubectl"], stdout=subprocess.PIPE, text=True,
                             check=False)
        if out.returncode == 0:
            return str(Path(out.stdout.strip()) / "kubectl")
        if in_ci():
            pytest.fail("hack/testbin.sh kubectl failed (see its output above)")
    found = shutil.which("kubectl")
    if found is None:
        missing("kubectl", "install Go so hack/testbin.sh can build it, or put kubectl on PATH")
    return found
