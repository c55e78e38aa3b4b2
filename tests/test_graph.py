import pytest
import torch
from torch import nn

from evostitch import graph
from evostitch.errors import EvostitchError
from evostitch.models import specs

MODELS = [
    ("resnet18", 64),
    ("resnet50", 64),
    ("resnet152", 64),
    ("resnext50_32x4d", 64),
    ("efficientnet_b0", 64),
    ("efficientnet_b4", 64),
    ("mobilenet_v3_small", 64),
    ("convnext_tiny", 64),
    ("vit_b_16", 224),
    ("deeplabv3_mobilenet_v3_large", 64),
    ("deeplabv3_resnet50", 64),
]


@pytest.mark.parametrize("name,size", MODELS)
def test_trace_torchvision(name, size):
    model = specs.load_model(f"torchvision:{name}")
    x = torch.randn(2, 3, size, size)
    g = graph.trace(model, x)
    names = list(g.nodes)
    # topological: every input precedes its consumer
    position = {n: i for i, n in enumerate(names)}
    assert all(position[i] < position[n.name] for n in g.nodes.values() for i in n.inputs)
    assert g.input == names[0] and g.nodes[g.input].op == "placeholder"
    cands = g.candidates()
    assert g.input in cands and g.output in cands
    assert all(g[c].kind in ("vector", "tokens", "map") for c in cands)
    assert g[g.input].depth == 0.0 and g[g.output].depth == 1.0
    assert any(n.parameterised for n in g.nodes.values())
    # the traced module computes the model's (main) output
    with torch.no_grad():
        expected = model.eval()(x)
        expected = expected["out"] if isinstance(expected, dict) else expected
        torch.testing.assert_close(g.module(x), expected, rtol=1e-5, atol=1e-5)
    assert g[g.output].shape == tuple(expected.shape)


def test_vit_has_tokens():
    g = graph.trace(specs.load_model("torchvision:vit_b_16"), torch.randn(2, 3, 224, 224))
    assert any(g[c].kind == "tokens" for c in g.candidates())


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: not traceable
            return self.conv(x)
        return x


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.body = Branchy()

    def forward(self, x):
        return self.body(self.stem(x)).mean((2, 3))


def test_untraceable_names_module_and_remedy():
    with pytest.raises(EvostitchError) as err:
        graph.trace(Wrapper(), torch.randn(2, 3, 8, 8))
    message = str(err.value)
    assert "body (Branchy)" in message and "leaf" in message and "\n" not in message


def test_leaf_module_makes_it_traceable():
    g = graph.trace(Wrapper(), torch.randn(2, 3, 8, 8), leaf_modules=["Branchy"])
    assert any(n.target == "body" for n in g.nodes.values())


def test_rejected_input_shape_is_one_line():
    with pytest.raises(EvostitchError, match="rejects input of shape"):
        graph.trace(specs.load_model("torchvision:resnet18"), torch.randn(2, 5, 32, 32))


def test_dict_output_keeps_out_and_drops_aux():
    model = specs.load_model("torchvision:fcn_resnet50?aux_loss=true")
    g = graph.trace(model, torch.randn(2, 3, 64, 64))
    assert not any(n.target.startswith("aux_classifier") for n in g.nodes.values())
    assert g[g.output].shape == (2, 21, 64, 64)
