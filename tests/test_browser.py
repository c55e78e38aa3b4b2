"""report.html in a real browser: headless Debian Chromium renders one point per offspring.

Skipped (with the reason printed) where /usr/bin/chromium is absent; nothing is installed.
The screenshot is kept in the test's tmp folder and copied to artifacts/report.png.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evostitch.results.run import read_run
from test_report import invoke, tiny_run

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium to run it)"
    ),
]


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def test_report_renders_in_chromium(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory, "browser")
    invoke("report", run)
    page = run / "report.html"
    dom = chromium(page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    _, records = read_run(run)
    points = re.findall(r"<circle[^>]*\bdata-id=\"(\d+)\"", dom.stdout)
    assert sorted(map(int, points)) == sorted(r.id for r in records)
    assert len(re.findall(r"<circle[^>]*\bdata-node=", dom.stdout)) > 20  # the parents' diagram
    assert re.search(r'<circle[^>]*class="pt [^"]*\bsel\b[^>]*data-id=', dom.stdout)  # selected
    assert "<tr data-row=" in dom.stdout
    shot = tmp_path / "report.png"
    done = chromium(
        page, tmp_path / "profile-shot", "--window-size=1280,1400", f"--screenshot={shot}"
    )
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report.png")
