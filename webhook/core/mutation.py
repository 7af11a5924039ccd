"""The one code path from facts to an answer, shared by the server, `render` and the tests."""

from __future__ import annotations

from dataclasses import dataclass

from webhook.core.events import EventFacts, denied_event, head_event
from webhook.core.namespace import NamespaceFacts
from webhook.core.outcome import Outcome
from webhook.core.patches import Op, build_ops
from webhook.core.plan import Deny, decide_in, plan_cluster
from webhook.core.pod import PodFacts
from webhook.core.raycluster import ClusterFacts
from webhook.core.settings import Settings


@dataclass(frozen=True)
class Mutation:
    """The answer for one pod: ops to apply (maybe none), warnings, or a denial message."""

    ops: tuple[Op, ...] = ()
    warnings: tuple[str, ...] = ()
    denied: str | None = None
    skipped: str | None = None
    # For a head pod: what the Event on its RayCluster says (None: no Event).
    event: EventFacts | None = None

    @property
    def outcome(self) -> Outcome:
        """How the admission ends, for metrics and logs."""
        if self.denied is not None:
            return Outcome.DENIED
        if self.skipped is not None:
            return Outcome.SKIPPED
        return Outcome.PATCHED if self.ops else Outcome.UNCHANGED


def mutate(cluster: ClusterFacts, pod: PodFacts, settings: Settings,
           namespace: NamespaceFacts | None = None) -> Mutation:
    """Decide for `pod` (of `cluster`, in `namespace`, whose defaults apply) and build its patch."""
    # One cluster plan for the pod's decision and, on a head, its Event's sources.
    cp = plan_cluster(cluster, settings, pod.owner.uid, namespace)
    decision = decide_in(cp, cluster, pod)
    head = pod.role == "head"
    if isinstance(decision, Deny):
        return Mutation(denied=decision.message, event=denied_event(decision.message) if head else None)
    event = head_event(decision, cp.values) if head else None
    return Mutation(ops=tuple(build_ops(pod, decision)), warnings=decision.warnings, skipped=decision.skipped,
                    event=event)
