"""Reading and extending the `ray start` command line that KubeRay writes into the Ray container's args[0].

KubeRay renders one bash line such as `ulimit -n 65536; ray start --head --block --num-cpus=0`, flags as
` --key=value `. The webhook only ever appends flags right after `ray start` (and `--head`), keeping
everything the user or KubeRay wrote, so the change is easy to read in `kubectl get pod -o yaml`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_RAY_START = re.compile(r"\bray\s+start\b(\s+--head\b)?")


def flag_name(flag: str) -> str:
    """`--redis-password=$REDIS_PASSWORD` -> `--redis-password`."""
    return flag.partition("=")[0]


def has_ray_start(cmd: str) -> bool:
    return _RAY_START.search(cmd) is not None


def has_flag(cmd: str, name: str) -> bool:
    """True when `name` (e.g. `--redis-password`) appears as a flag, with `=value`, a separate value or none."""
    return re.search(rf"(?:^|\s){re.escape(name)}(?:=|\s|$)", cmd) is not None


def add_flags(cmd: str, flags: Sequence[str]) -> str:
    """`cmd` with each flag not yet present inserted after the first `ray start [--head]`.

    Returns `cmd` unchanged when there is no `ray start` or every flag is already there.
    """
    missing = [f for f in flags if not has_flag(cmd, flag_name(f))]
    match = _RAY_START.search(cmd)
    if not missing or match is None:
        return cmd
    return cmd[: match.end()] + "".join(f" {f}" for f in missing) + cmd[match.end():]
