"""report.html in a real browser: headless Debian Chromium renders a point per offspring in
the zoomed view (every one in the full view), and no label over another.

Skipped (with the reason printed) where /usr/bin/chromium is absent; nothing is installed.
The screenshot is kept in the test's tmp folder and copied to artifacts/report.png.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import embedded_data, hit, invoke, tiny_run
from evostitch.results.solutions import read_run

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


def chromium(
    page: Path, profile: Path, *args: str, fragment: str = ""
) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri() + fragment]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def label_boxes(svg: str) -> list[dict]:
    """The boxes report.html placed its labels in (`data-box`: x, y, w, h)."""
    found = re.findall(r'<text class="label[^"]*"[^>]*\bdata-box="([^"]+)"', svg)
    return [dict(zip("xywh", map(float, box.split(",")), strict=True)) for box in found]


def assert_labels_apart(dom: str) -> None:
    """No two labels overlap, in the scatter (4 references) and in the diagram."""
    for name, least in (("scatter", 4), ("diagram", 2)):
        svg = re.search(rf'<svg id="{name}".*?</svg>', dom, re.S).group(0)
        boxes = label_boxes(svg)
        assert len(boxes) >= least, name
        assert not any(hit(a, b) for i, a in enumerate(boxes) for b in boxes[:i]), name


def test_report_renders_in_chromium(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory, "browser")
    invoke("report", run)
    page = run / "report.html"
    dom = chromium(page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    _, records = read_run(run)
    view = embedded_data(page.read_text())["view"]
    points = re.findall(r"<circle[^>]*\bdata-id=\"(\d+)\"", dom.stdout)
    inside = [r.id for r in records if -r.objectives[0] >= view["y"][0]]  # the zoomed view
    assert sorted(map(int, points)) == sorted(inside)
    assert len(inside) == len(records) - view["outside"]
    below = f"{view['outside']} of {len(records)} offspring below this view"
    assert (
        below if view["outside"] else f"all {len(records)} offspring in this view"
    ) in dom.stdout
    assert_labels_apart(dom.stdout)
    assert len(re.findall(r"<circle[^>]*\bdata-node=", dom.stdout)) > 20  # the parents' diagram
    assert re.search(r'<circle[^>]*class="pt [^"]*\bsel\b[^>]*data-id=', dom.stdout)  # selected
    assert "<tr data-row=" in dom.stdout
    full = chromium(page, tmp_path / "profile-full", "--dump-dom", fragment="#all")
    assert full.returncode == 0, full.stderr[-2000:]
    points = re.findall(r"<circle[^>]*\bdata-id=\"(\d+)\"", full.stdout)
    assert sorted(map(int, points)) == sorted(r.id for r in records)  # every offspring
    assert_labels_apart(full.stdout)
    shot = tmp_path / "report.png"
    done = chromium(
        page, tmp_path / "profile-shot", "--window-size=1280,1400", f"--screenshot={shot}"
    )
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report.png")
