"""deploy/systemd: units that systemd accepts, and a worker that stops without losing tasks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.files import SYSTEMD, cluster_config, longest_task_s, sample_config, unit

#: Where the units expect turnout (deploy/README.md installs it there).
INSTALLED_TURNOUT = "/opt/turnout/bin/turnout"
UNITS = {"turnout-worker@.service": "turnout-worker@cheap.service", "turnout-flower.service": None, "turnout-metrics.service": None}


@pytest.mark.parametrize("template", UNITS)
def test_systemd_accepts_the_unit(template: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; test_the_worker_unit_stops_gracefully checks the structure")
    # Given the unit pointing at this checkout's turnout, since verify checks that ExecStart exists
    text = (SYSTEMD / template).read_text().replace(INSTALLED_TURNOUT, str(Path(sys.executable).with_name("turnout")))
    path = tmp_path / (UNITS[template] or template)
    path.write_text(text)
    # When systemd verifies it (a template unit only as one of its instances)
    result = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=30)
    # Then it has nothing to say: unknown keys and bad values are only warnings, so stderr counts
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_the_worker_unit_takes_the_pool_as_its_instance_name() -> None:
    service = unit(SYSTEMD / "turnout-worker@.service")["Service"]
    assert service["ExecStart"].split()[:4] == [INSTALLED_TURNOUT, "worker", "--pool", "%i"]
    assert service["Restart"] == "always"
    assert service["EnvironmentFile"].startswith("/etc/turnout/")


def test_the_worker_unit_stops_gracefully(tmp_path: Path) -> None:
    service = unit(SYSTEMD / "turnout-worker@.service")["Service"]
    # SIGTERM to the main process only: Celery's warm shutdown lets running tasks finish
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    longest = max(longest_task_s(sample_config()), longest_task_s(cluster_config(tmp_path)))
    assert int(service["TimeoutStopSec"]) > longest
