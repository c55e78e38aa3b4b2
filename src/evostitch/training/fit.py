"""Stitches fitted in closed form, and how well each imitates its target on held-out
images. Both walk the parents alone (no switch taken) over batches of inputs."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable

import torch

from ..devices import resolve_device
from ..errors import SupernetError
from ..progress import progress_bar
from ..supernet import Supernet, Switch
from .walks import CleanWalk

RIDGE = 1e-2  # relative to the mean input variance; docs/METHOD.md section 4 measures it
MIN_FIT_MEMORY = 256 * 2**20  # the default budget of the equations is at least this


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


def equations_bytes(net: Supernet, dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """Per stitch, the memory its normal equations take: [cin+1, cin+1+cout] numbers per
    linear map, which outweighs the stitch itself (cin+1 against cout per input)."""
    size = torch.empty(0, dtype=dtype).element_size()
    return {
        key: sum(
            (layer.weight.shape[1] + 1) * sum(layer.weight.shape[:2], 1) * size
            for layer in (stitch.layer, stitch.prefix)
            if layer is not None
        )
        for key, stitch in net.stitches.items()
    }


def fit_passes(sizes: dict[str, int], budget: int) -> list[list[str]]:
    """Stitches split into passes whose equations take at most `budget` bytes each (a
    stitch over it alone), few and balanced: each stitch, largest first, goes to the
    lightest pass. Every pass walks the images once more."""
    alone = [[k] for k in sorted(sizes, key=lambda k: (-sizes[k], k)) if sizes[k] > budget]
    rest = {k: v for k, v in sizes.items() if v <= budget}
    n = math.ceil(sum(rest.values()) / budget)
    while rest:
        loads = [(0, i) for i in range(n)]
        passes: list[list[str]] = [[] for _ in range(n)]
        for key in sorted(rest, key=lambda k: (-rest[k], k)):
            load, i = heapq.heappop(loads)
            passes[i].append(key)
            heapq.heappush(loads, (load + rest[key], i))
        if max(load for load, _ in loads) <= budget:
            return alone + [p for p in passes if p]
        n += 1
    return alone


def default_fit_memory(net: Supernet) -> int:
    """The equations' default budget: the stitches' own weights, at least
    `MIN_FIT_MEMORY` (so small supernetworks fit in one pass)."""
    weights = sum(p.numel() * p.element_size() for p in net.stitches.parameters())
    return max(weights, MIN_FIT_MEMORY)


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
    memory: int | None = None,
    progress: bool = False,
) -> None:
    """Set every stitch to the ridge least-squares map from its source to its target.

    Source and target are the parents' own tensors on `images` (a tensor, or an iterable
    of input batches, `total` images in all for the progress bar). The fit is the
    stitch's MSE optimum there (beyond the paper, which starts from a random map): on
    pretrained parents it is most of what makes stitches hold. `ridge` is relative to the
    mean input variance; sums accumulate in `dtype` (float32 halves the memory of
    float64 and is as exact, the data being centred), the solve runs in float64.

    The equations of all stitches at once can take twice their weights (1.8 GiB for
    resnet50 x resnext50): they are accumulated in passes over `images` whose equations
    take at most `memory` bytes (default `default_fit_memory`), each stitch solved and
    freed at the end of its pass. The result does not depend on the number of passes;
    more than one needs `images` that can be iterated again (a tensor, a list, a
    DataLoader).
    """
    if memory is not None and memory < 1:
        raise SupernetError(f"the fit's memory budget must be at least 1 byte; got {memory}")
    device = resolve_device(device)
    net.to(device)
    budget = default_fit_memory(net) if memory is None else memory
    passes = fit_passes(equations_bytes(net, dtype), budget)
    if isinstance(images, torch.Tensor):
        images, total = images.split(batch_size), len(images)
    elif len(passes) > 1 and iter(images) is images:
        raise SupernetError(
            f"the least-squares fit needs {len(passes)} passes over its images within "
            f"{budget / 2**20:.0f} MiB, but they come from a one-shot iterator: pass a "
            "tensor, a list or a DataLoader, or a larger memory budget"
        )
    for n, chosen in enumerate(passes, 1):
        _fit_pass(
            net, images, set(chosen), ridge=ridge, dtype=dtype, device=device, amp=amp,
            total=total, progress=progress,
            description="fitting stitches (least squares"
            + (f", pass {n} of {len(passes)})" if len(passes) > 1 else ")"),
        )  # fmt: skip


def _fit_pass(net, images, chosen: set[str], *, ridge, dtype, description, **walk) -> None:
    """Accumulate the `chosen` stitches' equations over one walk of `images`, then set
    each to its solution."""
    normal: dict[tuple[str, int], _Normal] = {}  # (stitch, its linear map) -> equations
    _walk(net, images, accumulator(net, normal, dtype, chosen), description=description, **walk)
    solve_into(net, normal, ridge)


def accumulator(
    net: Supernet, normal: dict, dtype: torch.dtype, chosen: set[str] | None = None
) -> Callable[[Switch, torch.Tensor, torch.Tensor], None]:
    """A walk's visit that adds each (`chosen`) stitch's (source, target) rows to its
    normal equations in `normal`, keyed (stitch, linear map)."""

    def accumulate(sw: Switch, source: torch.Tensor, target: torch.Tensor) -> None:
        if chosen is not None and sw.stitch not in chosen:
            return
        rows = net.stitches[sw.stitch].rows(source.float(), target.float())
        for i, (x, y) in enumerate(rows):
            if (sw.stitch, i) not in normal:
                normal[sw.stitch, i] = _Normal(x, y, dtype)
            normal[sw.stitch, i].add(x, y)

    return accumulate


def solve_into(net: Supernet, normal: dict, ridge: float) -> None:
    """Set every stitch map of `normal` to its ridge solution."""
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
