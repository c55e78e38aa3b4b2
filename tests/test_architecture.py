"""The architecture rules of docs/ARCHITECTURE.md hold (they also run as `lint-imports`)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MAX_LINES = 420  # "no module over ~400 lines": short files a reader can hold in their head


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def test_modules_are_short():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "src" / "evostitch").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_core_imports_without_ray_matplotlib_typer():
    code = (
        "import sys, evostitch, evostitch.supernet, evostitch.training, evostitch.evaluation, "
        "evostitch.evolution.loop, evostitch.evolution.algorithms, evostitch.evolution.stitching\n"
        "bad = [m for m in ('ray', 'matplotlib', 'typer') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_demo_extra_is_imported_only_where_bundled_data_is_read():
    # `pip install evostitch` without [demo] must still run every command but the demo
    code = (
        "import sys, evostitch.cli, evostitch.api, evostitch.data, evostitch.demo\n"
        "bad = [m for m in ('mlxtend', 'sklearn', 'stardist') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
