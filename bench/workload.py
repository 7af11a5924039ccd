"""The benchmark's inputs: RayClusters and realistic AdmissionReviews of KubeRay pods (hack/testkit/kuberay_pods.py).

The mix the servers get: three FT RayClusters (FT through our annotations, through
`gcsFaultToleranceOptions`, and through the admin's defaults), one with FT off, and plain non-Ray pods;
head and worker pods of each, with `managedFields`, about 9 KB per AdmissionReview as the apiserver
sends it (with userInfo, resource, options). Written as files the servers and the load generator read.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from testkit.kuberay_pods import env_secret, pod, raycluster

NAMESPACE = "bench"
FILLERS_PER_FILE = 500
# The admin defaults every server runs with (`serve` flags and their equivalents).
DEFAULT_REDIS_ADDRESS = "redis.ray-system.svc:6379"
DEFAULT_REDIS_PASSWORD_SECRET = "redis-admin/password"


def clusters() -> list[dict[str, Any]]:
    """The bench's RayClusters: three forms of FT on, and one with FT off."""
    return [
        raycluster(name="ft-annotations", namespace=NAMESPACE, uid="11111111-aaaa-4bbb-8ccc-000000000001",
                   annotations={"ray.io/ft-enabled": "true", "ray-ft-webhook.io/redis-address": "redis-a:6379",
                                "ray-ft-webhook.io/redis-password-secret": "redis-a/pw"}),
        raycluster(name="ft-options", namespace=NAMESPACE, uid="11111111-aaaa-4bbb-8ccc-000000000002",
                   options={"redisAddress": "redis-b:6379", "externalStorageNamespace": "ft-options-ns",
                            "redisPassword": {"valueFrom": env_secret("x", "redis-b")["valueFrom"]}}),
        raycluster(name="ft-defaults", namespace=NAMESPACE, uid="11111111-aaaa-4bbb-8ccc-000000000003",
                   annotations={"ray.io/ft-enabled": "true"}),
        raycluster(name="ft-off", namespace=NAMESPACE, uid="11111111-aaaa-4bbb-8ccc-000000000004"),
    ]


def filler_cluster(i: int) -> dict[str, Any]:
    """One of many extra RayClusters that only fill the cache (cache-size experiment)."""
    return raycluster(name=f"filler-{i:05d}", namespace=f"team-{i % 50:02d}", uid=f"00000000-0000-4000-8000-{i:012d}",
                      annotations={"ray.io/ft-enabled": "true", "ray-ft-webhook.io/redis-address": f"redis-{i}:6379"})


def review(obj: dict[str, Any], uid: str) -> dict[str, Any]:
    """An AdmissionReview v1 for a Pod CREATE, with the fields the apiserver fills in."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": obj["metadata"].get("name", ""),
            "namespace": obj["metadata"].get("namespace", NAMESPACE),
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:ray-system:kuberay-operator",
                         "uid": "5d1f2c3b-8a9e-4f70-9b1c-2e3d4f5a6b7c",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:ray-system",
                                    "system:authenticated"]},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kuberay-operator"},
        },
    }


def _probe(head: bool, initial: int) -> dict[str, Any]:
    """KubeRay's exec probe (>= 1.1) checking the raylet and, on the head, GCS."""
    checks = "wget -T 2 -q -O- http://localhost:52365/api/local_raylet_healthz | grep success"
    if head:
        checks += " && wget -T 2 -q -O- http://localhost:8265/api/gcs_healthz | grep success"
    return {"exec": {"command": ["bash", "-c", checks]}, "initialDelaySeconds": initial, "timeoutSeconds": 2,
            "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 120 if initial == 10 else 10}


def apiserver_view(p: dict[str, Any]) -> dict[str, Any]:
    """The pod as a mutating webhook sees it: KubeRay's probes, resources and ports, the apiserver's defaults
    and the service account token volume (admission runs after defaulting)."""
    p = copy.deepcopy(p)
    head = p["metadata"]["labels"].get("ray.io/node-type") == "head"
    spec = p["spec"]
    container = spec["containers"][0]
    if head:
        container["ports"] = [{"containerPort": port, "name": name, "protocol": "TCP"} for name, port in (
            ("gcs-server", 6379), ("dashboard", 8265), ("client", 10001), ("metrics", 8080), ("serve", 8000))]
    container["resources"] = {"limits": {"cpu": "4", "memory": "16Gi"}, "requests": {"cpu": "4", "memory": "16Gi"}}
    container["livenessProbe"] = _probe(head, 30)
    container["readinessProbe"] = _probe(head, 10)
    container["volumeMounts"] = [*container.get("volumeMounts", []), {
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": "kube-api-access-7q2xk",
        "readOnly": True}]
    container.update({"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
                      "terminationMessagePolicy": "File"})
    spec["volumes"] = [*spec.get("volumes", []), {"name": "kube-api-access-7q2xk", "projected": {
        "defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                        "path": "namespace"}]}}]}}]
    spec.update({
        "dnsPolicy": "ClusterFirst", "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0, "schedulerName": "default-scheduler", "securityContext": {}, "serviceAccount": "default",
        "serviceAccountName": "default", "terminationGracePeriodSeconds": 30,
        "tolerations": [{"effect": "NoExecute", "key": f"node.kubernetes.io/{k}", "operator": "Exists",
                         "tolerationSeconds": 300} for k in ("not-ready", "unreachable")],
    })
    # What users commonly put into the RayCluster's pod templates (copied onto every pod).
    p["metadata"]["labels"].update({"app.kubernetes.io/instance": "training-platform", "team": "ml-infra",
                                    "cost-center": "cc-4711", "kueue.x-k8s.io/queue-name": "ml-batch"})
    spec["nodeSelector"] = {"node.kubernetes.io/instance-type": "m6i.4xlarge", "topology.kubernetes.io/zone": "eu-1a"}
    spec["imagePullSecrets"] = [{"name": "registry-credentials"}]
    spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "workload-class", "operator": "In", "values": ["ray", "batch"]},
                              {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"ray.io/cluster": p["metadata"]["labels"]["ray.io/cluster"]}}}}]}}
    for entry in p["metadata"].get("managedFields", []):
        _manage_kuberay_fields(entry["fieldsV1"], container)
        entry["fieldsV1"]["f:spec"].update({"f:affinity": {".": {}, "f:nodeAffinity": {}, "f:podAntiAffinity": {}},
                                            "f:imagePullSecrets": {}, "f:nodeSelector": {}})
    return p


def _manage_kuberay_fields(fields: dict[str, Any], container: dict[str, Any]) -> None:
    """What the kuberay-operator's field manager also owns: probes, resources, ports, mounts, init containers."""
    def probe() -> dict[str, Any]:
        return {".": {}, "f:exec": {".": {}, "f:command": {}}, "f:failureThreshold": {}, "f:initialDelaySeconds": {},
                "f:periodSeconds": {}, "f:successThreshold": {}, "f:timeoutSeconds": {}}

    owned = next(iter(fields["f:spec"]["f:containers"].values()))
    owned["f:livenessProbe"] = probe()
    owned["f:readinessProbe"] = probe()
    owned["f:resources"] = {".": {}, "f:limits": {".": {}, "f:cpu": {}, "f:memory": {}},
                            "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}}
    owned["f:ports"] = {".": {}, **{
        f'k:{{"containerPort":{port["containerPort"]},"protocol":"TCP"}}': {
            ".": {}, "f:containerPort": {}, "f:name": {}, "f:protocol": {}} for port in container.get("ports", [])}}
    owned["f:volumeMounts"] = {".": {}, 'k:{"mountPath":"/dev/shm"}': {".": {}, "f:mountPath": {}, "f:name": {}}}
    fields["f:spec"]["f:volumes"] = {".": {}, 'k:{"name":"shared-mem"}': {
        ".": {}, "f:emptyDir": {".": {}, "f:medium": {}, "f:sizeLimit": {}}, "f:name": {}}}
    fields["f:spec"]["f:initContainers"] = {".": {}, 'k:{"name":"wait-gcs-ready"}': {
        ".": {}, "f:args": {}, "f:command": {}, "f:env": {".": {}, 'k:{"name":"FQ_RAY_IP"}': {
            ".": {}, "f:name": {}, "f:value": {}}}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
        "f:resources": {".": {}, "f:limits": {".": {}, "f:cpu": {}, "f:memory": {}},
                        "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}},
        "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}}


def plain_pod(source: dict[str, Any], n: int) -> dict[str, Any]:
    """A non-Ray pod of about the same size (a ReplicaSet's), which must pass untouched."""
    p = copy.deepcopy(source)
    p["metadata"]["labels"] = {"app": "web", "pod-template-hash": "7d9f8c6b5"}
    p["metadata"]["name"] = f"web-7d9f8c6b5-{n:05d}"
    p["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5",
                                         "uid": "22222222-aaaa-4bbb-8ccc-000000000001", "controller": True,
                                         "blockOwnerDeletion": True}]
    return p


def mix() -> list[tuple[str, dict[str, Any]]]:
    """(label, AdmissionReview) pairs: 6 FT-on, 2 FT-off, 2 non-Ray."""
    out: list[tuple[str, dict[str, Any]]] = []
    for rc in clusters():
        for role in ("head", "worker"):
            label = f"{rc['metadata']['name']}/{role}"
            obj = apiserver_view(pod(rc, role, managed_fields=True))
            out.append((label, review(obj, f"uid-{label.replace('/', '-')}")))
    source = apiserver_view(pod(clusters()[0], "worker", managed_fields=True))
    out += [(f"non-ray/{n}", review(plain_pod(source, n), f"uid-non-ray-{n}")) for n in range(2)]
    return out


def padded_head(target_bytes: int) -> dict[str, Any]:
    """An FT head pod's AdmissionReview of about `target_bytes`: minimal, or padded with managedFields entries
    (the field that makes real pods large) and extra env entries on a sidecar container."""
    rc = clusters()[0]
    if target_bytes <= 2048:
        p = pod(rc, "head")
        container = p["spec"]["containers"][0]
        container["env"] = []
        container.pop("ports", None)
        container["args"] = ["ray start --head --block"]
        p["spec"].pop("volumes", None)
        container.pop("volumeMounts", None)
        p["metadata"]["labels"] = {k: v for k, v in p["metadata"]["labels"].items()
                                   if k in ("ray.io/node-type", "ray.io/cluster")}
        return review(p, f"uid-size-{target_bytes}")
    p = apiserver_view(pod(rc, "head", managed_fields=True))
    base = p["metadata"]["managedFields"][0]
    i = 0
    while len(orjson.dumps(review(p, "x"))) < target_bytes - 1200:
        entry = copy.deepcopy(base)
        entry["manager"] = f"controller-{i}"
        entry["time"] = f"2026-11-25T10:{i // 60 % 60:02d}:{i % 60:02d}Z"
        p["metadata"]["managedFields"].append(entry)
        i += 1
    p["spec"]["containers"].append({"name": "sidecar", "image": "busybox:1.37", "env": []})
    while len(orjson.dumps(review(p, "x"))) < target_bytes:
        n = len(p["spec"]["containers"][1]["env"])
        p["spec"]["containers"][1]["env"].append({"name": f"SIDECAR_SETTING_{n:05d}", "value": "x" * 24})
    return review(p, f"uid-size-{target_bytes}")


def write_jsonl(path: Path, reviews: list[dict[str, Any]]) -> Path:
    """One compact JSON document per line: the load generator's input."""
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in reviews))
    return path


def write_clusters(folder: Path, items: list[dict[str, Any]], fillers: int = 0) -> Path:
    """The RayCluster folder for every server: one JSON file per RayCluster of the mix, then the fillers."""
    folder.mkdir(parents=True, exist_ok=True)
    for rc in items:
        (folder / f"{rc['metadata']['name']}.json").write_bytes(orjson.dumps(rc))
    # Fillers in `kind: List` files of 500, like the pages of a paginated LIST: one file of 10,000 makes the
    # loader hold every raw object at once (a ~300 MB RSS peak that the process keeps).
    for start in range(0, fillers, FILLERS_PER_FILE):
        items = [filler_cluster(i) for i in range(start, min(start + FILLERS_PER_FILE, fillers))]
        listing = {"apiVersion": "v1", "kind": "List", "items": items}
        (folder / f"fillers-{start:05d}.yaml").write_bytes(orjson.dumps(listing))
    return folder
