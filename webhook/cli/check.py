"""`ray-ft-webhook check`: the live RayClusters of a namespace (or all), judged by the webhook's own plan.

Like `istioctl x check-inject`, for admins. The I/O lives here: the Kubernetes API lists the RayClusters and
their head pods page by page (raw JSON, never a typed round trip) and reads the webhook's ConfigMap when asked;
the verdict on each cluster is `core.inspection.inspect_cluster`. Output is a table or JSON on stdout; progress
goes to stderr only once the run has taken more than a second. Exit codes: 0 every FT cluster is complete, 1
otherwise, 2 unusable input (one line on stderr).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import orjson

from webhook.cli.options import fail, resolve_env, settings_from
from webhook.common import kubeapi
from webhook.common.kubeapi import ApiError, Client
from webhook.core.inspection import ClusterReport, Head, Status, inspect_cluster
from webhook.core.namespace import NamespaceFacts, parse_namespace
from webhook.core.pod import CLUSTER_LABEL, NODE_TYPE_LABEL
from webhook.core.raycluster import parse_raycluster

COMMAND = "check"
# Each request's bound: (connect, read) seconds. A page of 500 RayClusters is a few MB.
REQUEST_TIMEOUT = (10, 60)
# Progress lines start once the run has taken this long: a quick check prints nothing on stderr.
QUIET_FOR_S = 1.0
# kustomize's configMapGenerator appends "-" and a 10-character hash to the name it is given.
_GENERATED_SUFFIX = re.compile(r"-[a-z0-9]{10}")


class _Progress:
    """Lines on stderr, but only after QUIET_FOR_S: a check that answers at once stays silent there."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def note(self, message: str) -> None:
        if time.monotonic() - self.started > QUIET_FOR_S:
            print(f"ray-ft-webhook {COMMAND}: {message}", file=sys.stderr, flush=True)


def _list(api: Client, path: str, chunk_size: int, what: str, progress: _Progress,
          query: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every object of a list, read in pages of `chunk_size` (an expired continue token restarts nothing: the
    apiserver's 410 ends the run with exit 2)."""
    items: list[dict[str, Any]] = []
    for page in api.list_pages(path, chunk_size, query, timeout=REQUEST_TIMEOUT):
        items += page.get("items") or []
        progress.note(f"listed {len(items)} {what}")
    return items


def _rayclusters(api: Client, namespace: str | None, chunk_size: int, progress: _Progress) -> list[dict[str, Any]]:
    from webhook.common.errors import InputError

    try:
        return _list(api, kubeapi.path("ray.io/v1", "rayclusters", namespace), chunk_size, "RayClusters", progress)
    except ApiError as exc:
        if exc.status == 404:  # a list in a missing namespace is empty: only a missing resource is a 404
            raise InputError("RayClusters (ray.io/v1) are not served by this cluster: is KubeRay's CRD "
                             "installed?") from None
        raise


def _head_pods(api: Client, namespace: str | None, chunk_size: int,
               progress: _Progress) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Head pods by (namespace, RayCluster name), from their labels."""
    selector = f"{NODE_TYPE_LABEL}=head,{CLUSTER_LABEL}"
    pods = _list(api, kubeapi.path("v1", "pods", namespace), chunk_size, "head pods", progress,
                 {"labelSelector": selector})
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pod in pods:
        metadata = pod.get("metadata") or {}
        key = (metadata.get("namespace") or "", (metadata.get("labels") or {}).get(CLUSTER_LABEL) or "")
        out.setdefault(key, []).append(pod)
    return out


def _namespaces(api: Client, scope: str | None, chunk_size: int, progress: _Progress) -> dict[str, NamespaceFacts]:
    """The Namespaces' defaults for their RayClusters (their `ray-ft-webhook.io/` annotations)."""
    if scope is not None:
        found = [api.get(kubeapi.path("v1", "namespaces", name=scope), timeout=REQUEST_TIMEOUT)]
    else:
        found = _list(api, kubeapi.path("v1", "namespaces"), chunk_size, "Namespaces", progress)
    return {ns.name: ns for ns in map(parse_namespace, found)}


def _config_map(api: Client, namespace: str, name: str) -> tuple[str, dict[str, str]]:
    """The name and data of ConfigMap `name`, or of the one kustomize generated from it (`name-<hash>`) when
    that is the only one; exit 2 when there is none, or several to choose from."""
    try:
        found = api.get(kubeapi.path("v1", "configmaps", namespace, name), timeout=REQUEST_TIMEOUT)
    except ApiError as exc:
        if exc.status != 404:
            raise
        listed = api.get(kubeapi.path("v1", "configmaps", namespace), timeout=REQUEST_TIMEOUT)
        names = sorted(n for item in listed.get("items") or []
                       if (n := (item.get("metadata") or {}).get("name", "")).startswith(name)
                       and _GENERATED_SUFFIX.fullmatch(n[len(name):]))
        if len(names) != 1:
            generated = f"; generated ones: {', '.join(names)} (give the one the webhook uses)" if names else ""
            fail(COMMAND, f"ConfigMap {namespace}/{name} not found{generated}")
        name = names[0]
        found = api.get(kubeapi.path("v1", "configmaps", namespace, name), timeout=REQUEST_TIMEOUT)
    data = found.get("data") or {}
    return name, {k: v for k, v in data.items() if isinstance(v, str)}


class _Errors(argparse.ArgumentParser):
    """For `resolve_env`: a bad RAY_FT_WEBHOOK_* value (environment or ConfigMap) is this command's error."""

    def error(self, message: str) -> NoReturn:
        fail(COMMAND, message)


def run(args: argparse.Namespace) -> int:
    from urllib3.exceptions import HTTPError

    from webhook.common import kube
    from webhook.common.errors import InputError

    progress = _Progress()
    try:
        api = kube.api_client(args.kubeconfig)
        if args.config_from is not None:
            namespace, name = args.config_from
            name, data = _config_map(api, namespace, name)
            resolve_env(_Errors(), args, data, where=f"ConfigMap {namespace}/{name}: ")
        else:
            resolve_env(_Errors(), args)
        settings = settings_from(args)
        scope = None if args.all_namespaces else (
            args.namespace or kube.current_namespace(args.kubeconfig) or "default")
        objects = _rayclusters(api, scope, args.chunk_size, progress)
        heads = _head_pods(api, scope, args.chunk_size, progress)
        namespaces = _namespaces(api, scope, args.chunk_size, progress)
    except InputError as exc:
        fail(COMMAND, str(exc))
    except ApiError as exc:
        fail(COMMAND, f"Kubernetes API: HTTP {exc.status} {exc.reason}")
    except (HTTPError, OSError) as exc:
        fail(COMMAND, f"cannot reach the Kubernetes API: {_reason(exc)}")

    clusters = [parse_raycluster(obj) for obj in objects]
    reports = [inspect_cluster(c, heads.get((c.namespace, c.name), []), settings, clusters, namespaces.get)
               for c in clusters]
    reports.sort(key=lambda r: (r.namespace, r.name))
    progress.note(f"checked {len(reports)} RayClusters")
    if args.output == "json":
        sys.stdout.write(orjson.dumps([as_json(r) for r in reports], option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(table(reports, "all namespaces" if scope is None else f"namespace {scope}"))
    return exit_code(reports)


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split())[:200]


def exit_code(reports: Sequence[ClusterReport]) -> int:
    """0 when no counted cluster is incomplete (FT off, skipped and deleting ones are not counted), else 1."""
    return 1 if any(r.status == Status.INCOMPLETE for r in reports) else 0


def as_json(r: ClusterReport) -> dict[str, Any]:
    """One cluster's report with stable keys; never a secret value (see core.inspection)."""
    return {
        "namespace": r.namespace,
        "name": r.name,
        "ft": str(r.ft),
        "why": r.why,
        "status": str(r.status),
        "deleting": r.deleting,
        "head": {"status": str(r.head.status), "pod": r.head.pod, "missing": list(r.head.missing),
                 "stale": list(r.head.stale), "detail": r.head.detail},
        "values": [{"name": n, "value": v, "source": s} for n, v, s in r.values],
        "findings": list(r.findings),
        "gaps": list(r.gaps),
    }


def _columns(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def table(reports: Sequence[ClusterReport], scope: str) -> str:
    """The summary table (NAMESPACE, RAYCLUSTER, FT, HEAD, STATUS), then a block per cluster: why FT is on or
    off, the head pod, each value and its source, and the findings (`incomplete:` marks the gaps)."""
    if not reports:
        return f"No RayClusters in {scope}.\n"
    rows = [("NAMESPACE", "RAYCLUSTER", "FT", "HEAD", "STATUS")]
    rows += [(r.namespace, r.name, str(r.ft), str(r.head.status), str(r.status)) for r in reports]
    lines = _columns(rows)
    for r in reports:
        lines += ["", f"{r.namespace}/{r.name}: FT {r.ft} ({r.why})" + (" - being deleted" if r.deleting else "")]
        status = "not checked (the webhook gives it nothing)" if r.head.status == Head.NOT_APPLICABLE else r.head.status
        head = f"  head pod {r.head.pod}: {status}" if r.head.pod else f"  {status}"
        lines.append(head + (f" ({r.head.detail})" if r.head.detail else ""))
        if r.head.missing:
            lines.append(f"    missing on the head: {', '.join(r.head.missing)}")
        lines += [f"    {line}" for line in r.head.stale]
        if r.values:
            lines += _columns([(n, v, s) for n, v, s in r.values], indent="  ")
        gaps = set(r.gaps)
        lines += [f"  {'incomplete' if f in gaps else 'warning'}: {f}" for f in r.findings]
    return "\n".join(lines) + "\n"
