"""demo:vit_like, the small Vision Transformer: builds, traces into token tensors, learns."""

import pytest
import torch

from evostitch import graph
from evostitch.data import dataset_info, load_dataset
from evostitch.demo import parents as zoo_parents
from evostitch.errors import EvostitchError
from evostitch.models import build_model, zoo

pytestmark = pytest.mark.usefixtures("one_thread")


def block_ends(g: graph.Graph, depth: int) -> list[str]:
    """The nodes entering each encoder block and the final norm: the block outputs."""
    consumers = [f"blocks_{i}_norm1" for i in range(depth)] + ["norm"]
    return [g[name].inputs[0] for name in consumers]


def test_traces_with_token_blocks():
    model = zoo.build_demo_model("vit_like", 3, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    g = graph.trace(model, x)
    with torch.no_grad():
        torch.testing.assert_close(g.module(x), model(x))
    candidates = set(g.candidates())
    ends = block_ends(g, 4)
    assert set(ends) <= candidates
    assert {g[n].shape for n in ends} == {(2, 1 + 8 * 8, 64)}
    assert {g[n].kind for n in ends} == {graph.TOKENS}
    assert g["patch_embed"].kind == graph.MAP and g["patch_embed"].shape == (2, 64, 8, 8)
    assert g[g.output].shape == (2, 10)
    # nothing in the graph depends on the batch size: no shape ops
    assert not any(n.target in ("size", "expand") for n in g.nodes.values())


def test_options_through_a_spec_and_errors():
    model = build_model("demo:vit_like?image_size=28&patch_size=7&depth=2&width=32&num_classes=5")
    g = graph.trace(model, torch.randn(2, 1, 28, 28))
    assert g[block_ends(g, 2)[-1]].shape == (2, 1 + 4 * 4, 32)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 5)
    with pytest.raises(EvostitchError, match="multiple of patch_size"):
        zoo.build_demo_model("vit_like", image_size=30)
    with pytest.raises(EvostitchError, match="multiple of heads"):
        zoo.build_demo_model("vit_like", width=30)
    with pytest.raises(EvostitchError, match="no option depth"):
        zoo.build_demo_model("resnet_like", depth=3)


def test_seeded_builds_are_identical():
    x = torch.randn(2, 3, 32, 32)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(zoo.build_demo_model("vit_like", 3).eval())
    a, b = models
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_fit_lowers_the_loss():
    torch.manual_seed(0)
    model = zoo.build_demo_model("vit_like", image_size=8, patch_size=2, depth=1, width=32)
    losses = zoo_parents.fit(
        model,
        load_dataset("digits", "train"),
        dataset_info("digits"),
        steps=80,
        batch_size=64,
        lr=3e-3,
        progress=False,
    )
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
