"""The files in examples/ (used by `make run` and the README) stay what the fixtures and the code say."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from testkit.kuberay_pods import cleanup_pod, pod, quickstart_raycluster
from webhook.cli.render import render
from webhook.common.manifests import load_one
from webhook.core.settings import Settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_examples_match_the_fixtures() -> None:
    cluster = quickstart_raycluster()
    assert load_one(EXAMPLES / "rayclusters" / "raycluster-external-redis.yaml", "RayCluster") == cluster
    for role in ("head", "worker"):
        assert yaml.safe_load((EXAMPLES / f"pod-{role}.yaml").read_text()) == pod(cluster, role)
        review = json.loads((EXAMPLES / f"admissionreview-{role}.json").read_text())
        assert review["request"]["object"] == pod(cluster, role)


def test_example_pods_get_a_patch() -> None:
    cluster = quickstart_raycluster()
    for role in ("head", "worker"):
        assert render(cluster, pod(cluster, role), Settings()).patch


def test_cleanup_pod_example() -> None:
    cluster = quickstart_raycluster()
    example = yaml.safe_load((EXAMPLES / "pod-redis-cleanup.yaml").read_text())
    assert example == cleanup_pod(cluster, kuberay_ft=False)
    result = render(cluster, example, Settings())
    assert result.skipped is None and result.denied is None and result.patch
