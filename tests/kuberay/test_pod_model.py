"""The pod model (testkit.kuberay_pods) against the real operator, so it cannot drift.

For each pinned KubeRay version, RayClusters are applied, and the pods the observer webhook recorded (each
exactly as that operator submitted it, before our webhook) are compared field by field with what the model
builds from the same stored RayCluster with the same version and KubeRay's FT step (`kuberay_ft=True`).

Compared: generateName, namespace, labels, annotations, ownerReferences; the number of containers; the Ray
container's name, image, command, args, env (names, values and valueFrom, in order), ports (name and
number), volumeMounts and resources; the pod's volumes; each init container's name, image, command, env,
volumeMounts and resources, and the address its script health-checks. The same for the pod of the Redis
cleanup Job each operator creates when the RayCluster is deleted (`kuberay_pods.cleanup_pod`), with the
Job's uid (in its ownerReference and the Job controller's labels) taken from the stored Job.

Deliberately not compared (the model does not cover them; see its docstring):
- v1.6.2's `ray.io/upgrade-strategy-recreate-hash` annotation on the head (a hash of the spec's Go struct);
- what the apiserver sets or defaults: metadata.name/uid/resourceVersion/creationTimestamp/managedFields,
  status, imagePullPolicy, terminationMessagePath/Policy, port protocol, dnsPolicy, restartPolicy,
  schedulerName, securityContext, serviceAccountName, tolerations, priority, preemptionPolicy,
  enableServiceLinks, terminationGracePeriodSeconds;
- the liveness and readiness probes KubeRay adds to the Ray container;
- the text of the `wait-gcs-ready` script (the model has its own loop; only the address is compared);
- for v1.2.2, the order of the `ray start` flags: it writes them in Go's map order, which differs from pod
  to pod (v1.6.2 sorts them, as the model does); they are compared as a sorted list there.
"""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

import pytest
from kubernetes import client

from testkit import kuberay_pods
from testkit.ci import in_ci
from testkit.kube import wait_for
from testkit.kuberay import Observer, get_raycluster, wait_for_ray_pods, without_redis_settings

from .conftest import NO_GO, Stack

pytestmark = pytest.mark.kuberay

if not in_ci() and shutil.which("go") is None:
    pytest.skip(NO_GO, allow_module_level=True)

HEALTH_CHECK = re.compile(r"ray health-check --address ([^\s;]+)")
RAY_START = re.compile(r"^(.*?ray start(?: --head)?)(.*)$", re.S)


def compared(pod: dict[str, Any], unordered_flags: bool) -> dict[str, Any]:
    """The fields of `pod` the model is checked on (module docstring)."""
    meta, spec = pod["metadata"], pod["spec"]

    def line(text: str) -> str | list[str]:
        match = RAY_START.match(text)
        if not unordered_flags or match is None:
            return text
        return [match.group(1), *sorted(match.group(2).split())]

    def container(c: dict[str, Any]) -> dict[str, Any]:
        env = [{**e, "value": line(e["value"])} if e["name"] == "KUBERAY_GEN_RAY_START_CMD" else e
               for e in c.get("env") or []]
        return {
            "name": c["name"], "image": c.get("image"), "command": c.get("command"),
            "args": [line(a) for a in c.get("args") or []], "env": env, "volumeMounts": c.get("volumeMounts") or [],
            "resources": c.get("resources") or {},
            "ports": [{"name": p.get("name"), "containerPort": p["containerPort"]} for p in c.get("ports") or []],
        }

    def init(c: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": c["name"], "image": c.get("image"), "command": c.get("command"), "env": c.get("env") or [],
            "volumeMounts": c.get("volumeMounts") or [], "resources": c.get("resources") or {},
            "health-checks": sorted(set(HEALTH_CHECK.findall(" ".join(c.get("args") or [])))),
        }

    metadata = {key: meta.get(key) or {} for key in ("generateName", "namespace", "labels", "ownerReferences")}
    metadata["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items()
                               if k != kuberay_pods.RECREATE_HASH}
    return {
        "metadata": metadata,
        "containers": len(spec["containers"]),
        "ray container": container(spec["containers"][0]),
        "volumes": spec.get("volumes") or [],
        "initContainers": [init(c) for c in spec.get("initContainers") or []],
    }


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every path where `actual` differs from `expected`, with both values."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [d for key in sorted({*expected, *actual}, key=str)
                for d in differences(expected.get(key, "<absent>"), actual.get(key, "<absent>"), f"{path}.{key}")]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for d in differences(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [f"{path}: model {expected!r}, KubeRay {actual!r}"]


def variants(stack: Stack) -> dict[str, dict[str, Any]]:
    """The release's external-Redis sample (its own FT form) and the annotation-only form, renamed."""
    sample = stack.sample_raycluster
    renamed = {**sample, "metadata": {**sample["metadata"], "name": "rc-model-sample"}}
    annotation = without_redis_settings(sample, "rc-model-annotation", {kuberay_pods.FT_ENABLED: "true"})
    return {"model-sample": renamed, "model-annotation": annotation}


def test_recorded_pods_match_the_model(kuberay: Stack, kr_observer: Observer) -> None:
    api, namespace = kuberay.api, kuberay.namespace
    problems: list[str] = []
    for form, rc in variants(kuberay).items():
        name = kuberay.apply_cluster(form, rc)["metadata"]["name"]
        pods = wait_for_ray_pods(api, namespace, name)
        stored_rc = get_raycluster(api, namespace, name)  # what the operator read: pruned and defaulted
        for role, stored in pods.items():
            seen = kr_observer.seen(namespace, stored)
            assert seen is not None, f"the observer did not record the {role} pod of {name}"
            model = kuberay_pods.pod(stored_rc, role, version=kuberay.version, kuberay_ft=True)
            legacy = kuberay.version == kuberay_pods.LEGACY
            problems += [f"{kuberay.version} {name} {role}{d}"
                         for d in differences(compared(model, legacy), compared(seen, legacy))]
    assert not problems, "the pod model differs from what KubeRay submitted:\n" + "\n".join(problems)


def test_recorded_cleanup_pods_match_the_model(kuberay: Stack, kr_observer: Observer) -> None:
    """Deleting the clusters: the cleanup Job's pod, as the Job controller submitted it, is the model's."""
    api, namespace = kuberay.api, kuberay.namespace
    custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
    wanted = variants(kuberay)
    for form, rc in wanted.items():
        if form not in kuberay.clusters:  # run alone
            wait_for_ray_pods(api, namespace, kuberay.apply_cluster(form, rc)["metadata"]["name"])
    stored = {form: get_raycluster(api, namespace, kuberay.clusters[form]) for form in wanted}
    for rc in stored.values():
        custom.delete_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", rc["metadata"]["name"])
    problems: list[str] = []
    legacy = kuberay.version == kuberay_pods.LEGACY
    for rc in stored.values():
        name = rc["metadata"]["name"]
        selector = f"ray.io/cluster={name},ray.io/node-type=redis-cleanup"
        (job,) = wait_for(f"the Redis cleanup Job of {name}",
                          lambda s=selector: batch.list_namespaced_job(namespace, label_selector=s).items,
                          timeout=90, interval=0.5)
        key = {"metadata": {"labels": {"ray.io/cluster": name, "ray.io/node-type": "redis-cleanup",
                                       "ray.io/group": "headgroup"}}}
        seen = wait_for(f"the observer to record the cleanup pod of {name}",
                        lambda k=key: kr_observer.seen(namespace, k), timeout=60, interval=0.5)
        model = kuberay_pods.cleanup_pod(rc, kuberay.version, kuberay_ft=True)
        model_json = json.dumps(model).replace(kuberay_pods.JOB_UID, job.metadata.uid)
        problems += [f"{kuberay.version} {name} redis-cleanup{d}"
                     for d in differences(compared(json.loads(model_json), legacy), compared(seen, legacy))]
    assert not problems, "the cleanup pod model differs from what the Job controller submitted:\n" + "\n".join(problems)
