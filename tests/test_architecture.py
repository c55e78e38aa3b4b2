"""The architecture rules of docs/ARCHITECTURE.md hold (they also run as `lint-imports`)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MAX_LINES = 420  # "no module over ~400 lines": short files a reader can hold in their head
MAX_BODY, MAX_PARAMS = 60, 10  # functions a reader can hold (issue 38)
# the CLI's commands and the API's entry points mirror each other's options: no cap on those
ENTRY_POINTS = {"api.py": {"match", "stitch", "search", "resume"}}


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


def function_sizes(path: Path) -> list[tuple[str, int, int, bool]]:
    """(name, body lines without the docstring, parameters without self/cls, whether it is a
    CLI command) of every function in a module, nested ones included."""
    rows = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:] or body  # a docstring alone counts as the body
        a = node.args
        names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
        params = len(names) + (a.vararg is not None) + (a.kwarg is not None)
        params -= bool(names) and names[0] in ("self", "cls")
        command = any("command" in ast.unparse(d) for d in node.decorator_list)
        rows.append((node.name, body[-1].end_lineno - body[0].lineno + 1, params, command))
    return rows


def test_functions_are_short_and_take_few_parameters():
    src = ROOT / "src" / "evostitch"
    breaking = {}
    for path in src.rglob("*.py"):
        module = str(path.relative_to(src))
        for name, lines, params, command in function_sizes(path):
            entry = command or name in ENTRY_POINTS.get(module, ())
            if lines > MAX_BODY or (params > MAX_PARAMS and not entry):
                breaking[f"{module}:{name}"] = (lines, params)
    assert not breaking, f"(body lines, parameters) over {MAX_BODY} / {MAX_PARAMS}: {breaking}"


def test_the_size_rules_see_what_they_should(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "class C:\n"
        "    def f(self, a, b=1, *c, d, **e):\n"
        '        """Doc."""\n'
        "        x = 1\n"
        "\n"
        "        return x\n"
        "@app.command()\n"
        "def g():\n"
        '    """Only a docstring."""\n'
    )
    assert sorted(function_sizes(path)) == [("f", 3, 5, False), ("g", 1, 0, True)]


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


def test_test_files_share_helpers_through_conftest_or_toys_only():
    """A test file imports no other test file: shared fixtures live in conftest.py and
    shared helpers in tests/toys.py (which Ray workers import by name)."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0].startswith("test_")]
    assert not offenders, offenders
