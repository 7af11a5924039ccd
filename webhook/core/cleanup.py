"""Reading and extending the line KubeRay's Redis cleanup pod runs (its args[0], under `bash -lc --`).

KubeRay (`buildRedisCleanupJob`, v1.0-v1.7) writes one line that ends in

    python -c "...; sys.exit(1) if not cleanup_redis_storage(host=parsed.hostname, port=parsed.port,
    password=os.getenv('REDIS_PASSWORD', ...), use_ssl=..., storage_namespace=...) else None"

and passes `username=os.getenv('REDIS_USERNAME', ...)` only when REDIS_USERNAME was in the head's env when it
built the Job. When the webhook adds REDIS_USERNAME, the call must be told to read it: a keyword argument is
appended to the call, keeping everything else as KubeRay wrote it.
"""

from __future__ import annotations

import re

CALL = "cleanup_redis_storage("
USERNAME_ARG = "username=os.getenv('REDIS_USERNAME')"
# The name under which the rewrite is listed in the pod's `ray-ft-webhook.io/injected` annotation.
INJECTED_NAME = "cleanup_redis_storage(username)"

_USERNAME = re.compile(r"\busername\s*=")


def has_username(line: str) -> bool:
    """True when the line passes a username anywhere (KubeRay's own form or ours)."""
    return _USERNAME.search(line) is not None


def _call_end(line: str) -> int | None:
    """The index of the `)` closing the first `cleanup_redis_storage(` call, or None when it does not close."""
    start = line.find(CALL)
    if start < 0:
        return None
    depth = 0
    quote: str | None = None
    for i in range(start + len(CALL) - 1, len(line)):
        ch = line[i]
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch == "'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
    return None


def add_username(line: str) -> str:
    """`line` with `username=os.getenv('REDIS_USERNAME')` as the call's last keyword argument.

    Unchanged when the line already passes a username or has no complete cleanup call.
    """
    end = _call_end(line)
    if end is None or has_username(line):
        return line
    inside = line[line.find(CALL) + len(CALL):end].rstrip()
    sep = "" if not inside or inside.endswith(",") else ", "
    return line[: line.find(CALL) + len(CALL)] + inside + sep + USERNAME_ARG + line[end:]
