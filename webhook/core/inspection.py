"""`check`'s verdict on one live RayCluster and its running head pod. No I/O: the command line lists the objects.

The cluster is judged by the same plan the webhook admits pods with (`plan.plan_cluster`), its findings are
`/validate`'s (`plan.cluster_findings` and the shared storage namespace of `validation.shared_storage`), and
the head pod is judged by running `plan.decide` on it as if it were being created now:

- the plan would add something (env, `ray start` flags, annotations): the head lacks it, so it was created
  before the webhook was installed or before the change that asks for it -> `MISSING`;
- a value the webhook injected earlier (the pod's `ray-ft-webhook.io/injected` list) differs from what it
  would inject now (the entry is taken out of a copy of the pod and the plan asked again) -> `STALE`;
- else the head carries the configuration.

Values set on the pod by anyone else (the RayCluster's template, KubeRay's own FT step) win at admission, so
they are never reported as stale. Secret values are never part of a report: a password is shown as where it
comes from (`validation.describe`), and a differing password by its name only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from webhook.core import annotations as ann
from webhook.core.namespace import NamespaceFacts
from webhook.core.plan import (
    ENV_RECONNECT_TIMEOUT,
    ENV_REDIS_ADDRESS,
    ENV_REDIS_PASSWORD,
    ENV_REDIS_USERNAME,
    ENV_STORAGE_NAMESPACE,
    EnvVar,
    Plan,
    Values,
    cluster_findings,
    cluster_gaps,
    decide,
    kuberay_conflicts,
    plan_cluster,
)
from webhook.core.pod import CLUSTER_LABEL, InvalidPod, PodFacts, read_ray_pod
from webhook.core.raycluster import ClusterFacts
from webhook.core.redis_address import redacted
from webhook.core.settings import Settings, quote
from webhook.core.validation import KUBERAY_REFUSES, describe, shared_storage


class FT(StrEnum):
    """Whether the webhook makes the cluster fault tolerant."""

    ON = "on"
    OFF = "off"
    # FT is on for KubeRay, but the webhook leaves it alone (`ray-ft-webhook.io/inject: "false"`, rocksdb).
    SKIPPED = "skipped"
    # One of our annotations cannot be parsed: the webhook denies every pod of the cluster.
    DENIED = "denied"


class Head(StrEnum):
    """What the running head pod carries, compared with what the webhook would give it now."""

    NONE = "no head pod"
    CARRIES = "carries the configuration"
    MISSING = "re-create the head to apply"
    STALE = "stale: re-create the head to apply"
    UNREADABLE = "head pod unreadable"
    # FT off or skipped, and the head has nothing the webhook injected.
    NOT_APPLICABLE = "-"


class Status(StrEnum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    # FT off or skipped, or the cluster is being deleted: not counted.
    NOT_COUNTED = "-"


@dataclass(frozen=True)
class HeadReport:
    status: Head
    # The head pod's name, when there is one.
    pod: str | None = None
    # What the plan would add (names as in `ray-ft-webhook.io/injected`), for MISSING.
    missing: tuple[str, ...] = ()
    # Each value injected earlier that differs from what would be injected now, for STALE.
    stale: tuple[str, ...] = ()
    # Why the pod could not be judged, for UNREADABLE.
    detail: str | None = None


@dataclass(frozen=True)
class ClusterReport:
    namespace: str
    name: str
    ft: FT
    # Which field turned FT on, or why the webhook does nothing.
    why: str
    # (name, value as shown, source), from `validation.describe`; empty unless FT is on.
    values: tuple[tuple[str, str, str], ...]
    findings: tuple[str, ...]
    # The findings that make the cluster incomplete (see `status`).
    gaps: tuple[str, ...]
    head: HeadReport
    deleting: bool = False

    @property
    def status(self) -> Status:
        """COMPLETE when FT is on, no finding leaves FT not working (`gaps`: no Redis address, a username
        without a password, a storage namespace another cluster uses too) and the
        head pod carries the configuration. A cluster the webhook denies cannot start at all: INCOMPLETE,
        whether FT is on or not. FT off or skipped, or being deleted: not counted."""
        if self.deleting or self.ft in (FT.OFF, FT.SKIPPED):
            return Status.NOT_COUNTED
        if self.ft == FT.ON and not self.gaps and self.head.status == Head.CARRIES:
            return Status.COMPLETE
        return Status.INCOMPLETE


def _why_on(c: ClusterFacts) -> str:
    fields = []
    if c.ft_annotation is not None and c.ft_annotation.lower() == "true":
        fields.append(f"annotation {ann.RAY_FT_ENABLED}={c.ft_annotation}")
    if c.options is not None:
        fields.append("spec.gcsFaultToleranceOptions")
    return " and ".join(fields)


# The head's FT env names whose value the head template may set itself (present wins at admission).
_HEAD_NAMES = (ENV_STORAGE_NAMESPACE, ENV_REDIS_ADDRESS, ENV_REDIS_USERNAME, ENV_REDIS_PASSWORD, ENV_RECONNECT_TIMEOUT)
TEMPLATE = "the head template's env (wins)"


def _template_value(c: ClusterFacts, name: str) -> str:
    literal = c.head_env.values.get(name)
    if literal is None:
        return "(set)"
    if name == ENV_REDIS_PASSWORD:
        return "(plain text)" if literal else "(empty)"
    return redacted(literal)  # an address may hold a password; no other value shown here has an `@`


def _values(c: ClusterFacts, v: Values) -> tuple[tuple[str, str, str], ...]:
    """`validation.describe`'s rows, with a value the head template sets itself shown as the one that counts."""
    described = describe(v)
    by_name = {row[0].removesuffix(" (head)"): row for row in described}
    rows = []
    for name in _HEAD_NAMES:
        if name in c.head_env.names:
            shown = f"{name} (head)" if name == ENV_RECONNECT_TIMEOUT else name
            rows.append((shown, _template_value(c, name), TEMPLATE))
        elif name in by_name:
            rows.append(by_name[name])
    rows += [row for row in described if row[0].removesuffix(" (head)") not in _HEAD_NAMES]
    return tuple(rows)


def pick_head(c: ClusterFacts, pods: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The head pod of `c` among `pods` (labelled as its head), or None: only pods whose RayCluster
    ownerReference, when they have one, names `c`'s uid (not a previous RayCluster of the same name); one not
    being deleted before one that is; then the newest."""
    candidates = []
    for pod in pods:
        metadata = pod.get("metadata")
        if not isinstance(metadata, Mapping):
            continue
        labels = metadata.get("labels")
        if not isinstance(labels, Mapping) or labels.get(CLUSTER_LABEL) != c.name:
            continue
        if metadata.get("namespace") not in (None, c.namespace):
            continue
        refs = metadata.get("ownerReferences")
        owners = [r.get("uid") for r in refs if isinstance(r, Mapping) and r.get("kind") == "RayCluster"] \
            if isinstance(refs, list) else []
        if c.uid and owners and c.uid not in owners:
            continue
        created = metadata.get("creationTimestamp")
        candidates.append((metadata.get("deletionTimestamp") is None, created if isinstance(created, str) else "",
                           pod))
    if not candidates:
        return None
    # RFC 3339 timestamps in UTC ("Z") sort as text.
    return max(candidates, key=lambda item: (item[0], item[1]))[2]


def _pod_name(pod: Mapping[str, Any]) -> str | None:
    name = pod["metadata"].get("name")  # `pick_head` chose it: its metadata is an object
    return name if isinstance(name, str) else None


def _injected(facts: PodFacts) -> tuple[str, ...]:
    raw = (facts.annotations or {}).get(ann.INJECTED, "")
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def _without(pod: Mapping[str, Any], env_names: set[str], annotation_keys: set[str]) -> dict[str, Any]:
    """A copy of `pod` whose Ray container lacks the env entries `env_names` and whose metadata lacks the
    annotations `annotation_keys`: the pod as the webhook saw it before it injected them."""
    out = copy.deepcopy(dict(pod))
    metadata = out.get("metadata") or {}
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict):
        metadata["annotations"] = {k: v for k, v in annotations.items() if k not in annotation_keys}
    container = out["spec"]["containers"][0]
    if isinstance(container.get("env"), list):
        container["env"] = [e for e in container["env"] if e.get("name") not in env_names]
    return out


def _planned_env(plan: Plan) -> dict[str, EnvVar]:
    return {e.name: e for e in (*plan.env, *(e for _, e in plan.replace_env))}


def _live_env(facts: PodFacts, name: str) -> EnvVar:
    """The entry the container gets for `name` (the last one), in the plan's terms."""
    item = (facts.env or ())[facts.env_indexes(name)[-1]]
    value_from = item.get("valueFrom")
    return EnvVar(name=name, value=item.get("value") or "", value_from=value_from)


def _shown(e: EnvVar | None) -> str:
    """An env value for a report; a credential only as where it comes from, never as itself."""
    if e is None:
        return "none"
    if e.value_from is not None:
        ref = e.value_from.get("secretKeyRef")
        return f"Secret {ref.get('name')}/{ref.get('key')}" if isinstance(ref, Mapping) else "valueFrom"
    if e.name == ENV_REDIS_PASSWORD:
        return "(plain text)" if e.value else "empty"
    return quote(e.value, 60)


def _same(live: EnvVar, planned: EnvVar | None) -> bool:
    return planned is not None and live.to_k8s() == planned.to_k8s()


def _stale(c: ClusterFacts, pod: Mapping[str, Any], facts: PodFacts, s: Settings,
           ns: NamespaceFacts | None) -> tuple[str, ...]:
    """Each value the webhook injected earlier that it would inject differently now (or not at all)."""
    injected = set(_injected(facts))
    env_names = {name for name in injected if name in facts.env_names}
    annotation_keys = {key for key in injected if key in (facts.annotations or {})}
    # The pod as it was before: `_without` keeps the labels that make it a Ray pod, and the cluster's plan is
    # not denied (`_head` is called for FT on only), so the decision is a Plan.
    before = read_ray_pod(_without(pod, env_names, annotation_keys), facts.owner.namespace)
    assert before is not None
    decision = decide(c, before, s, ns)
    assert isinstance(decision, Plan)
    planned = _planned_env(decision)
    planned_annotations = dict(decision.annotations)
    out = []
    for name in sorted(env_names):
        live = _live_env(facts, name)
        now = planned.get(name)
        if not _same(live, now):
            shown = f"{name}: the head has {_shown(live)}, now {_shown(now)}"
            # Two plain-text passwords look alike when shown; say that they are not.
            out.append(shown + " (another value)" if _shown(live) == _shown(now) else shown)
    for key in sorted(annotation_keys):
        live_value, now_value = (facts.annotations or {})[key], planned_annotations.get(key)
        if now_value != live_value:
            out.append(f"annotation {key}: the head has {quote(live_value, 60)}, "
                       f"now {quote(now_value, 60) if now_value is not None else 'none'}")
    return tuple(out)


def _head(c: ClusterFacts, pod: Mapping[str, Any] | None, s: Settings, ft_on: bool,
          ns: NamespaceFacts | None = None) -> HeadReport:
    """The head pod's report. The plan's gaps for the pod (`Plan.gaps`) are not reported again: they are the
    cluster's (`plan.cluster_gaps`) as far as the pod carries the configuration."""
    if pod is None:
        return HeadReport(Head.NONE)
    name = _pod_name(pod)
    try:
        facts = read_ray_pod(pod, c.namespace)
    except InvalidPod as exc:
        return HeadReport(Head.UNREADABLE, name, detail=str(exc))
    if facts is None or facts.role != "head":
        return HeadReport(Head.UNREADABLE, name, detail="not a head pod of a RayCluster")
    if not ft_on:
        # The webhook gives it nothing now; anything it injected earlier is left from when FT was on.
        injected = _injected(facts)
        if injected:
            stale = tuple(f"{n}: injected earlier, not now" for n in injected)
            return HeadReport(Head.STALE, name, stale=stale)
        return HeadReport(Head.NOT_APPLICABLE, name)
    decision = decide(c, facts, s, ns)
    assert isinstance(decision, Plan)  # a denied cluster is not FT on
    if not decision.is_empty:
        return HeadReport(Head.MISSING, name, missing=decision.injected_names)
    stale = _stale(c, pod, facts, s, ns)
    if stale:
        return HeadReport(Head.STALE, name, stale=stale)
    return HeadReport(Head.CARRIES, name)


def inspect_cluster(c: ClusterFacts, head_pods: Sequence[Mapping[str, Any]], s: Settings,
                    others: Iterable[ClusterFacts],
                    namespace_of: Callable[[str], NamespaceFacts | None] = lambda name: None) -> ClusterReport:
    """`check`'s report on RayCluster `c` under the admin's settings `s`: `head_pods` the pods labelled as its
    head (`pick_head` chooses), `others` the other live RayClusters (for the shared storage namespace),
    `namespace_of` the Namespaces' defaults."""
    ns = namespace_of(c.namespace)
    cp = plan_cluster(c, s, ns=ns)
    pod = pick_head(c, head_pods)
    if cp.denied is not None:
        report = _head(c, pod, s, ft_on=False)
        return ClusterReport(c.namespace, c.name, FT.DENIED, "the webhook denies its pods", (),
                             (cp.denied,), (cp.denied,), report, c.deleting)
    findings = list(cluster_findings(c, cp))
    if kuberay_conflicts(c):
        findings.append(KUBERAY_REFUSES)
    if cp.values is None:
        ft = FT.SKIPPED if c.ft_enabled else FT.OFF
        why = cp.skipped or ""
        if ft == FT.OFF:
            why = f"no {ann.RAY_FT_ENABLED}=true annotation and no spec.gcsFaultToleranceOptions"
        report = _head(c, pod, s, ft_on=False)
        return ClusterReport(c.namespace, c.name, ft, why, (), tuple(findings), (), report, c.deleting)
    gaps = list(cluster_gaps(c, cp))
    shared = shared_storage(c, cp, others, s, namespace_of)
    if shared is not None:
        findings.append(shared)
        gaps.append(shared)
    report = _head(c, pod, s, ft_on=True, ns=ns)
    return ClusterReport(c.namespace, c.name, FT.ON, _why_on(c), _values(c, cp.values),
                         tuple(dict.fromkeys(findings)), tuple(dict.fromkeys(gaps)), report, c.deleting)
