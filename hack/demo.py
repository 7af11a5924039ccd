#!/usr/bin/env python3
"""`make demo`: the real KubeRay operator creates Ray pods on a local control plane; ray-ft-webhook configures them.

Builds what is missing first (hack/testbin.sh: etcd, kube-apiserver, kube-controller-manager, kubectl;
hack/kuberay.sh: the newest pinned KubeRay operator; minutes on a fresh machine, progress on stderr). Then
starts, each as a process of its own on 127.0.0.1 in one temporary folder: etcd, kube-apiserver and
kube-controller-manager; the webhook (the real `ray-ft-webhook serve` over TLS, as its least-privilege
identity from manifests/base, registered by manifests/base's MutatingWebhookConfiguration with url +
caBundle); and the operator (as its own identity, bound to KubeRay's ClusterRole). It applies KubeRay's
quick-start sample `ray-cluster.external-redis.yaml` from the operator's Go module, plus the same RayCluster
with nothing but `ray.io/ft-enabled: "true"` (the admin defaults at work), waits for their head and worker
pods (they stay Pending: there is no kubelet), and prints what KubeRay set next to what the webhook added.

Ctrl-C or SIGTERM stops everything by PID and removes the temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "hack")]  # testkit lives in hack/, which is not an installed package

from kubernetes import client, config  # noqa: E402

from testkit import kube, processes  # noqa: E402
from testkit import kuberay as harness  # noqa: E402
from testkit.controlplane import ControlPlane, install_webhook_identity  # noqa: E402
from testkit.paths import TESTBIN_SCRIPT  # noqa: E402
from testkit.webhook import Webhook  # noqa: E402

NAMESPACE = "default"
# The admin's defaults point at the sample's own Redis, so the annotation-only cluster gets a working setup.
ADMIN_ARGS = ["--default-redis-address", "redis:6379", "--default-redis-password-secret", "redis-password-secret"]
ANNOTATION_ONLY = "raycluster-ft-annotation-only"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(text: str) -> Iterator[None]:
    say(f"==> {text} ...")
    began = time.monotonic()
    yield
    say(f"    done in {time.monotonic() - began:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/demo.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default=harness.pinned_versions()[-1],
                        help="KubeRay version, one of hack/kuberay/ (default: the newest pinned)")
    parser.add_argument("--exit-after-setup", action="store_true", help="stop as soon as the tables are printed")
    args = parser.parse_args(argv)

    # SIGTERM takes the same way out as Ctrl-C, so every process is stopped and the folder removed. SIGINT is
    # set too: Python leaves it ignored when started that way (e.g. in the background of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="ray-ft-demo-"))
    cp: ControlPlane | None = None
    hook: Webhook | None = None
    operator: harness.OperatorProcess | None = None
    try:
        with step("building what is missing: etcd, kube-apiserver, kube-controller-manager, kubectl (hack/testbin.sh)"):
            testbin = Path(processes.run_script(
                TESTBIN_SCRIPT, ["kube-apiserver", "etcd", "kube-controller-manager", "kubectl"]
            ).strip())
        with step(f"building what is missing: KubeRay's operator {args.version} (hack/kuberay.sh)"):
            kuberay = harness.build(args.version)

        with step("starting etcd, kube-apiserver and kube-controller-manager"):
            cp = ControlPlane(testbin, with_controller_manager=True, base_dir=tmp)
            cp.start()
        api = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))
        dyn = kube.dynamic_client(api, tmp)
        with step(f"installing KubeRay {args.version}'s CRDs (server-side apply; they are ~4 MB)"):
            harness.install_crds(api, dyn, kuberay)

        with step("starting the webhook as its own identity and registering it from manifests/"):
            identity = install_webhook_identity(cp, api, dyn, tmp / "webhook.kubeconfig")
            hook = Webhook(tmp / "webhook", ["--kubeconfig", str(identity), *ADMIN_ARGS])
            hook.start()
            registration = client.AdmissionregistrationV1Api(api)
            registration.create_mutating_webhook_configuration(cast(Any, hook.configuration()))
            harness.wait_until_called(api)

        with step(f"starting KubeRay's operator {args.version} as {harness.OPERATOR_USER}"):
            kubeconfig = harness.install_operator_identity(cp, api, dyn, kuberay, tmp / "operator.kubeconfig")
            operator = harness.OperatorProcess(kuberay, kubeconfig, tmp)
            operator.start()

        sample_rc, others = harness.split_sample(kuberay.sample())
        variant = harness.without_redis_settings(sample_rc, ANNOTATION_ONLY, {"ray.io/ft-enabled": "true"})
        names = [sample_rc["metadata"]["name"], ANNOTATION_ONLY]
        with step(f"applying {harness.SAMPLE} and {ANNOTATION_ONLY}; waiting for KubeRay's pods"):
            for obj in [*others, sample_rc, variant]:
                kube.apply(dyn, obj, NAMESPACE)
            pods = {name: harness.wait_for_ray_pods(api, NAMESPACE, name) for name in names}

        print(f"\nKubeRay {args.version} created these pods; the webhook runs with {' '.join(ADMIN_ARGS)}.")
        for name in names:
            how = ("FT from the sample's own settings" if name != ANNOTATION_ONLY
                   else 'only ray.io/ft-enabled: "true"; Redis from the admin defaults')
            for role in ("head", "worker"):
                pod = pods[name][role]
                title = f"\n{role} pod {NAMESPACE}/{pod['metadata']['name']} (RayCluster {name}: {how})"
                print(harness.side_by_side(title, *harness.split_by_author(pod)))
        webhook_pid = hook.process.proc.pid if hook.process is not None else None
        pids = {**cp.pids(), "webhook": webhook_pid, "ray-operator": operator.pid}
        rss = ", ".join(f"{n} {harness.peak_rss_bytes(pid) / 2**20:.0f}" for n, pid in pids.items() if pid)
        print(f"\npeak memory (RSS, MiB): {rss}")
        print("\nLook around from another shell:")
        print(f"  export KUBECONFIG={cp.admin_kubeconfig} PATH={testbin}:$PATH; kubectl get pods -A")
        print(f"  logs: {operator.log_path}, {tmp / 'webhook'}/webhook-*.log, {cp.workdir}/*.log")
        if args.exit_after_setup:
            return 0
        print("\nCtrl-C stops everything.", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        say("\n==> stopping")
        return 0
    except Exception:
        if operator is not None:
            say(f"--- ray-operator log ---\n{operator.logs(40)}")
        if cp is not None:
            say(cp.logs(tail_lines=20))
        raise
    finally:
        # Ignore further Ctrl-C while stopping, so the stop itself is never cut short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if operator is not None:
            operator.stop()
        if hook is not None:
            hook.stop()
        if cp is not None:
            cp.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        say(f"==> stopped every process and removed {tmp}")


if __name__ == "__main__":
    sys.exit(main())
