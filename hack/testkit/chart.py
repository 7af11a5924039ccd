"""The Helm chart in manifests/chart/ray-ft-webhook: rendered with the real helm (`template`), and the README's
values table generated from its values.schema.json and values.yaml.

`PYTHONPATH=hack .venv/bin/python -m testkit.chart` prints the table the README's "Helm values" section holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import yaml

from testkit.paths import CHART

RELEASE = "ray-ft-webhook"
NAMESPACE = "ray-ft-webhook"
# The labels Helm's convention adds to every object (ray-ft-webhook.labels in templates/_helpers.tpl); the
# kustomize overlays have the other two (app.kubernetes.io/name, app.kubernetes.io/part-of) only.
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/version",
               "app.kubernetes.io/managed-by")


def template(helm: str, *args: str, release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """`helm template` of the chart with `args` (e.g. "--set", "a=b"), as objects; fails with helm's stderr."""
    out = run_template(helm, *args, release=release, namespace=namespace)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def run_template(helm: str, *args: str, release: str = RELEASE,
                 namespace: str = NAMESPACE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, "template", release, str(CHART), "--namespace", namespace, *args],
                          capture_output=True, text=True, timeout=60, check=False)


def schema() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return result


def defaults() -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return result


def leaves(node: dict[str, Any], values: Any, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """(dotted name, default, description) of every value the schema declares, in the schema's order; an object
    whose schema describes each of its properties is walked, any other value (a label selector too) is one row."""
    for name, sub in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        default = values.get(name) if isinstance(values, dict) else None
        children = sub.get("properties", {})
        if sub.get("type") == "object" and children and all("description" in c for c in children.values()):
            yield from leaves(sub, default, f"{path}.")
        elif name != "global":
            yield path, default, sub.get("description", "")


def _cell(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else (f'"{value}"' if value == "" else value)
    return f"`{text}`"


def values_table(header: Sequence[str] = ("value", "default", "meaning")) -> str:
    """The README's table of the chart's values."""
    lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
    for path, default, description in leaves(schema(), defaults()):
        cell = description.replace("|", "\\|")
        lines.append(f"| `{path}` | {_cell(default)} | {cell} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(values_table())
