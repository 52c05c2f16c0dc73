"""The HTML batch report renders its charts in a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    argv = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_report_renders_every_chart_in_a_browser(fresh_fake: Cluster, tmp_path: Path) -> None:
    # Given a finished batch with answers on both tiers, fallbacks and an error line
    fresh_fake.fake(fail_models={"fake-frontier": 503})
    lines = [{"custom_id": f"r{i}", "prompt": f"What is {i} + 1?", "model": "tier:cheap"} for i in range(20)]
    lines += [{"custom_id": f"f{i}", "prompt": "Prove it.", "model": "tier:frontier"} for i in range(5)]
    fresh_fake.run(lines + ["not json"], "report-batch")

    # When `turnout report` writes it
    page = tmp_path / "report.html"
    env = dict(os.environ, TURNOUT_REDIS_URL=fresh_fake.redis_url)
    made = subprocess.run(
        [sys.executable, "-m", "workers.cli", "report", "report-batch", "-o", str(page), "-c", str(fresh_fake.config_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr

    # Then the page needs nothing from the network
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    # And a browser's DOM holds every chart with drawn bars and the throughput line
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout
    for chart in ("tier-mix", "cost", "latency-cheap", "errors", "deployments", "fallbacks", "throughput"):
        assert f'id="{chart}"' in dom
    assert dom.count('class="bar"') >= 8 and 'class="line"' in dom
    # And a screenshot of it is far from blank
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,1800", page.as_uri(), profile=tmp_path / "profile")
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    coloured = ((abs(pixels[..., 0] - pixels[..., 2]) > 0.2)).mean()  # the bars are blue and amber, not grey
    assert coloured > 0.01
