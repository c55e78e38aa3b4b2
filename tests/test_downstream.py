"""The downstream stage of stitch training (training.downstream): parents stay exact, and
stitches fitted alone get better at what the offspring they sit in compute."""

from __future__ import annotations

import random

import torch

from evostitch.data import load_dataset
from evostitch.supernet import Supernet
from evostitch.training import train_stitches
from evostitch.training.downstream import distillation, draw_offspring, train_downstream


def offspring_loss(net: Supernet, x: torch.Tensor, genotypes) -> float:
    """Mean KL from the parents' output to each offspring's, on `x`."""
    refs = net.reference_genotypes
    with torch.no_grad():
        return sum(float(distillation(net(x, g), net(x, refs[g[0]]))) for g in genotypes) / len(
            genotypes
        )


def trained(spec: str, train, steps: int = 150) -> torch.nn.Module:
    """A demo parent trained briefly on the digits (untrained parents give near-constant
    outputs, which any stitch imitates: nothing to learn downstream)."""
    from evostitch.models import load_model

    model = load_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        i = torch.randint(len(train), (64,), generator=gen).tolist()
        x, y = torch.stack([train[j][0] for j in i]), torch.tensor([int(train[j][1]) for j in i])
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_downstream_stage_keeps_parents_exact_and_lowers_the_offspring_loss():
    torch.manual_seed(0)
    train, val = load_dataset("digits", "train"), load_dataset("digits", "val")
    a, b = trained("demo:resnet_like", train), trained("demo:mobilenet_like", train)
    net = Supernet.build(a, b, (1, 8, 8))
    train_stitches(net, train, fit_samples=256, progress=False)
    x = torch.stack([val[i][0] for i in range(128)])
    parents = {k: v.clone() for k, v in net.parents.state_dict().items()}
    wanted = [p.requires_grad for p in net.parents.parameters()]
    with torch.no_grad():
        before_refs = [net(x, g) for g in net.reference_genotypes]
    rng = random.Random(1)
    held = [draw_offspring(net, rng, (0.1, 0.3)) for _ in range(24)]
    before = offspring_loss(net, x, held)
    history = train_downstream(net, train, steps=60, batch_size=32, seed=0, progress=False)
    after = offspring_loss(net, x, held)
    assert len(history) == 60 and all(map(torch.isfinite, torch.tensor(history)))
    assert after < 0.9 * before, (before, after)  # held-out offspring, never trained on x
    for key, value in net.parents.state_dict().items():
        assert torch.equal(value, parents[key]), key
    with torch.no_grad():
        for g, ref in zip(net.reference_genotypes, before_refs, strict=True):
            assert torch.equal(net(x, g), ref)  # references use no stitch: unchanged
    assert [p.requires_grad for p in net.parents.parameters()] == wanted  # as they were
