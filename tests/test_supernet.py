"""Core II: exact parents, extraction, canonical genotypes, cost, persistence."""

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from evostitch import Supernet
from evostitch.errors import EvostitchError

PAIRS = {
    "resnet18-mnv3s": ("torchvision:resnet18", "torchvision:mobilenet_v3_small", (3, 32, 32)),
    "resnet50-resnext50": ("torchvision:resnet50", "torchvision:resnext50_32x4d", (3, 32, 32)),
    "deeplab": (
        "torchvision:deeplabv3_mobilenet_v3_large?num_classes=3",
        "torchvision:deeplabv3_resnet50?num_classes=3",
        (3, 32, 32),
    ),
}
# genotypes per pair in the property test (more: EVOSTITCH_EXAMPLES=2000). The two large
# pairs run the same code on bigger graphs (about 0.4 s a genotype): at most 40 each.
EXAMPLES = int(os.environ.get("EVOSTITCH_EXAMPLES", 100))
LARGE = {"resnet50-resnext50", "deeplab"}
_built: dict[str, Supernet] = {}


def supernet(key: str) -> Supernet:
    if key not in _built:
        torch.manual_seed(0)
        a, b, shape = PAIRS[key]
        _built[key] = Supernet.build([a, b], shape)
    return _built[key]


def inputs(net: Supernet, n: int = 2) -> torch.Tensor:
    return torch.randn(n, *net.input_shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("key", list(PAIRS))
def test_reference_genotypes_are_the_parents(key):
    net = supernet(key)
    x = inputs(net)
    with torch.no_grad():
        ya, yb = net.graphs["a"].module(x), net.graphs["b"].module(x)
        zeros = [0] * (len(net.genotype_spec) - 1)
        assert torch.equal(net(x, [0, *zeros]), ya)  # bit for bit
        assert torch.equal(net(x, [1, *zeros]), yb)
        assert torch.equal(net(x, [2, *zeros]), (ya + yb) / 2)
        if net.task == "classification":
            probs = (ya.softmax(1) + yb.softmax(1)) / 2
            torch.testing.assert_close(net(x, [3, *zeros]).softmax(1), probs)
    assert net.matches, "parents should share matched points"
    assert len(net.genotype_spec) == 1 + 2 * len(net.matches)


def test_traced_parent_equals_eager_model():
    from evostitch.models import load_model

    torch.manual_seed(0)
    model = load_model("torchvision:resnet18")
    net = Supernet.build([model, "torchvision:mobilenet_v3_small"], (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    zeros = [0] * (len(net.genotype_spec) - 1)
    with torch.no_grad():
        assert torch.equal(net(x, [0, *zeros]), model(x))


def genotypes(net: Supernet):
    spec = net.genotype_spec
    near = st.lists(st.sampled_from([0] * 19 + [1]), min_size=len(spec) - 1, max_size=len(spec) - 1)
    uniform = st.lists(st.integers(0, 1), min_size=len(spec) - 1, max_size=len(spec) - 1)
    return st.tuples(st.integers(0, spec[0] - 1), st.one_of(near, uniform)).map(
        lambda t: (t[0], *t[1])
    )


def macs_of(module, x) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() / 2 / x.shape[0]


@pytest.mark.slow
@pytest.mark.parametrize("key", list(PAIRS))
def test_random_offspring_run_are_canonical_and_costed(key):
    net = supernet(key)
    x = inputs(net, 1)
    out_shape = net.graphs["a"][net.graphs["a"].output].shape[1:]

    @settings(
        max_examples=min(EXAMPLES, 40) if key in LARGE else EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(genotypes(net))
    def check(g):
        child = net.extract(g)
        with torch.no_grad():
            y = child(x)
            assert tuple(y.shape[1:]) == out_shape
            assert torch.isfinite(y).all()
            canon = net.canonical(g)
            assert net.canonical(canon) == canon
            torch.testing.assert_close(net(x, canon), y, rtol=0, atol=0)
        want = macs_of(child, x)
        got = net.cost(g)["macs"]
        assert abs(got - want) <= 0.01 * want
        assert net.cost(g)["params"] == sum(p.numel() for p in child.parameters())

    check()


def test_extracted_offspring_holds_only_what_it_uses():
    net = supernet("resnet18-mnv3s")
    zeros = [0] * (len(net.genotype_spec) - 1)
    child = net.extract([0, *zeros])
    assert not any(name.startswith("parents.b") for name, _ in child.named_parameters())
    assert not any(name.startswith("stitches") for name, _ in child.named_parameters())
    n_a = sum(p.numel() for p in net.parents["a"].parameters())
    assert sum(p.numel() for p in child.parameters()) == n_a


def test_crossing_over_uses_a_stitch_and_deactivates_upstream():
    net = supernet("resnet18-mnv3s")
    g = [1] + [0] * (len(net.genotype_spec) - 1)  # output B
    sw = next(s for s in net.switches[len(net.switches) // 2 :] if s.side == "b")
    g[sw.index] = 1
    active = net.active_variables(g)
    assert active[0] and active[sw.index]
    plan = net.plan(g)
    assert sw in plan.stitched
    assert ("b", sw.node) not in plan.raw  # B's own tensor at the crossing is not computed
    assert any(k[0] == "a" for k in plan.raw)


def test_bad_genotype_is_rejected():
    net = supernet("resnet18-mnv3s")
    with pytest.raises(EvostitchError, match="genotype must have"):
        net.canonical([0, 1])
    with pytest.raises(EvostitchError):
        net.canonical([9] + [0] * (len(net.genotype_spec) - 1))


def test_save_load_round_trip(tmp_path):
    net = supernet("resnet18-mnv3s")
    with torch.no_grad():  # make stitches non-trivial
        for p in net.stitches.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    net.save(tmp_path / "sn")
    back = Supernet.load(tmp_path / "sn")
    assert back.genotype_spec == net.genotype_spec and back.matches == net.matches
    x = inputs(net)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _ in range(20):
            bits = (torch.rand(len(net.genotype_spec) - 1, generator=gen) < 0.1).tolist()
            g = [int(torch.randint(0, 4, (1,), generator=gen))] + [int(b) for b in bits]
            assert torch.equal(back(x, g), net(x, g))
            assert back.cost(g) == net.cost(g)


def test_truncated_or_damaged_files_fail_in_one_line(tmp_path):
    net = supernet("resnet18-mnv3s")
    folder = net.save(tmp_path / "sn")
    stitches = folder / "stitches.safetensors"
    data = stitches.read_bytes()
    stitches.write_bytes(data[: len(data) // 2])
    with pytest.raises(EvostitchError, match="damaged or truncated") as err:
        Supernet.load(folder)
    assert "\n" not in str(err.value)
    stitches.write_bytes(data)
    (folder / "supernet.json").write_text("{not json")
    with pytest.raises(EvostitchError, match="damaged"):
        Supernet.load(folder)
    with pytest.raises(EvostitchError, match="not a saved supernetwork"):
        Supernet.load(tmp_path / "nothing")


def test_module_parents_cannot_be_saved_without_spec(tmp_path):
    from evostitch.models import load_model

    net = Supernet.build(
        [load_model("torchvision:resnet18"), "torchvision:mobilenet_v3_small"], (3, 32, 32)
    )
    with pytest.raises(EvostitchError, match="model spec"):
        net.save(tmp_path / "x")
