"""What the Event on a RayCluster says when its head pod is admitted: the one place its owner sees, with
`kubectl describe raycluster`, what the webhook did (reason, type and note; the sender adds the rest).

Only the head's admission makes one: it is where the cluster's FT configuration is decided, once per head
pod; worker pods would repeat it. Nothing for a cluster the webhook skips (FT off, injection off), and
nothing when the head already had everything (a reinvocation after another webhook, or a user who set it all).
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook.core.plan import Plan, Values
from webhook.core.validation import describe

CONFIGURED = "GCSFaultToleranceConfigured"
INCOMPLETE = "GCSFaultToleranceIncomplete"
DENIED = "GCSFaultToleranceDenied"
# events.k8s.io/v1 refuses a note over 1 kB.
MAX_NOTE = 1024


@dataclass(frozen=True)
class EventFacts:
    """The part of an Event the decision determines."""

    reason: str
    type: str  # "Normal" or "Warning"
    note: str


def _cut(note: str) -> str:
    return note if len(note.encode()) <= MAX_NOTE else note.encode()[:MAX_NOTE - 3].decode(errors="ignore") + "..."


def injected(plan: Plan, values: Values) -> str:
    """`NAME=shown value (source)` for each name the plan injects that has a source, then the other names."""
    rows = {name.split(" ")[0]: (shown, source) for name, shown, source in describe(values)
            if not name.endswith("(workers)")}
    parts = []
    for name in plan.injected_names:
        if name in rows:
            shown, source = rows[name]
            parts.append(f"{name}={shown} ({source})")
        else:
            parts.append(name)
    return ", ".join(parts)


def head_event(plan: Plan, values: Values | None) -> EventFacts | None:
    """The Event for a head pod's plan, or None when there is nothing to tell."""
    if values is None or plan.skipped is not None or (plan.is_empty and not plan.gaps):
        return None
    done = f"injected {injected(plan, values)}" if not plan.is_empty else "nothing injected"
    if plan.gaps:
        return EventFacts(INCOMPLETE, "Warning", _cut(f"{'; '.join(plan.gaps)}; {done}"))
    return EventFacts(CONFIGURED, "Normal", _cut(done))


def denied_event(message: str) -> EventFacts:
    return EventFacts(DENIED, "Warning", _cut(message))
