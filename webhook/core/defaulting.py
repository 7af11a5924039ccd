"""`ft-default`: GCS FT on by default for the RayClusters created in a Namespace that asks for it.

The Namespace annotation `ray-ft-webhook.io/ft-default: "enabled"` makes the RayCluster CREATE path add
`ray.io/ft-enabled: "true"` to a RayCluster that says nothing about FT, so KubeRay does its own part (its
finalizer and Redis cleanup Job, its env on the head) and the pod path does the rest. Never over a choice the
RayCluster made (`ray.io/ft-enabled` in any form, or `gcsFaultToleranceOptions`, with which KubeRay refuses the
annotation), never for a RayJob's cluster unless the Namespace says `enabled-including-rayjobs` (kuberay#4025:
a cluster that lives as long as its job gains nothing from FT), and only when a Redis address will reach the
head: FT without Redis costs the cleanup Job and protects nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from webhook.core import annotations as ann
from webhook.core.namespace import FTDefault, NamespaceFacts
from webhook.core.patches import ANNOTATIONS, Op, escape
from webhook.core.plan import plan_cluster
from webhook.core.raycluster import ClusterFacts
from webhook.core.settings import Settings


@dataclass(frozen=True)
class Defaulted:
    """The answer for one RayCluster CREATE: ops (maybe none), and why nothing was done or a warning."""

    ops: tuple[Op, ...] = ()
    skipped: str | None = None
    warning: str | None = None


def ft_default(c: ClusterFacts, ns: NamespaceFacts | None, s: Settings, has_annotations: bool) -> Defaulted:
    """Whether to turn GCS FT on for RayCluster `c` being created in `ns`; `has_annotations`: the object has a
    `metadata.annotations` map (else the patch creates it)."""
    if ns is None or ns.ft_default is FTDefault.DISABLED:
        return Defaulted(skipped="the Namespace does not ask for FT by default")
    if c.ft_annotation is not None or c.options is not None:
        return Defaulted(skipped="the RayCluster sets GCS FT itself")
    if c.owner_kind == "RayJob" and ns.ft_default is not FTDefault.ENABLED_INCLUDING_RAYJOBS:
        return Defaulted(skipped="a RayJob's cluster (ft-default: enabled-including-rayjobs turns it on)")
    cp = plan_cluster(replace(c, ft_annotation="true"), s, ns=ns)
    if cp.denied is not None or cp.values is None:
        return Defaulted(skipped=cp.denied or cp.skipped)
    if cp.address_missing:
        return Defaulted(skipped="no Redis address", warning=(
            f"{ann.FT_DEFAULT} of Namespace {ns.name}: GCS FT not turned on, no Redis address from any source"))
    if has_annotations:
        op = Op(op="add", path=f"{ANNOTATIONS}/{escape(ann.RAY_FT_ENABLED)}", value="true")
    else:
        op = Op(op="add", path=ANNOTATIONS, value={ann.RAY_FT_ENABLED: "true"})
    return Defaulted(ops=(op,))
