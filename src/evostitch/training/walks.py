"""The passes stitch training makes over a supernetwork: the parents alone, handing each
stitch its (input, target) pair, and the training pass with random switches."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..devices import autocast
from ..supernet import Executor, Supernet, Switch


class CleanWalk(Executor):
    """Both parents alone (every switch off), handing each stitch's (input, target) pair to
    `visit` the moment both exist: nothing is kept beyond a plain forward's values."""

    def __init__(self, net: Supernet, visit: Callable, amp: str | None = None) -> None:
        super().__init__(net)
        self.visit, self.amp = visit, amp

    def node(self, key, inputs, x):
        with autocast(x.device, self.amp):
            return super().node(key, inputs, x)

    def switch(self, sw: Switch, on: bool, own: torch.Tensor, source: torch.Tensor):
        self.visit(sw, source, own)
        return own


def parent_tensors(
    net: Supernet, x: torch.Tensor, amp: str | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per stitch, its input and the tensor it stands in for, both computed by the
    parents alone on `x` (no switch taken; under autocast to `amp` when given). Holds every
    pair at once: for inspection and tests, not what training uses."""
    pairs = {}

    def keep(sw: Switch, source: torch.Tensor, own: torch.Tensor) -> None:
        pairs[sw.stitch] = (source.clone(), own.clone())  # clones: later in-place ops

    with torch.no_grad():
        CleanWalk(net, keep, amp).run(net.structure.full_plan(), x)
    return pairs


class _RandomSwitches(Executor):
    """Every node of every parent (no gradients), and at each matched point every stitch:
    trained against its target, and taken per sample with probability `p` (a point with
    m sources: each source in turn replaces the value with probability `p / m`).

    With `clean` each value is a (clean, mixed) pair walked in step: the parents' own
    tensor, the stitches' target, and the one with stitches taken, which feeds them. The
    two are one object until a stitch is taken upstream, so they are computed once there,
    and each is freed after its last read (no whole-network store of targets)."""

    def __init__(self, net, x, p, on_loss, generator, clean, amp=None) -> None:
        super().__init__(net)
        self.amp, self.clean = amp, clean
        self.n, self.device, self.p = x.shape[0], x.device, p
        self.on_loss, self.generator = on_loss, generator
        self.losses: dict[str, float] = {}
        self.variances: dict[str, float] = {}
        self.sources = {i + 1: len(o) for i, o in enumerate(net.structure.options)}
        self._target: torch.Tensor | None = None  # the point's own value, before any stitch

    def run(self, plan, x=None):
        return super().run(plan, (x, x))

    def node(self, key, inputs, x):
        with torch.no_grad(), autocast(self.device, self.amp):
            mixed = super().node(key, [m for _, m in inputs], x[1])
            if all(c is m for c, m in inputs):
                return mixed, mixed
            return super().node(key, [c for c, _ in inputs], x[0]), mixed

    def switch(self, sw: Switch, on: bool, own, source):
        clean, mixed = own
        if sw.value == 1:  # the point's first source: `mixed` is still its own value
            self._target = mixed.detach()  # float32 stitches, whatever the parents ran in
        target = self._target
        goal = (clean if self.clean else target).detach().float()
        with torch.enable_grad():
            out = self.net.stitches[sw.stitch](source[1].detach().float())
            loss = torch.nn.functional.mse_loss(out, goal)
        if self.on_loss is not None:
            self.on_loss(sw.stitch, loss)
        self.losses[sw.stitch] = float(loss.detach())
        self.variances[sw.stitch] = float(goal.var())
        p = self.p / self.sources[sw.index]
        mask = torch.rand(self.n, generator=self.generator, device=self.device) < p
        mask = mask.view(self.n, *([1] * (target.dim() - 1)))
        taken = torch.where(mask, out.detach().to(target.dtype), mixed.detach())
        return (clean, taken) if self.clean else (taken, taken)


def forward_random(
    net: Supernet,
    x: torch.Tensor,
    p: float = 0.5,
    on_loss: Callable[[str, torch.Tensor], None] | None = None,
    generator: torch.Generator | None = None,
    clean_targets: bool = False,
    variances: dict[str, float] | None = None,
    amp: str | None = None,
) -> dict[str, float]:
    """Stitch-training pass: every switch takes its stitch per sample with probability `p`.

    Each stitch learns to reproduce the tensor it would replace in this pass (MSE), or with
    `clean_targets` the parent's own tensor with no switch taken (computed in the same
    walk). Its loss is handed to `on_loss` at once (call `.backward()` there): inputs and
    targets are detached, so memory holds one stitch's graph at a time. Returns the
    losses; `variances`, when given, receives each target's variance. `amp` runs the
    parents under autocast.
    """
    walk = _RandomSwitches(net, x, p, on_loss, generator, clean_targets, amp)
    walk.run(net.structure.full_plan(), x)
    if variances is not None:
        variances.update(walk.variances)
    return walk.losses
