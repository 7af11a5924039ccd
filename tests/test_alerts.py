"""The chart's PrometheusRule with the real promtool (hack/promtool.sh, from Debian's prometheus package): the rules
rendered by helm pass `promtool check rules`, and `promtool test rules` runs tests/alerts/alerts_test.yaml, where
each alert fires on the series that should wake someone and stays quiet on their neighbours. Every alert has a
runbook line in the README."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from testkit import chart
from testkit.ci import helm, promtool
from testkit.paths import REPO

TESTS = Path(__file__).parent / "alerts" / "alerts_test.yaml"


def rules(*args: str) -> dict[str, Any]:
    """The PrometheusRule's spec (a Prometheus rule file) rendered with `args`."""
    objs = chart.template(helm(), "--set", "prometheusRule.enabled=true", *args)
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    spec: dict[str, Any] = rule["spec"]
    return spec


def alert_names(spec: dict[str, Any]) -> list[str]:
    return [r["alert"] for g in spec["groups"] for r in g["rules"]]


@pytest.mark.parametrize("args", [[], ["--set", "prometheusRule.apiserverSelector=job=\"apiserver\"",
                                       "--set", "prometheusRule.runbookBaseURL=https://wiki.example/rfw",
                                       "--set", "prometheusRule.certificateExpiryDays=30"]],
                         ids=["defaults", "selector, runbook URL, 30 days"])
def test_promtool_check_rules(args: list[str], tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules(*args)))
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_names(rules()))} rules found" in out.stdout


def test_promtool_unit_tests_make_each_alert_fire_and_stay_quiet(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules()))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    out = subprocess.run([promtool(), "test", "rules", TESTS.name], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    # Each alert is shown firing, and quiet, at least once.
    cases = [case for test in yaml.safe_load(TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for name in alert_names(rules()):
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), f"{name} never fires in the tests"
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), f"{name} never stays quiet"


def test_a_broken_expectation_fails(tmp_path: Path) -> None:
    """The negative control: promtool does compare (a firing alert expected quiet fails the run)."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules()))
    tests = yaml.safe_load(TESTS.read_text())
    firing = next(c for t in tests["tests"] for c in t["alert_rule_test"] if c["exp_alerts"])
    firing["exp_alerts"] = []
    (tmp_path / TESTS.name).write_text(yaml.safe_dump(tests))
    out = subprocess.run([promtool(), "test", "rules", TESTS.name], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode != 0 and firing["alertname"] in out.stdout + out.stderr


def test_every_alert_has_a_runbook_line_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n### Alerts\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(RayFTWebhook\w+)` \|", section, re.MULTILINE)
    assert documented == alert_names(rules())
    for obj in (r for g in rules()["groups"] for r in g["rules"]):
        assert obj["annotations"]["runbook"] == f"README, Alerts: {obj['alert']}"
        assert obj["labels"]["severity"] in ("critical", "warning")
