"""Devices and mixed precision: --device and --amp on the commands that run networks."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from evostitch import Supernet, api, cli
from evostitch.data import load_dataset
from evostitch.errors import DeviceError
from evostitch.evaluation import Evaluator
from evostitch.training import train_stitches

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net() -> Supernet:
    torch.manual_seed(0)
    return Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8))


def test_bf16_evaluation_runs_in_bf16_and_stays_close(net):
    data = load_dataset("digits", "val")
    genotype = [2] + [0] * (len(net.genotype_spec) - 1)
    full = Evaluator(net, data, num_classes=10, device="cpu").metrics(genotype)
    half = Evaluator(net, data, num_classes=10, device="cpu", amp="bf16")
    mixed = half.metrics(genotype)
    assert mixed["cross_entropy"] != full["cross_entropy"]  # it did run in bfloat16
    assert abs(mixed["accuracy"] - full["accuracy"]) < 0.05
    assert abs(mixed["cross_entropy"] - full["cross_entropy"]) < 0.05
    shared = half.metrics_many([genotype])[0]  # the population path, same precision
    assert abs(shared["accuracy"] - mixed["accuracy"]) < 0.02


def test_bf16_stitch_training_keeps_float32_stitches(net):
    result = train_stitches(
        net, load_dataset("digits", "train"), samples=64, amp="bf16", device="cpu", progress=False
    )
    assert all(p.dtype == torch.float32 for p in net.stitches.parameters())
    assert all(v == v and v >= 0 for v in result.relative_losses.values())  # finite
    assert result.held_out_losses.keys() == net.stitches.keys()  # bf16 fit and held-out pass
    assert all(0 <= v < float("inf") for v in result.held_out_losses.values())


def test_search_records_its_precision_and_resume_keeps_it(tmp_path):
    api.stitch(
        ["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8),
        data="digits", out=tmp_path / "sn", progress=False, device="cpu",
    )  # fmt: skip
    options = {"budget": 6, "population": 4, "batch": 2, "progress": False, "device": "cpu"}
    run = api.search(tmp_path / "sn", out=tmp_path / "run", algorithm="rs", amp="bf16", **options)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["problem"]["amp"] == "bf16"
    resumed = api.resume(tmp_path / "run", device="cpu", progress=False)
    assert resumed.result.performed == run.result.performed == 6


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--device", "cuda:99"], "device 'cuda:99'"),
        (["--device", "tpu"], "unknown device"),
        (["--amp", "fp8"], "unknown precision"),
    ],
)
def test_bad_device_or_precision_is_one_line(tmp_path, monkeypatch, capsys, argv, needle):
    args = ["stitch", "--a", "demo:resnet_like", "--b", "demo:mobilenet_like"]
    args += ["--input-shape", "1,8,8", "--data", "digits", "--out", str(tmp_path / "sn"), *argv]
    monkeypatch.setattr(sys, "argv", ["evostitch", *args])
    with pytest.raises(SystemExit) as done:
        cli.main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert done.value.code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "sn" / "supernet.json").exists()


def test_resolve_device_names_what_is_missing():
    from evostitch.devices import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
