"""Where things are: the repository, its manifests and hack/ build scripts, and the cache folder those
scripts build into (`$RAY_FT_WEBHOOK_CACHE`, else ~/.cache/ray-ft-webhook)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
TESTBIN_SCRIPT = REPO / "hack" / "testbin.sh"
KUBERAY_SCRIPT = REPO / "hack" / "kuberay.sh"
CRDS_SCRIPT = REPO / "hack" / "crds.sh"
HELM_SCRIPT = REPO / "hack" / "helm.sh"
PROMTOOL_SCRIPT = REPO / "hack" / "promtool.sh"
CHART = MANIFESTS / "chart" / "ray-ft-webhook"
KUBERAY_WRAPPERS = REPO / "hack" / "kuberay"


def cache_dir() -> Path:
    """The root the hack/ build scripts write their binaries under."""
    return Path(os.environ.get("RAY_FT_WEBHOOK_CACHE") or Path.home() / ".cache" / "ray-ft-webhook")
