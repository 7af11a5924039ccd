"""A driver program run inside the head (`kubectl exec ... python`): the script around a test's body and
what it reported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A result line a driver script prints, so that Ray's own output on stdout cannot be mistaken for it.
RESULT_PREFIX = "REALRAY_RESULT "


@dataclass
class DriverResult:
    """What a driver run inside the head printed: its exit code, the RESULT_PREFIX line parsed, the log."""

    returncode: int
    result: dict[str, Any] | None
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result is not None and "error" not in self.result


def driver_script(body: str) -> str:
    """A driver program: `body` runs after `ray.init(namespace="default_namespace")`, like the guide's
    scripts, and calls `result(dict)`; an exception becomes `{"error": ...}`. Runs with the head's env, so
    `ray.init()` finds the cluster through RAY_ADDRESS exactly as in `kubectl exec`."""
    return (
        "import json, sys, time\n"
        "import ray\n"
        f"def result(d):\n    print({RESULT_PREFIX!r} + json.dumps(d), flush=True)\n"
        "try:\n"
        '    ray.init(namespace="default_namespace")\n'
        + "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
        + "except Exception as e:\n"
        '    result({"error": f"{type(e).__name__}: {e}"})\n'
        "    sys.exit(1)\n"
    )

