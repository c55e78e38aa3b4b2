"""Stitches fitted in closed form, and how well each imitates its target on held-out
images. Both walk the parents alone (no switch taken) over batches of inputs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..devices import resolve_device
from ..progress import progress_bar
from ..supernet import Supernet, Switch
from .walks import CleanWalk

RIDGE = 1e-2  # relative to the mean input variance; docs/METHOD.md section 4 measures it


def _walk(
    net: Supernet,
    inputs: Iterable[torch.Tensor],
    visit: Callable,
    *,
    device: torch.device,
    amp: str | None,
    description: str,
    total: int | None,
    progress: bool,
) -> None:
    """Run the parents alone over every batch of `inputs`, `visit`ing each stitch's
    (input, target) pair; a progress bar counts images."""
    with torch.no_grad(), progress_bar(description, total=total, enabled=progress) as bar:
        for x in inputs:
            CleanWalk(net, visit, amp).run(net.structure.full_plan(), x.to(device))
            bar.update(advance=x.shape[0])


class _Normal:
    """One stitch's normal equations, accumulated around a shift (the first batch's
    means): centred sums keep float32 accumulation close to float64, where the sums of
    raw activations with large means lose the fit to rounding."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> None:
        self.sx, self.sy, self.dtype = x.mean(0), y.mean(0), dtype
        self.xtx = x.new_zeros(x.shape[1] + 1, x.shape[1] + 1, dtype=dtype)
        self.xty = x.new_zeros(x.shape[1] + 1, y.shape[1], dtype=dtype)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = torch.cat([x - self.sx, torch.ones_like(x[:, :1])], 1).to(self.dtype)
        self.xtx += x.T @ x
        self.xty += x.T @ (y - self.sy).to(self.dtype)

    def solve(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [cout, cin], bias) of the ridge fit; the bias is not penalised."""
        xtx, xty = self.xtx.double(), self.xty.double()
        reg = torch.diag(xtx)[:-1].mean() * ridge + 1e-12
        penalty = torch.diag(torch.cat([reg.expand(len(xtx) - 1), reg.new_zeros(1)]))
        sol = torch.linalg.solve(xtx + penalty, xty)
        weight = sol[:-1].T
        bias = sol[-1] + self.sy.double() - weight @ self.sx.double()
        return weight.float(), bias.float()


def least_squares_init(
    net: Supernet,
    images: torch.Tensor | Iterable[torch.Tensor],
    *,
    batch_size: int = 64,
    ridge: float = RIDGE,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    amp: str | None = None,
    total: int | None = None,
    progress: bool = False,
) -> None:
    """Set every stitch to the ridge least-squares map from its source to its target.

    Source and target are the parents' own tensors on `images` (a tensor, or an iterable
    of input batches, `total` images in all for the progress bar). The fit is the
    stitch's MSE optimum there (beyond the paper, which starts from a random map): on
    pretrained parents it is most of what makes stitches hold. `ridge` is relative to the
    mean input variance; sums accumulate in `dtype` (float32 halves the memory of
    float64 and is as exact, the data being centred), the solve runs in float64.
    """
    device = resolve_device(device)
    net.to(device)
    normal: dict[tuple[str, int], _Normal] = {}  # (stitch, its linear map) -> equations

    def accumulate(sw: Switch, source: torch.Tensor, target: torch.Tensor) -> None:
        rows = net.stitches[sw.stitch].rows(source.float(), target.float())
        for i, (x, y) in enumerate(rows):
            if (sw.stitch, i) not in normal:
                normal[sw.stitch, i] = _Normal(x, y, dtype)
            normal[sw.stitch, i].add(x, y)

    if isinstance(images, torch.Tensor):
        images, total = images.split(batch_size), len(images)
    _walk(
        net,
        images,
        accumulate,
        device=device,
        amp=amp,
        total=total,
        description="fitting stitches (least squares)",
        progress=progress,
    )
    for (key, i), eq in normal.items():
        net.stitches[key].set_linear(*eq.solve(ridge), index=i)


def held_out_losses(
    net: Supernet,
    images: Iterable[torch.Tensor],
    *,
    device: str | torch.device | None = None,
    amp: str | None = None,
    total: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Per stitch, its MSE on `images` relative to its target's variance there: 1.0 is
    no better than predicting the target's mean, 0 is exact. Targets are the parents'
    own tensors (no switch taken), so each figure is that stitch's alone."""
    device = resolve_device(device)
    net.to(device)
    sums: dict[str, torch.Tensor] = {}  # squared error, sum, sum of squares, count

    def measure(sw: Switch, source: torch.Tensor, target: torch.Tensor) -> None:
        y = target.double()
        out = net.stitches[sw.stitch](source.float()).double()
        part = torch.stack([(out - y).square().sum(), y.sum(), y.square().sum()])
        part = torch.cat([part, part.new_tensor([y.numel()])])
        sums[sw.stitch] = sums[sw.stitch] + part if sw.stitch in sums else part

    _walk(
        net,
        images,
        measure,
        device=device,
        amp=amp,
        total=total,
        description="held-out stitch losses",
        progress=progress,
    )
    relative = {}
    for key, (sse, s, ss, n) in ((k, v.tolist()) for k, v in sums.items()):
        variance = max(ss / n - (s / n) ** 2, 1e-12)
        relative[key] = sse / n / variance
    return relative
