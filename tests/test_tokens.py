"""Stitches between feature maps [N,C,H,W] and tokens [N,T,C]: a CNN and a ViT parent."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import VisionTransformer, resnet18

from evostitch import Supernet
from evostitch.errors import SupernetError
from evostitch.graph import Node
from evostitch.matching.similarity import size_ratio
from evostitch.supernet import Stitch
from evostitch.training import least_squares_init, parent_tensors


def node(shape: tuple[int, ...]) -> Node:
    return Node("n", "call_module", "m", (), shape, "torch.float32", True, 0.5)


@pytest.mark.parametrize(
    "tokens,grid,prefix",
    [
        (64, (8, 8), 0),
        (65, (8, 8), 1),
        (66, (8, 8), 2),
        (50, (7, 7), 1),
        (77, None, 0),
        (3, None, 0),
    ],
)
def test_tokens_read_as_a_square_grid_after_their_prefix(tokens, grid, prefix):
    n = node((2, tokens, 16))
    assert n.kind == "tokens" and n.grid == grid and n.prefix == prefix


def test_maps_and_tokens_compare_their_grids():
    tokens = node((2, 65, 32))  # class token + 8x8 patches
    assert size_ratio(node((2, 16, 8, 8)), tokens) == 1
    assert size_ratio(node((2, 16, 32, 32)), tokens) == 4
    assert size_ratio(tokens, node((2, 16, 2, 2))) == 4
    assert size_ratio(tokens, node((2, 16, 16, 16))) == -2
    assert size_ratio(node((2, 16, 8, 4)), tokens) is None  # not a square
    assert size_ratio(node((2, 16, 8, 8)), node((2, 77, 32))) is None  # not a grid
    assert size_ratio(node((2, 16)), tokens) is None
    with pytest.raises(SupernetError, match="cannot stitch"):
        Stitch(node((2, 16, 8, 4)), tokens)


PAIRS = [
    ((2, 12, 8, 8), (2, 65, 20)),  # map -> tokens with a class token
    ((2, 12, 16, 16), (2, 66, 20)),  # map -> tokens, downsampled, two prefix tokens
    ((2, 12, 4, 4), (2, 64, 20)),  # map -> tokens, upsampled, no prefix
    ((2, 65, 20), (2, 12, 8, 8)),  # tokens -> map, class token dropped
    ((2, 65, 20), (2, 12, 2, 2)),  # tokens -> map, downsampled
    ((2, 65, 20), (2, 12, 16, 16)),  # tokens -> map, upsampled
]


@pytest.mark.parametrize("src,dst", PAIRS)
def test_token_stitch_shapes_and_its_rows(src, dst):
    stitch = Stitch(node(src), node(dst))
    x = torch.randn(5, *src[1:])
    assert stitch(x).shape == (5, *dst[1:])
    y = torch.randn(5, *dst[1:])
    rows = stitch.rows(x, y)
    prefix = dst[1] - 64 if len(dst) == 3 else 0
    assert len(rows) == (2 if prefix else 1)
    cin, cout = (s[1] if len(s) == 4 else s[2] for s in (src, dst))
    assert rows[0][0].shape[1] == cin and rows[0][1].shape[1] == cout
    assert rows[0][0].shape[0] == rows[0][1].shape[0]
    if prefix:
        assert rows[1][0].shape == (5, stitch.layer.in_channels)
        assert rows[1][1].shape == (5, prefix * 20)


@pytest.mark.parametrize("src,dst", [p for p in PAIRS if p not in (PAIRS[2], PAIRS[5])])
def test_least_squares_on_the_rows_recovers_a_token_stitch(src, dst):
    """A target made by a random stitch of the same shape is fitted exactly from the rows
    (upsampling stitches are fitted at the source's size, so they are left out)."""
    torch.manual_seed(0)
    teacher, student = Stitch(node(src), node(dst)), Stitch(node(src), node(dst))
    for p in teacher.parameters():
        p.data.normal_()
    x = torch.randn(64, *src[1:])
    with torch.no_grad():
        y = teacher(x)
    for i, (xr, yr) in enumerate(student.rows(x, y)):
        xr1 = torch.cat([xr, torch.ones(len(xr), 1)], 1).double()
        sol = torch.linalg.lstsq(xr1, yr.double()).solution
        student.set_linear(sol[:-1].T.float(), sol[-1].float(), index=i)
    with torch.no_grad():
        torch.testing.assert_close(student(x), y, rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def cnn_vit() -> Supernet:
    torch.manual_seed(0)
    cnn = resnet18(num_classes=10).eval()
    vit = VisionTransformer(
        image_size=32, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10,
    ).eval()  # fmt: skip
    return Supernet.build([cnn, vit], (3, 32, 32), max_ratio=8)


def test_cnn_and_vit_match_across_maps_and_tokens(cnn_vit):
    kinds = {(cnn_vit.graphs["a"][sw.node].kind, cnn_vit.graphs["b"][sw.source].kind)
             for sw in cnn_vit.switches if sw.side == "a"}  # fmt: skip
    assert ("map", "tokens") in kinds
    both = [s for s in cnn_vit.stitches.values() if s.kind == "map->tokens"]
    assert any(s.prefix is not None for s in both)  # into the ViT after its class token
    x = torch.randn(3, 3, 32, 32)
    n = len(cnn_vit.switches)
    with torch.no_grad():
        for i in range(n):
            g = [i % 2] + [int(j == i) for j in range(n)]
            assert cnn_vit(x, g).shape == (3, 10)


def test_least_squares_fits_cnn_vit_stitches_to_their_optimum(cnn_vit):
    x = torch.randn(48, 3, 32, 32)
    least_squares_init(cnn_vit, x, ridge=1e-9, device="cpu")
    pairs = parent_tensors(cnn_vit, x)
    checked = 0
    for key, stitch in cnn_vit.stitches.items():
        if stitch.out_size is not None or "tokens" not in stitch.kind:
            continue  # upsampling stitches are fitted at the source's size
        stitch.zero_grad()
        src, dst = pairs[key]
        loss = F.mse_loss(stitch(src), dst)
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in stitch.parameters()])
        assert grad.abs().max() < 1e-3 * (float(loss.detach().sqrt()) + 1e-3), key
        checked += 1
    assert checked >= 4


def test_cnn_x_vit_supernet_saves_loads_and_exports_through_token_stitches(tmp_path):
    from evostitch.results.export import check, export_offspring

    torch.manual_seed(0)
    vit = "demo:vit_like?image_size=28&patch_size=4&width=32&depth=2&heads=2"
    net = Supernet.build(["demo:resnet_like", vit], (1, 28, 28), max_ratio=4)
    x = torch.randn(4, 1, 28, 28)
    least_squares_init(net, x, device="cpu")
    kinds = {sw.index: net.stitches[sw.stitch].kind for sw in net.switches}
    into_vit = next(i for i, k in kinds.items() if k == "map->tokens")
    into_cnn = next(i for i, k in kinds.items() if k == "tokens->map")
    genotypes = []
    for i, out in ((into_vit, 1), (into_cnn, 0)):
        g = [0] * len(net.structure.genotype_spec)
        g[0], g[i] = out, 1
        genotypes.append(tuple(g))
    net.save(tmp_path / "sn")
    again = Supernet.load(tmp_path / "sn")
    with torch.no_grad():
        for g in genotypes:
            assert torch.equal(net(x, g), again(x, g))
            assert not torch.equal(net(x, g), net(x, (g[0],) + (0,) * (len(g) - 1)))
    files = export_offspring(again, genotypes[0], tmp_path / "export")
    with torch.no_grad():
        expected = again(x, genotypes[0])
    assert check(next(p for p in files if p.suffix == ".py"), x, expected) <= 1e-5
