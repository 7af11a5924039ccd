"""Fixtures of the real-Ray tier: one namespace + Redis for the whole session, prerequisites, a summary.

The tier is skipped on a machine without Redis/Ray/namespaces, but never in CI: there a missing tool must
fail the run, or a green CI would prove nothing (`bash hack/install-realray.sh` installs everything).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from .cluster import Cluster, Tier
from .node import missing_prerequisites

INSTALL_HINT = "bash hack/install-realray.sh"


@dataclass
class TierReport:
    """What the terminal summary prints: wall time and memory of the tier, and per-test notes."""

    wall_s: float = 0.0
    peak_rss_mib: float = 0.0
    peak_pss_mib: float = 0.0
    peak_processes: int = 0
    notes: list[str] = field(default_factory=list)


_REPORT = pytest.StashKey[TierReport]()


def require_prerequisites() -> None:
    """Fail loudly in CI, skip elsewhere, when the machine cannot run the tier."""
    missing = missing_prerequisites()
    if not missing:
        return
    reason = f"real-Ray tier needs {', '.join(missing)}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must install them with `{INSTALL_HINT}`", pytrace=False)
    pytest.skip(f"{reason}; enable with `{INSTALL_HINT}`")


@pytest.fixture(scope="session")
def tier(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tier]:
    """The session's network namespace and Redis (password random per run); torn down by PID at the end."""
    require_prerequisites()
    report = request.config.stash.setdefault(_REPORT, TierReport())
    shared = Tier(tmp_path_factory.mktemp("realray"), redis_password=secrets.token_urlsafe(18))
    try:
        yield shared
    finally:
        shared.close()
        report.wall_s = shared.wall_s
        report.peak_rss_mib = shared.sampler.peak_rss_kib / 1024
        report.peak_pss_mib = shared.sampler.peak_pss_kib / 1024
        report.peak_processes = shared.sampler.peak_processes


@pytest.fixture
def clusters(tier: Tier) -> Iterator[list[Cluster]]:
    """Clusters a test creates; all stopped (by PID) when the test ends, however it ends."""
    made: list[Cluster] = []
    yield made
    for cluster in made:
        cluster.stop()


@pytest.fixture
def note(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """A test's timing notes, printed in the tier summary."""
    lines: list[str] = []
    yield lines
    report = request.config.stash.setdefault(_REPORT, TierReport())
    report.notes += [f"{request.node.name}: {line}" for line in lines]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    report = config.stash.get(_REPORT, None)
    if report is None or report.wall_s == 0:
        return
    terminalreporter.section("real-Ray tier")
    terminalreporter.line(
        f"wall {report.wall_s:.0f}s (namespace + Redis up to torn down); peak memory: RSS sum "
        f"{report.peak_rss_mib:.0f} MiB, PSS sum {report.peak_pss_mib:.0f} MiB over {report.peak_processes} processes"
    )
    for line in report.notes:
        terminalreporter.line(line)
