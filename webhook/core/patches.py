"""Turn a Plan into explicit RFC 6902 JSON Patch ops against the pod it was made for.

Only `add` and `replace`, only on the Ray container's env, args and volumeMounts and the pod's volumes and
annotations (`replace` of an env entry only for KubeRay's own empty REDIS_PASSWORD/RAY_REDIS_ADDRESS
placeholders, see plan; `replace` of args[0] for a `ray start` flag or the Redis cleanup pod's username). A missing
`annotations` map or `env` list is created once, whole; after that, ops address single keys (`/-` for
env). The builder tracks what it created, so no later op assumes the original document (the bug that
lost volumes in vault-k8s). Order is fixed: annotations, env, the command lines, then volumes and mounts
(Redis TLS files).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from webhook.core import annotations as ann
from webhook.core import raystart
from webhook.core.plan import Plan
from webhook.core.pod import PodFacts

CONTAINER = "/spec/containers/0"
ANNOTATIONS = "/metadata/annotations"


class Op(TypedDict):
    op: Literal["add", "replace"]
    path: str
    value: Any


def escape(key: str) -> str:
    """RFC 6901: `~` -> `~0`, `/` -> `~1` (in that order)."""
    return key.replace("~", "~0").replace("/", "~1")


def _injected_value(pod: PodFacts, plan: Plan) -> str:
    previous = [n for n in (pod.annotations or {}).get(ann.INJECTED, "").split(",") if n]
    names = previous + [n for n in plan.injected_names if n not in previous]
    return ",".join(names)


def build_ops(pod: PodFacts, plan: Plan) -> list[Op]:
    """The JSON Patch for `plan` on `pod`; empty when the plan adds nothing."""
    if plan.is_empty:
        return []
    ops: list[Op] = []

    new_annotations = dict(plan.annotations)
    injected_exists = pod.annotations is not None and ann.INJECTED in pod.annotations
    if not injected_exists:
        new_annotations[ann.INJECTED] = _injected_value(pod, plan)
    if pod.annotations is None:
        ops.append(Op(op="add", path=ANNOTATIONS, value=new_annotations))
    else:
        ops.extend(Op(op="add", path=f"{ANNOTATIONS}/{escape(k)}", value=v) for k, v in new_annotations.items())
        if injected_exists:
            ops.append(Op(op="replace", path=f"{ANNOTATIONS}/{escape(ann.INJECTED)}", value=_injected_value(pod, plan)))

    ops.extend(Op(op="replace", path=f"{CONTAINER}/env/{i}", value=e.to_k8s()) for i, e in plan.replace_env)
    env = [e.to_k8s() for e in plan.env]
    if env and pod.env is None:
        ops.append(Op(op="add", path=f"{CONTAINER}/env", value=env))
    else:
        ops.extend(Op(op="add", path=f"{CONTAINER}/env/-", value=e) for e in env)

    if plan.ray_start_flags:
        if pod.args0 is not None and (args0 := raystart.add_flags(pod.args0, plan.ray_start_flags)) != pod.args0:
            ops.append(Op(op="replace", path=f"{CONTAINER}/args/0", value=args0))
        if pod.gen_cmd is not None and (gen := raystart.add_flags(pod.gen_cmd, plan.ray_start_flags)) != pod.gen_cmd:
            ops.append(Op(op="replace", path=f"{CONTAINER}/env/{pod.gen_cmd_index}/value", value=gen))
    if plan.cleanup_args0 is not None:  # the plan sets it only when it differs from the pod's args[0]
        ops.append(Op(op="replace", path=f"{CONTAINER}/args/0", value=plan.cleanup_args0))
    ops += _append("/spec/volumes", pod.volumes is None, plan.volumes)
    ops += _append(f"{CONTAINER}/volumeMounts", pod.mounts is None, plan.volume_mounts)
    return ops


def _append(path: str, missing: bool, items: tuple[Mapping[str, Any], ...]) -> list[Op]:
    """Ops adding `items` to the list at `path`: the list whole when the pod has none, else one `/-` each."""
    copies = [dict(item) for item in items]
    if not copies:
        return []
    if missing:
        return [Op(op="add", path=path, value=copies)]
    return [Op(op="add", path=f"{path}/-", value=item) for item in copies]
