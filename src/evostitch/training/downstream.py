"""Second stage of stitch training: all stitches together, toward what the network they
sit in computes downstream (issue 37; EXPERIMENTAL, measured by
benchmarks/stitch_quality.py, not yet a default).

The least-squares fit makes each stitch imitate the tensor it replaces, alone. In an
offspring with several stitches each one receives inputs that earlier stitches produced
and its errors pass through the rest of the network, so chains of locally good stitches
break. Here random offspring are drawn as the search draws them (each switch stitched
with a probability p drawn per offspring, the output switch uniform) and every stitch
they use is trained, parents frozen, so that the offspring's output matches the output
the parents alone give for the same output choice (distillation: the KL divergence from
the parents' softmax to the offspring's, over dimension 1, so a segmenter's pixels too).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ..data import batches, unwrap
from ..devices import autocast, resolve_device
from ..errors import SupernetError
from ..progress import progress_bar
from ..supernet import Supernet


def draw_offspring(net: Supernet, rng: random.Random, p: tuple[float, float]) -> tuple[int, ...]:
    """A canonical offspring with at least one stitch: output uniform, each switch on with
    a probability drawn uniformly from `p` (a switch of several sources: one of them)."""
    spec = net.genotype_spec
    for _ in range(1000):
        rate = rng.uniform(*p)
        g = [rng.randrange(spec[0])]
        g += [rng.randrange(1, c) if rng.random() < rate else 0 for c in spec[1:]]
        g = net.canonical(g)
        if net.plan(g).stitched:
            return g
    raise SupernetError("no offspring with a stitch in 1,000 draws: is p too small?")


def distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of their softmax over dimension 1, summed over classes and
    averaged over everything else (samples, pixels)."""
    t = teacher.float().log_softmax(1)
    s = student.float().log_softmax(1)
    return (t.exp() * (t - s)).sum(1).mean()


def train_downstream(
    net: Supernet,
    data: Dataset,
    *,
    steps: int,
    batch_size: int = 32,
    groups: int = 4,
    lr: float = 3e-4,
    p: Sequence[float] = (0.02, 0.3),
    seed: int = 0,
    device: str | torch.device | None = None,
    amp: str | None = None,
    progress: bool = True,
) -> list[float]:
    """`steps` AdamW steps on all stitches (parents frozen); each step's batch is split
    into `groups` random offspring (`draw_offspring`). Returns the loss per step."""
    data, workers = unwrap(data, "downstream stitch training")
    device = resolve_device(device)
    net.to(device)
    net.parents.eval()
    grads = {param: param.requires_grad for param in net.parents.parameters()}
    for param in grads:
        param.requires_grad_(False)
    net.stitches.train()
    inplace = [m for m in net.parents.modules() if getattr(m, "inplace", False) is True]
    for m in inplace:  # an in-place activation would overwrite what backward needs
        m.inplace = False
    opt = torch.optim.AdamW(net.stitches.parameters(), lr=lr, weight_decay=0.0)
    rng, order = random.Random(seed), torch.Generator().manual_seed(seed)
    refs = dict(enumerate(net.reference_genotypes))
    index = (torch.randperm(len(data), generator=order)[:batch_size].tolist() for _ in range(steps))
    history: list[float] = []
    with progress_bar("training stitches downstream", total=steps, enabled=progress) as bar:
        for step, (x, _) in enumerate(batches(data, index, workers=workers)):
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / steps))
            total = 0.0
            for chunk in x.to(device).chunk(groups):
                g = draw_offspring(net, rng, (p[0], p[1]))
                with torch.no_grad(), autocast(device, amp):
                    teacher = net(chunk, refs[g[0]])
                with autocast(device, amp):
                    loss = distillation(net(chunk, g), teacher) / groups
                loss.backward()
                total += float(loss.detach())
            opt.step()
            opt.zero_grad(set_to_none=True)
            history.append(total)
            bar.update(advance=1, description=f"training stitches downstream (KL {total:.3f})")
    net.stitches.eval()
    for m in inplace:
        m.inplace = True
    for param, wanted in grads.items():
        param.requires_grad_(wanted)
    return history
