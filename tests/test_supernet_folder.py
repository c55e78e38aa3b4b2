"""Crafted supernetwork folders (issue 41, defect 8): whatever a received folder holds,
`Supernet.load` and `evostitch inspect` end in one line (exit 2 through the real entry
point), never a traceback, a hang or a write, and no code it names is imported.

Each folder is built as the issue's probe built it: a tiny saved supernetwork copied,
then a field of supernet.json edited, a safetensors file replaced (`save_file` of a NaN
tensor, with its sha256 updated as a crafter would), or a FIFO / folder / device link
put in place of a file (`os.mkfifo`). Loads run in a daemon thread with a deadline, so
a regression that blocks fails the test instead of hanging the suite; the cases of
FIFOs, folders and devices first run as `python -m evostitch.cli inspect` in a process
killed after a deadline (a reader blocked in open() may hold the GIL, which no thread
deadline survives). The CLI also runs in-process through `cli.app.main`."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_cli as cli_main
from conftest import tiny_supernet_folder
from evostitch import Supernet
from evostitch.errors import EvostitchError, ModelError, SupernetError
from evostitch.evaluation import holding
from evostitch.supernet import io, schema

cli_app = importlib.import_module("evostitch.cli.app")
pytestmark = pytest.mark.usefixtures("one_thread")
DEADLINE = 60  # seconds; a load of the demo folder takes about two


# ----- the folders -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny saved supernetwork (the session's: copy it before changing it)."""
    return tiny_supernet_folder(tmp_path_factory)


@pytest.fixture
def crafted(saved, tmp_path) -> Callable[[Callable[[Path], None]], Path]:
    """`crafted(mutate)`: a copy of the saved folder, changed by `mutate(folder)`."""

    def make(mutate: Callable[[Path], None]) -> Path:
        folder = tmp_path / "crafted"
        shutil.copytree(saved, folder)
        mutate(folder)
        return folder

    return make


def meta(folder: Path) -> dict:
    return json.loads((folder / "supernet.json").read_text())


def put(folder: Path, data: dict) -> None:
    (folder / "supernet.json").write_text(json.dumps(data))


def edit(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        data = meta(folder)
        change(data)
        put(folder, data)

    return mutate


def field(**values) -> Callable[[Path], None]:
    return edit(lambda data: data.update(values))


def tensors(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    """Rewrite a safetensors file and record its new sha256 (a careful crafter)."""

    def mutate(folder: Path) -> None:
        state = load_file(str(folder / name))
        change(state)
        save_file(state, str(folder / name))
        data = meta(folder)
        data["sha256"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        put(folder, data)

    return mutate


def first(state: dict) -> str:
    return next(k for k, v in state.items() if v.is_floating_point())


def nan(state: dict) -> None:
    state[first(state)] = torch.full_like(state[first(state)], float("nan"))


def inf(state: dict) -> None:
    value = state[first(state)].clone()
    value.view(-1)[0] = float("inf")
    state[first(state)] = value


def special(name: str, kind: str) -> Callable[[Path], None]:
    """Put a FIFO, a folder or a link to a device where file `name` was."""

    def mutate(folder: Path) -> None:
        path = folder / name
        path.unlink()
        {"fifo": os.mkfifo, "folder": os.mkdir, "device": lambda p: p.symlink_to("/dev/zero")}[
            kind
        ](path)

    return mutate


def spec_option(option: str) -> Callable[[Path], None]:
    def change(data: dict) -> None:
        for parent in data["parents"]:
            parent["spec"] += f"?{option}"
            parent["architecture"] += f"?{option}"

    return edit(change)


def set_row(key: str, i: int, row) -> Callable[[Path], None]:
    return edit(lambda data: data[key].__setitem__(i, row))


def node_cost(value) -> Callable[[Path], None]:
    return edit(lambda data: data["cost"]["node_macs"][3].__setitem__(2, value))


def stitch_cost(value) -> Callable[[Path], None]:
    def change(data: dict) -> None:
        table = data["cost"]["stitch_macs"]
        table[next(iter(table))] = value

    return edit(change)


def oversized(folder: Path) -> None:
    data = meta(folder)
    data["padding"] = "x" * (schema.MAX_JSON_BYTES + 1)
    put(folder, data)


def nested(folder: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    (folder / "supernet.json").write_text(
        f'{{"format": "evostitch.supernet", "version": 1, "parents": {deep}}}'
    )


def legacy_fifo_weights(folder: Path) -> None:
    """evostitch <= 0.1 kept no parents.safetensors: the weights file it names is a FIFO."""
    (folder / "parents.safetensors").unlink()
    os.mkfifo(folder / "a.pt")
    data = meta(folder)
    for parent in data["parents"]:
        parent.update(weights="a.pt", sha256="0" * 64)
    put(folder, data)


CASES = [
    # (mutation, error type, part of the message), by what the probe tried
    ("parents string", field(parents="demo:resnet_like"), SupernetError, "parents must be"),
    ("parents numbers", field(parents=[1, 2]), SupernetError, "parents[0] must be"),
    ("one parent", edit(lambda d: d.update(parents=d["parents"][:1])), SupernetError, "2 to 26"),
    (
        "spec a number",
        edit(lambda d: d["parents"][0].update(spec=5)),
        SupernetError,
        "parents[0].spec must be",
    ),
    ("short match row", set_row("matches", 0, ["stem_0"]), SupernetError, "matches[0] must be"),
    ("match row name+score", set_row("matches", 0, ["stem_0", 1.0]), SupernetError, "matches[0]"),
    ("match of numbers", set_row("matches", 0, [1, 2, 1.0]), SupernetError, "matches[0] must"),
    (
        "NaN match score",
        set_row("matches", 0, ["stem_0", "stem_0", float("nan")]),
        SupernetError,
        "matches[0]",
    ),
    (
        "node matched twice",
        edit(lambda d: d["matches"].append(d["matches"][0])),
        SupernetError,
        "a second time",
    ),
    ("matches a string", field(matches="abc"), SupernetError, "matches must be"),
    ("num_classes negative", spec_option("num_classes=-3"), ModelError, "num_classes must be"),
    ("num_classes 2e10", spec_option("num_classes=2e10"), ModelError, "num_classes must be"),
    ("num_classes 2*10^10", spec_option("num_classes=20000000000"), SupernetError, "wrong shape"),
    ("input 200000^2", field(input_shape=[1, 200000, 200000]), SupernetError, "too large to trace"),
    ("input a string", field(input_shape="1,8,8"), SupernetError, "input_shape must be"),
    ("input floats", field(input_shape=[1, 8.0, 8]), SupernetError, "input_shape must be"),
    ("input negative", field(input_shape=[1, -8, 8]), SupernetError, "input_shape must be"),
    ("leaf modules a string", field(leaf_modules="abc"), SupernetError, "leaf_modules must be"),
    ("version a string", field(version="1"), SupernetError, "format version '1'"),
    ("sha256 a list", field(sha256=[1]), SupernetError, "sha256 must be"),
    ("data a number", field(data=5), SupernetError, "data must be"),
    ("matching a string", field(matching="x"), SupernetError, "matching must be"),
    ("cost a string", field(cost="abc"), SupernetError, "cost must be"),
    ("left_out a string", field(left_out="ab0"), SupernetError, "left_out is not a list"),
    ("left_out unknown", field(left_out=["zz9"]), SupernetError, "cannot leave out zz9"),
    ("NaN node cost", node_cost(float("nan")), SupernetError, "cost.node_macs[3]"),
    ("inf node cost", node_cost(float("inf")), SupernetError, "cost.node_macs[3]"),
    ("negative node cost", node_cost(-5.0), SupernetError, "cost.node_macs[3]"),
    ("string node cost", node_cost("x"), SupernetError, "cost.node_macs[3]"),
    ("NaN stitch cost", stitch_cost(float("nan")), SupernetError, "cost.stitch_macs"),
    ("NaN stitch weights", tensors(io.STITCHES, nan), SupernetError, "NaN or infinite"),
    ("inf stitch weight", tensors(io.STITCHES, inf), SupernetError, "NaN or infinite"),
    (
        "int stitch weights",
        tensors(io.STITCHES, lambda s: s.update({first(s): s[first(s)].long()})),
        SupernetError,
        "wrong dtype",
    ),
    (
        "stitch of wrong shape",
        tensors(io.STITCHES, lambda s: s.update({first(s): torch.zeros(3)})),
        SupernetError,
        "wrong shape",
    ),
    (
        "extra stitch tensor",
        tensors(io.STITCHES, lambda s: s.update(extra=torch.zeros(2))),
        SupernetError,
        "1 unexpected",
    ),
    (
        "missing stitch tensor",
        tensors(io.STITCHES, lambda s: s.pop(first(s))),
        SupernetError,
        "1 missing",
    ),
    ("NaN parent weights", tensors(io.PARENTS, nan), SupernetError, "NaN or infinite"),
    (
        "int parent weights",
        tensors(io.PARENTS, lambda s: s.update({first(s): s[first(s)].long()})),
        SupernetError,
        "wrong dtype",
    ),
    (
        "parent tensor of wrong shape",
        tensors(io.PARENTS, lambda s: s.update({first(s): torch.zeros(3)})),
        SupernetError,
        "wrong shape",
    ),
    (
        "extra parent tensor",
        tensors(io.PARENTS, lambda s: s.update({"z.extra": torch.zeros(2)})),
        SupernetError,
        "belongs to no parent",
    ),
    (
        "tensor named like a side",
        tensors(io.PARENTS, lambda s: s.update(a=torch.zeros(1))),
        SupernetError,
        "belongs to no parent",
    ),
    (
        "missing parent tensor",
        tensors(io.PARENTS, lambda s: s.pop(first(s))),
        SupernetError,
        "1 missing",
    ),
    ("FIFO stitches", special(io.STITCHES, "fifo"), SupernetError, "not a regular file"),
    ("FIFO parents", special(io.PARENTS, "fifo"), SupernetError, "not a regular file"),
    ("FIFO supernet.json", special(io.JSON_NAME, "fifo"), SupernetError, "not a regular file"),
    ("folder stitches", special(io.STITCHES, "folder"), SupernetError, "not a regular file"),
    ("folder supernet.json", special(io.JSON_NAME, "folder"), SupernetError, "not a regular file"),
    ("device stitches", special(io.STITCHES, "device"), SupernetError, "not a regular file"),
    ("device parents", special(io.PARENTS, "device"), SupernetError, "not a regular file"),
    ("legacy weights a FIFO", legacy_fifo_weights, SupernetError, "not a regular file"),
    ("oversized JSON", oversized, SupernetError, "bytes: not one we wrote"),
    ("nested JSON", nested, SupernetError, "nested too deeply"),
]


NO_FILE = {name for name, *_ in CASES if name.split()[0] in ("FIFO", "folder", "device")}
NO_FILE.add("legacy weights a FIFO")


# ----- running them ----------------------------------------------------------------------------
def load_within(folder: Path, seconds: float = DEADLINE, **kwargs) -> BaseException | None:
    """`Supernet.load(folder)` in a daemon thread: what it raised (None if it loaded);
    fails the test if it is still running after `seconds` (a blocked open)."""
    raised: list[BaseException | None] = []

    def load() -> None:
        try:
            Supernet.load(folder, **kwargs)
            raised.append(None)
        except BaseException as exc:  # noqa: BLE001 (what it raised is the result)
            raised.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"Supernet.load({folder}) still runs after {seconds} s"
    return raised[0]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its kind, size and modification time."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def run_cli(argv, capsys) -> tuple[int, str]:
    """The CLI's entry point in-process: (exit code, stderr)."""
    code, _, err = cli_main(argv, capsys)
    return code, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def inspect_process(folder: Path) -> subprocess.CompletedProcess:
    """`python -m evostitch.cli inspect FOLDER`, the real entry point, in a process that
    is killed after the deadline (a reader blocked in open() may hold the GIL)."""
    return subprocess.run(
        [sys.executable, "-m", "evostitch.cli", "inspect", str(folder)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


@pytest.mark.parametrize("name, mutate, kind, part", [pytest.param(*c, id=c[0]) for c in CASES])
def test_a_crafted_folder_is_refused_in_one_line(
    crafted, tmp_path, capsys, name, mutate, kind, part
):
    folder = crafted(mutate)
    before = snapshot(tmp_path)
    if name in NO_FILE:  # before the fix these blocked for ever: first in a process
        done = inspect_process(folder)
        assert done.returncode == 2 and part in one_error_line(done.stderr)
    err = load_within(folder)
    assert isinstance(err, kind), repr(err)
    assert part in str(err) and "\n" not in str(err)
    code, stderr = run_cli(["inspect", folder], capsys)
    assert code == 2 and part in one_error_line(stderr)
    assert snapshot(tmp_path) == before  # nothing written, in the folder or beside it


def test_the_untouched_folder_still_loads(saved, crafted, capsys):
    """The control: the saved folder, and a plain copy of it, load and inspect."""
    for folder in (saved, crafted(lambda folder: None)):
        assert load_within(folder) is None
        code, stderr = run_cli(["inspect", folder, "--samples", "2"], capsys)
        assert code == 0 and "error" not in stderr


def test_an_input_shape_beyond_the_memory_left_is_refused_before_tracing(crafted, monkeypatch):
    """The bound on input_shape follows the memory available (here made 1 MiB): a shape
    that fits the fixed cap but not the machine is refused with both figures."""
    folder = crafted(field(input_shape=[1, 512, 512]))
    monkeypatch.setattr(io, "available_memory", lambda: 1 << 20)
    monkeypatch.setattr(schema, "available_memory", lambda: 1 << 20)
    traced = []
    monkeypatch.setattr(io, "trace", lambda *a, **k: traced.append(a))
    err = load_within(folder)
    assert isinstance(err, SupernetError) and "too large to trace" in str(err)
    assert "GiB available" in str(err) and not traced


def test_parent_weights_beyond_the_memory_left_are_refused_before_loading(saved, monkeypatch):
    """The stored parents take about 1 MiB, read then built: with 128 KiB left the
    folder is refused from the file's header, before its tensors are loaded."""
    monkeypatch.setattr(io, "available_memory", lambda: 128 << 10)
    monkeypatch.setattr(schema, "available_memory", lambda: 128 << 10)
    loaded = []
    monkeypatch.setattr(io, "load_file", lambda *a: loaded.append(a))
    err = load_within(saved)
    assert isinstance(err, SupernetError) and "parents' weights" in str(err)
    assert not loaded


def test_a_huge_num_classes_takes_no_memory(crafted, monkeypatch):
    """`num_classes=20000000000` would allocate 5 TB: the architecture is built on the
    meta device and compared with the stored tensors, never for real."""
    folder = crafted(spec_option("num_classes=20000000000"))
    from evostitch.models import specs

    built = []
    real = specs.build_model

    def spy(spec, **kwargs):
        built.append(torch.empty(0).device.type)  # the default device it is built on
        return real(spec, **kwargs)

    monkeypatch.setattr(specs, "build_model", spy)
    err = load_within(folder)
    assert isinstance(err, SupernetError) and "fc.weight" in str(err)
    assert built and set(built) == {"meta"}


EVIL = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def build(**options):
    from evostitch.models import load_model
    return load_model("demo:resnet_like")
"""


def test_load_without_trust_never_imports_code_a_folder_names(crafted, tmp_path, monkeypatch):
    """A folder whose parent is `package.module:factory` (a module that writes a marker
    when imported): refused in one line, the module never imported; with trust, used."""
    marker, package = tmp_path / "imported", tmp_path / "code"
    package.mkdir()
    (package / "evil_folder_parent.py").write_text(textwrap.dedent(EVIL.format(marker=str(marker))))
    monkeypatch.syspath_prepend(str(package))
    folder = crafted(
        edit(lambda d: d["parents"][0].update(spec="evil_folder_parent:build", architecture=None))
    )
    err = load_within(folder)
    assert isinstance(err, ModelError) and "names code" in str(err)
    assert not marker.exists() and "evil_folder_parent" not in sys.modules
    assert load_within(folder, trust_code=True) is None
    assert marker.exists()


# ----- the stitches-hold figure beside a supernetwork -------------------------------------------
FIGURE = holding.hold_figure(
    {"parents": [0.9, 0.8], 0.02: [0.95, 1.0, 0.9], 0.1: [0.7, 0.8, 0.75]},
    {"parents": [0.9, 0.8], 0.02: [0.3, 0.4, 0.2], 0.1: [0.1, 0.2, 0.1]},
    metric="accuracy",
    images=64,
    samples=3,
)


@pytest.mark.parametrize(
    "text",
    [
        '{"p": 5}',
        '{"p": [{"p": "x"}], "metric": 1}',
        json.dumps({**FIGURE, "parents": "0.9"}),
        json.dumps({**FIGURE, "p": [{**FIGURE["p"][0], "trained": {"median": "high"}}]}),
        json.dumps({**FIGURE, "samples": -1}),
        json.dumps({**FIGURE, "parents": [float("nan"), 0.8]}),
        "[" * 100_000,
        "{not json",
    ],
    ids=[
        "p a number",
        "rows of strings",
        "parents a string",
        "quartile a string",
        "negative samples",
        "NaN",
        "nested",
        "not JSON",
    ],
)
def test_a_malformed_hold_figure_reads_as_none(tmp_path, text):
    holding.save_hold_figure(FIGURE, tmp_path)
    assert holding.load_hold_figure(tmp_path) == FIGURE  # the control
    (tmp_path / holding.HOLD_FILE).write_text(text)
    assert holding.load_hold_figure(tmp_path) is None


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_a_hold_figure_that_is_no_file_is_never_opened(tmp_path, kind):
    (tmp_path / holding.HOLD_FILE).write_text("{}")
    special(holding.HOLD_FILE, kind)(tmp_path)
    result: list = []
    thread = threading.Thread(
        target=lambda: result.append(holding.load_hold_figure(tmp_path)), daemon=True
    )
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive() and result == [None]


def test_saving_the_hold_figure_replaces_a_link_instead_of_writing_through_it(tmp_path):
    own = tmp_path / "users_file.txt"
    own.write_text("the user's own file\n")
    folder = tmp_path / "sn"
    folder.mkdir()
    (folder / holding.HOLD_FILE).symlink_to(own)
    holding.save_hold_figure(FIGURE, folder)
    assert own.read_text() == "the user's own file\n"
    assert not (folder / holding.HOLD_FILE).is_symlink()
    assert holding.load_hold_figure(folder) == FIGURE
    assert sorted(p.name for p in folder.iterdir()) == [holding.HOLD_FILE]  # no temp left


def test_the_meta_check_is_cheap(saved):
    """Checking supernet.json against its schema costs well under the JSON's parsing
    times ten (microseconds for the demo), so every load can afford it."""
    import time

    path = saved / io.JSON_NAME
    data = json.loads(path.read_text())
    start = time.perf_counter()
    for _ in range(20):
        schema.check_meta(data, path)
    assert (time.perf_counter() - start) / 20 < 0.05


def test_errors_are_evostitch_errors():
    assert issubclass(SupernetError, EvostitchError) and issubclass(ModelError, EvostitchError)


def test_a_loaded_supernetwork_saved_again_keeps_its_matching_figures(tmp_path):
    Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8)).save(tmp_path / "a")
    again = Supernet.load(tmp_path / "a")
    again.leave_out(sorted(again.stitches)[:1])  # what a user changes before saving again
    again.save(tmp_path / "b")

    def figures(folder: Path) -> dict:
        return json.loads((folder / io.JSON_NAME).read_text())["matching"]

    assert figures(tmp_path / "a")["total"] is not None
    assert figures(tmp_path / "b") == figures(tmp_path / "a")
