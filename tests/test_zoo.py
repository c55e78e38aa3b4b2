import json

import pytest
import torch
from torch.fx.passes.shape_prop import ShapeProp

from evostitch.data import dataset_info, load_dataset
from evostitch.demo import parents as zoo_parents
from evostitch.errors import EvostitchError
from evostitch.models import zoo

SHAPES = {
    "resnet_like": ((2, 1, 28, 28), (2, 10)),
    "mobilenet_like": ((2, 1, 28, 28), (2, 10)),
    "unet_like": ((2, 1, 64, 64), (2, 2, 64, 64)),
    "fcn_like": ((2, 1, 64, 64), (2, 2, 64, 64)),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list(SHAPES))  # the CNNs; vit_like: test_vit_like.py
def test_models_trace_with_three_resolutions(name):
    in_shape, out_shape = SHAPES[name]
    model = zoo.build_demo_model(name).eval()
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(in_shape)
    assert torch.equal(graph(x), model(x)) and model(x).shape == out_shape
    ShapeProp(graph).propagate(x)
    sizes = {
        tuple(n.meta["tensor_meta"].shape[2:])
        for n in graph.graph.nodes
        if isinstance(n.meta.get("tensor_meta"), torch.fx.passes.shape_prop.TensorMetadata)
        and len(n.meta["tensor_meta"].shape) == 4
    }
    assert len(sizes) >= 3


def test_build_demo_model_options_and_errors():
    assert zoo.build_demo_model("resnet_like", 3, 7)(torch.randn(1, 3, 8, 8)).shape == (1, 7)
    assert zoo.build_demo_model("fcn_like", 3, 5)(torch.randn(1, 3, 32, 32)).shape == (1, 5, 32, 32)
    with pytest.raises(EvostitchError, match="unknown demo model"):
        zoo.build_demo_model("vgg")


def test_fit_lowers_the_loss():
    info = dataset_info("digits")
    model = zoo.build_demo_model("resnet_like")
    losses = zoo_parents.fit(
        model,
        load_dataset("digits", "train"),
        info,
        steps=30,
        batch_size=32,
        lr=3e-3,
        progress=False,
    )
    assert len(losses) == 30 and sum(losses[-5:]) < 0.5 * sum(losses[:5])


def test_fit_segmentation_lowers_the_loss():
    pytest.importorskip("stardist")
    info = dataset_info("nuclei?crop=32")
    model = zoo.build_demo_model("fcn_like")
    losses = zoo_parents.fit(
        model,
        load_dataset("nuclei?crop=32", "train"),
        info,
        steps=12,
        batch_size=16,
        lr=3e-3,
        progress=False,
    )
    assert sum(losses[-3:]) < sum(losses[:3])


def test_train_parent_is_deterministic():
    runs = [
        zoo_parents.train_parent("mobilenet_like", "digits", steps=3, progress=False) for _ in "ab"
    ]
    (m1, r1), (m2, r2) = runs
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert r1["accuracy"] == r2["accuracy"] and "train_seconds" in r1 and not m1.training


def test_cache_round_trip_and_staleness(tmp_path, monkeypatch):
    model, metrics = zoo_parents.load_or_train_parent(
        "resnet_like", "digits", cache_dir=tmp_path, steps=3, progress=False
    )
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["resnet_like-digits-s0.json", "resnet_like-digits-s0.safetensors"]

    def no_training(*args, **kwargs):
        raise AssertionError("should have loaded from the cache")

    monkeypatch.setattr(zoo_parents, "train_parent", no_training)
    cached, cached_metrics = zoo_parents.load_or_train_parent(
        "resnet_like", "digits", cache_dir=tmp_path, steps=3, progress=False
    )
    x = load_dataset("digits", "test").images[:16]
    with torch.no_grad():
        assert torch.equal(model(x), cached(x))
    assert cached_metrics == metrics and not cached.training
    with pytest.raises(AssertionError):  # different config: stale, retrains
        zoo_parents.load_or_train_parent("resnet_like", "digits", cache_dir=tmp_path, steps=4)
    monkeypatch.undo()
    meta = tmp_path / "resnet_like-digits-s0.json"
    record = json.loads(meta.read_text())
    record["hash"] = "0" * 16
    meta.write_text(json.dumps(record))
    zoo_parents.load_or_train_parent(
        "resnet_like", "digits", cache_dir=tmp_path, steps=3, progress=False
    )
    assert json.loads(meta.read_text())["hash"] != "0" * 16
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_get_demo_parents_uses_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOSTITCH_CACHE", str(tmp_path))
    assert zoo_parents.cache_dir_default() == tmp_path / "parents"
    monkeypatch.setitem(
        zoo_parents.DEMO_PARENTS, "classification", ("digits", ("resnet_like", "mobilenet_like"))
    )
    for name in ("resnet_like", "mobilenet_like"):
        monkeypatch.setitem(
            zoo_parents.TRAIN_DEFAULTS, name, {"epochs": 1, "batch_size": 256, "lr": 3e-3}
        )
    a, b, info = zoo_parents.get_demo_parents("classification", progress=False)
    assert isinstance(a, zoo.ResNetLike) and isinstance(b, zoo.MobileNetLike)
    assert info["dataset"] == "digits" and set(info["metrics"]) == {"resnet_like", "mobilenet_like"}
    assert len(list((tmp_path / "parents").glob("*.safetensors"))) == 2
    with pytest.raises(EvostitchError, match="no demo parents"):
        zoo_parents.get_demo_parents("detection")
