"""Public calls given bad input raise an EvostitchError of the right kind, never a bare
built-in exception (the CLI shows those as one line and exits 2)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import evostitch
from evostitch import errors
from evostitch.data import load_dataset
from evostitch.evaluation import Evaluator
from evostitch.evolution import problems
from evostitch.evolution.algorithms import make_algorithm
from evostitch.execution import InProcessBackend
from evostitch.graph import example_input, trace
from evostitch.matching import match
from evostitch.models import load_model
from evostitch.training import train_stitches


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return evostitch.Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8))


def graph(name: str):
    return trace(load_model(f"demo:{name}"), example_input((1, 8, 8)))


CASES = {
    "unknown model": (errors.ModelError, lambda net, tmp: load_model("torchvision:nope")),
    "missing weights": (
        errors.ModelError,
        lambda net, tmp: load_model("demo:resnet_like", tmp / "none.safetensors"),
    ),
    "negative input shape": (
        errors.ModelError,
        lambda net, tmp: evostitch.Supernet.build(
            ["demo:resnet_like", "demo:fcn_like"], (1, -8, 8)
        ),
    ),
    "unknown dataset": (errors.DataError, lambda net, tmp: load_dataset("nope", "train")),
    "an iterator to train_stitches": (
        errors.DataError,
        lambda net, tmp: train_stitches(net, iter(DataLoader(load_dataset("digits", "val")))),
    ),
    "empty split": (errors.DataError, lambda net, tmp: Evaluator(net, [], num_classes=10)),
    "data of another shape": (
        errors.DataError,
        lambda net, tmp: evostitch.stitch(
            ["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8), data="mnist5k", progress=False
        ),
    ),
    "data with other classes": (
        errors.DataError,
        lambda net, tmp: evostitch.stitch(
            ["demo:resnet_like?num_classes=7", "demo:mobilenet_like?num_classes=7"],
            (1, 8, 8),
            data="digits",
            progress=False,
        ),
    ),
    "one parent, not a list": (
        errors.SupernetError,
        lambda net, tmp: evostitch.stitch("demo:resnet_like", (1, 8, 8), progress=False),
    ),
    "a weights entry short": (
        errors.SupernetError,
        lambda net, tmp: evostitch.Supernet.build(
            ["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8), weights=[None]
        ),
    ),
    "unknown similarity": (
        errors.MatchingError,
        lambda net, tmp: match([graph("resnet_like"), graph("mobilenet_like")], similarity="x"),
    ),
    "genotype too short": (errors.SupernetError, lambda net, tmp: net.cost([1, 0])),
    "genotype out of range": (
        errors.SupernetError,
        lambda net, tmp: net(torch.zeros(1, 1, 8, 8), [9] * len(net.genotype_spec)),
    ),
    "genotype of text": (errors.SupernetError, lambda net, tmp: net.canonical("abc")),
    "no saved supernetwork": (errors.SupernetError, lambda net, tmp: evostitch.Supernet.load(tmp)),
    "search an unsaved folder": (
        errors.SupernetError,
        lambda net, tmp: evostitch.search(tmp, out=tmp / "run", progress=False),
    ),
    "unknown algorithm": (
        errors.SearchError,
        lambda net, tmp: make_algorithm("nope", problems.onemax(8)),
    ),
    "empty batches": (errors.SearchError, lambda net, tmp: InProcessBackend(lambda: None, 0)),
    "no run": (errors.RunError, lambda net, tmp: evostitch.load_run(tmp / "none")),
}


@pytest.mark.parametrize("kind, call", CASES.values(), ids=CASES.keys())
def test_bad_input_raises_its_kind(net, tmp_path, kind, call):
    with pytest.raises(kind) as caught:
        call(net, tmp_path)
    assert isinstance(caught.value, evostitch.EvostitchError)
    assert str(caught.value) and "\n" not in str(caught.value)
