"""The import rules of hack/check_layers.py hold for this repository, and the check fails on each kind of
violation planted into a copy of the tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "hack" / "check_layers.py"


def run_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), str(root)], capture_output=True, text=True, timeout=60)


def test_repository_follows_the_rules() -> None:
    result = run_check(REPO)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for part in ("webhook", "bench", "hack"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return tmp_path


PLANTED = [
    ("webhook/core/plan.py", "import orjson\n", "webhook.core may import only the standard library"),
    ("webhook/core/plan.py", "from webhook.common import kube\n", "webhook.core may import only"),
    ("webhook/admission/app.py", "from webhook.cli import options\n", "webhook.admission may import only"),
    ("webhook/admission/handler.py", "from webhook.certs import tls\n", "webhook.admission may import only"),
    ("webhook/certs/tls.py", "def later():\n    from webhook.admission import metrics\n",
     "webhook.certs may import only"),
    ("webhook/core/pod.py", "from tests import conftest\n", "product code must not import tests"),
    ("webhook/cli/serve.py", "import bench.run\n", "product code must not import bench"),
    ("bench/run.py", "from tests.e2e import conftest\n", "bench/ and hack/ must not import tests"),
    ("hack/demo.py", "import tests.e2e.controlplane\n", "bench/ and hack/ must not import tests"),
    ("webhook/core/settings.py", "from webhook.core import plan\n", "import cycle: "),
]


@pytest.mark.parametrize(("path", "line", "message"), PLANTED, ids=[f"{p}:{m[:30]}" for p, _, m in PLANTED])
def test_a_planted_violation_fails_the_check(tree: Path, path: str, line: str, message: str) -> None:
    target = tree / path
    target.write_text(target.read_text() + "\n" + line)
    result = run_check(tree)
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
