"""The real `kubectl` from the test binaries, against a local control plane: what a person who applies an object
reads (the `Warning:` lines admission webhooks return, printed on stderr) and the Events `kubectl get events`
shows. Shared by the e2e tier and the KubeRay tier."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml

from testkit.controlplane import testbin_dir


class Kubectl:
    """`kubectl --kubeconfig <kubeconfig> ...`; manifests are written to files in `workdir` and passed with -f."""

    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        self.binary = testbin_dir(("kubectl",)) / "kubectl"
        self.kubeconfig, self.workdir = kubeconfig, workdir

    def __call__(self, *args: str, manifest: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        extra: list[str] = []
        if manifest is not None:
            path = self.workdir / f"{uuid.uuid4().hex}.yaml"
            path.write_text(yaml.safe_dump(manifest))
            extra = ["-f", str(path)]
        return subprocess.run([str(self.binary), "--kubeconfig", str(self.kubeconfig), *args, *extra],
                              capture_output=True, text=True, timeout=60)

    def apply(self, manifest: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
        return self("apply", *args, manifest=manifest)

    def events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """`kubectl get events` about the `kind` object `name`, as kubectl shows them (the core/v1 view)."""
        out = self("get", "events", "-n", namespace, "-o", "json",
                   "--field-selector", f"involvedObject.kind={kind},involvedObject.name={name}")
        assert out.returncode == 0, out.stderr
        return list(json.loads(out.stdout)["items"])


def warnings_of(out: subprocess.CompletedProcess[str]) -> list[str]:
    """The admission warnings kubectl printed (its `Warning: ` lines on stderr), without the prefix."""
    return [line.removeprefix("Warning: ") for line in out.stderr.splitlines() if line.startswith("Warning: ")]
