"""Memory of `serve --kubeconfig` (watch cache) after its first list of N RayClusters from a real apiserver.

    .venv/bin/python bench/watch_memory.py 0 1000 10000

Starts the local control plane (hack/testkit/controlplane.py, binaries from hack/testbin.sh), creates N
quick-start RayClusters, starts the real webhook against it and prints its VmRSS/VmHWM once it is ready.
"""

from __future__ import annotations

import concurrent.futures
import copy
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client, config

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "hack")]

from testkit.controlplane import RAYCLUSTER_CRD, ControlPlane  # noqa: E402
from testkit.kube import wait_established  # noqa: E402
from testkit.kuberay_pods import quickstart_raycluster  # noqa: E402
from testkit.processes import status_kib  # noqa: E402
from testkit.webhook import start_webhook  # noqa: E402


def measure(count: int) -> dict[str, int]:
    with ControlPlane() as cp:
        api = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))
        client.ApiextensionsV1Api(api).create_custom_resource_definition(RAYCLUSTER_CRD)
        wait_established(api, ["rayclusters.ray.io"])
        custom = client.CustomObjectsApi(api)
        base = quickstart_raycluster()
        del base["metadata"]["uid"]

        def create(i: int) -> None:
            rc = copy.deepcopy(base)
            rc["metadata"]["name"] = f"rc-{i}"
            custom.create_namespaced_custom_object("ray.io", "v1", "default", "rayclusters", rc)

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(create, range(count)))
        hook = start_webhook(Path(tempfile.mkdtemp()), ["--kubeconfig", str(cp.admin_kubeconfig)], ready_timeout=180)
        try:
            time.sleep(2)
            return {key: status_kib(hook.proc.pid, key) // 1024 for key in ("VmRSS", "VmHWM")}
        finally:
            hook.stop()


def main() -> None:
    print("| RayClusters | VmRSS MB | VmHWM MB |\n|---|---|---|")
    for count in map(int, sys.argv[1:] or ["0", "1000", "10000"]):
        mem = measure(count)
        print(f"| {count:,} | {mem['VmRSS']} | {mem['VmHWM']} |", flush=True)


if __name__ == "__main__":
    main()
