"""`/validate`'s decision, made when a RayCluster (or a RayService or RayJob that creates one) is applied.

The person who runs `kubectl apply` reads admission warnings; the pod path's warnings go to KubeRay's service
account, which nobody reads. So the same cluster-level plan the pod path starts from (`plan.plan_cluster`) is
run here, and its findings are answered as warnings. Denied is only what can never work and is ours to judge:
one of our annotations that cannot be parsed (the pod path would deny every pod of the cluster). Admins can
make KubeRay's conflicts and shared storage namespaces denials too (`Settings`).

On UPDATE the warnings are those of the new object (what the update introduces or keeps), a denial only what
the update introduces (a cluster created before the webhook must stay updatable: KubeRay removes its
finalizer with an update), never one for a cluster being deleted, and a note when a change only takes effect
in pods created after it. (An update that changes neither spec nor annotations is answered silently by the
adapter: KubeRay's own bookkeeping would otherwise repeat the findings into its log.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.core.namespace import NamespaceFacts
from webhook.core.plan import (
    ENV_RECONNECT_TIMEOUT,
    ENV_REDIS_ADDRESS,
    ENV_REDIS_CA_CERT,
    ENV_REDIS_CLIENT_CERT,
    ENV_REDIS_PASSWORD,
    ENV_REDIS_SERVER_NAME,
    ENV_REDIS_USERNAME,
    ENV_STORAGE_NAMESPACE,
    WORKER_TIMEOUT,
    ClusterPlan,
    EnvVar,
    Values,
    cluster_findings,
    kuberay_conflicts,
    plan_cluster,
)
from webhook.core.raycluster import ClusterFacts
from webhook.core.redis_address import canonical_redis_address
from webhook.core.settings import Settings, quote

# The kinds `/validate` reads, and the field of their spec that holds the RayCluster spec they create.
# KubeRay copies the RayService's and the RayJob's annotations onto that RayCluster.
EMBEDDED_SPEC = {"RayCluster": None, "RayService": "rayClusterConfig", "RayJob": "rayClusterSpec"}

KUBERAY_REFUSES = ("KubeRay >= 1.3 will refuse this RayCluster (Event InvalidRayClusterSpec, no pods) "
                   "for the conflicts above")


@dataclass(frozen=True)
class Verdict:
    """The answer to one `/validate` request: allow with warnings, or deny with a message."""

    warnings: tuple[str, ...] = ()
    denied: str | None = None


def embedded_raycluster(kind: str, obj: Any) -> Mapping[str, Any] | None:
    """The RayCluster `obj` is or will create, as a RayCluster object: for a RayService or RayJob its
    embedded spec under its own name, namespace and annotations (no uid: the RayCluster does not exist yet).
    None when there is none to judge (a RayJob that runs on an existing cluster through `clusterSelector`)."""
    field = EMBEDDED_SPEC[kind]
    if field is None or not isinstance(obj, Mapping):
        return obj if isinstance(obj, Mapping) else None
    spec = obj.get("spec")
    embedded = spec.get(field) if isinstance(spec, Mapping) else None
    if embedded is None:
        return None
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    return {"metadata": {k: metadata[k] for k in ("name", "namespace", "annotations") if k in metadata},
            "spec": embedded}


def _pins_storage_namespace(c: ClusterFacts) -> bool:
    return bool(c.storage_namespace_annotation) or bool(c.options and c.options.external_storage_namespace)


def storage_key(cp: ClusterPlan, namespace: str) -> tuple[str, str] | None:
    """(the Redis, storage namespace) where a cluster in `namespace` keeps its GCS state, or None when it keeps
    none; the Redis as `canonical_redis_address` writes it, so two clusters' keys are equal when they share."""
    v = cp.values
    if v is None or v.redis_address is None or not v.storage_namespace:
        return None
    return canonical_redis_address(v.redis_address, namespace), v.storage_namespace


NamespaceOf = Callable[[str], NamespaceFacts | None]


def _no_namespaces(name: str) -> NamespaceFacts | None:
    return None


def _sharing(c: ClusterFacts, key: tuple[str, str], others: Iterable[ClusterFacts], s: Settings,
             namespace_of: NamespaceOf = _no_namespaces) -> list[str]:
    """`namespace/name` of every other live RayCluster whose GCS state lives under `key`. Only a cluster that
    pins its namespace (or is pinned to) can share one: the uid default is unique."""
    names = []
    for other in others:
        if other.uid == c.uid or other.deleting or not (_pins_storage_namespace(other) or other.uid == key[1]):
            continue
        if storage_key(plan_cluster(other, s, ns=namespace_of(other.namespace)), other.namespace) == key:
            names.append(f"{other.namespace}/{other.name}")
    return sorted(names)


def shared_storage(c: ClusterFacts, cp: ClusterPlan, others: Iterable[ClusterFacts], s: Settings,
                   namespace_of: NamespaceOf = _no_namespaces) -> str | None:
    """The finding when another live RayCluster of `others` keeps its GCS state where `c` (planned as `cp`)
    does, or None: both overwrite each other's state, so neither survives a head restart as meant."""
    key = storage_key(cp, c.namespace)
    sharing = _sharing(c, key, others, s, namespace_of) if key is not None else []
    if key is None or not sharing:
        return None
    return _shared_warning(key, ", ".join(sharing))


def _shared_warning(key: tuple[str, str], sharing: str) -> str:
    return f"GCS state at risk: same Redis storage namespace {quote(key[1], 24)} as RayCluster {sharing}"


# What a change of the cluster-level plan means for running pods, by the field that changed.
_HEAD_FIELDS = (("skipped", "injection on/off"), ("storage_namespace", ENV_STORAGE_NAMESPACE),
                ("redis_address", ENV_REDIS_ADDRESS), ("redis_username", ENV_REDIS_USERNAME),
                ("redis_password", ENV_REDIS_PASSWORD), ("head_timeout_s", "the head's reconnect timeout"))


def _changes(old: ClusterPlan, new: ClusterPlan) -> list[str]:
    """Notes on what the update changes in what pods get: the webhook acts only when a pod is created."""
    def get(cp: ClusterPlan, field: str) -> Any:
        return cp.skipped if field == "skipped" else getattr(cp.values, field, None)

    head = [what for field, what in _HEAD_FIELDS if get(old, field) != get(new, field)]
    notes = []
    if head:
        notes.append(f"changes {', '.join(head)}: re-create the head pod to apply (the webhook acts at pod creation)")
    if get(old, "worker_timeout_s") != get(new, "worker_timeout_s") and new.values is not None:
        notes.append("changes the workers' reconnect timeout: applies to worker pods created from now on")
    return notes


def validate(kind: str, new: ClusterFacts, old: ClusterFacts | None, others: Iterable[ClusterFacts],
             s: Settings, ns: NamespaceFacts | None = None, namespace_of: NamespaceOf = _no_namespaces) -> Verdict:
    """The verdict on `new` (the RayCluster a `kind` object is or will create, in Namespace `ns`); `old` on UPDATE;
    `others` the live RayClusters the webhook knows, for the shared storage namespace check (with their
    Namespaces' defaults from `namespace_of`)."""
    where = f"{kind} {new.namespace}/{new.name}"
    cp = plan_cluster(new, s, ns=ns)
    if cp.denied is not None:
        introduced = [e for e in new.errors if old is None or e not in old.errors]
        if introduced and not new.deleting:
            return Verdict(denied=f"{where}: " + "; ".join(introduced))
        # A Namespace's own error is not this object's to fix (its pods are denied; the warning says why).
        # Kept from before (or while being deleted): its pods are denied, but the update is the way out.
        return Verdict(warnings=(f"{where}: {cp.denied}",))

    warnings = list(cluster_findings(new, cp))
    conflicts = kuberay_conflicts(new)
    if conflicts:
        introduced = [c for c in conflicts if old is None or c not in kuberay_conflicts(old)]
        if s.deny_kuberay_conflicts and introduced and not new.deleting:
            return Verdict(denied=f"{where}: " + "; ".join(introduced))
        warnings.append(KUBERAY_REFUSES)

    key = storage_key(cp, new.namespace)
    if key is not None and kind != "RayCluster" and _pins_storage_namespace(new):
        when = "on upgrade" if kind == "RayService" else "on retry"
        warnings.append(f"pinned storage namespace {quote(key[1], 16)}: {when} the old RayCluster's Redis cleanup "
                        "wipes the new one's GCS state")
    elif key is not None and kind == "RayCluster":
        sharing = ", ".join(_sharing(new, key, others, s, namespace_of))
        if sharing:
            moved = old is None or storage_key(plan_cluster(old, s, ns=ns), old.namespace) != key
            if s.deny_shared_storage_namespace and moved and not new.deleting:
                assert cp.values is not None and cp.values.redis_address is not None  # `key` is not None
                address = cp.values.redis_address
                return Verdict(denied=f"{where}: storage namespace {quote(key[1])} in Redis {quote(address)} is "
                                      f"also used by RayCluster {sharing}: two clusters overwrite each other's "
                                      "GCS state")
            warnings.append(_shared_warning(key, sharing))

    if old is not None and kind == "RayCluster":
        warnings += _changes(plan_cluster(old, s, ns=ns), cp)
    return Verdict(warnings=tuple(dict.fromkeys(warnings)))


def describe(v: Values) -> tuple[tuple[str, str, str], ...]:
    """(name, value as shown, source) of each resolved value, for Events and `check`. A password is shown as
    where it comes from (a Secret's name and key), never as itself."""
    rows: list[tuple[str, str, str]] = []
    # `_resolve` names the source of every value it sets.
    for name, env in ((ENV_STORAGE_NAMESPACE, v.storage_namespace), (ENV_REDIS_ADDRESS, v.redis_address)):
        if env is not None:
            rows.append((name, env, v.sources[name]))
    if v.redis_username is not None:
        rows.append((ENV_REDIS_USERNAME, _credential(v.redis_username, True), v.sources[ENV_REDIS_USERNAME]))
    if v.redis_password is not None:
        rows.append((ENV_REDIS_PASSWORD, _credential(v.redis_password, False), v.sources[ENV_REDIS_PASSWORD]))
    for name, shown in ((ENV_REDIS_CA_CERT, v.redis_ca and str(v.redis_ca)),
                        (ENV_REDIS_CLIENT_CERT, v.redis_client_cert_secret and f"Secret {v.redis_client_cert_secret}"),
                        (ENV_REDIS_SERVER_NAME, v.redis_server_name)):
        if shown:
            rows.append((name, shown, v.sources[name]))
    if v.head_timeout_s is not None:
        rows.append((f"{ENV_RECONNECT_TIMEOUT} (head)", str(v.head_timeout_s), v.sources[ENV_RECONNECT_TIMEOUT]))
    rows.append((f"{ENV_RECONNECT_TIMEOUT} (workers)", str(v.worker_timeout_s), v.sources[WORKER_TIMEOUT]))
    return tuple(rows)


def _credential(e: EnvVar, show_value: bool) -> str:
    ref = e.value_from.get("secretKeyRef") if e.value_from is not None else None
    if isinstance(ref, Mapping):
        return f"Secret {ref.get('name')}/{ref.get('key')}"
    if e.value_from is not None:
        return "valueFrom"
    return e.value if show_value else "(plain text)"

