"""Second stage of stitch training: all stitches together, toward what the network they
sit in computes downstream (issue 37; docs/METHOD.md section 4 has the measurements).

The least-squares fit makes each stitch imitate the tensor it replaces, alone. In an
offspring with several stitches each one receives inputs that earlier stitches produced
and its errors pass through the rest of the network, so chains of locally good stitches
break. Here every sample of a batch runs its own random offspring, drawn as the search
draws them (each switch stitched with a probability drawn per offspring from `P_RANGE`,
the output switch uniform), all in one walk over both parents, and every stitch is
trained, parents frozen, so that each offspring's output matches the output the parents
alone give for the same output choice (distillation: the KL divergence from the parents'
softmax to the offspring's, over dimension 1, so a segmenter's pixels too).

Adafactor (relative steps, factored second moments) rather than AdamW: its step is a
fraction of each stitch's own weight scale, which least squares sets per stitch, and its
state is a few vectors per stitch, not two copies of the weights. Measured on the demo
pair (100 steps from the same fit): Adafactor 0.796 of the parents' accuracy at p = 0.1
against AdamW's best 0.722.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch

from ..devices import autocast
from ..errors import SupernetError
from ..progress import progress_bar
from ..supernet import Executor, Supernet, Switch
from ..supernet.executor import combine_outputs

# batches of the downstream stage (capped by EPOCHS of the data). None by default: once
# the poor stitches are left out (fitting.leave_out_poor) the fit alone gives the better
# fronts (demo, 5 seeds: hypervolume 0.5539 against 0.5397 with 100 steps; METHOD.md 4)
DEFAULT_STEPS = 0
EPOCHS = 3  # at most this many passes over the training images
LR = 1e-2  # Adafactor's relative step: a hundredth of each stitch's weight scale
P_RANGE = (0.02, 0.3)  # per offspring, the probability that a switch is stitched
CHECK = 0.25  # the held-out loss is first checked after this fraction of the steps


def default_steps(train_images: int, batch_size: int) -> int:
    """`DEFAULT_STEPS`, or fewer on a small dataset (at most `EPOCHS` passes over it)."""
    return min(DEFAULT_STEPS, math.ceil(EPOCHS * train_images / batch_size))


def draw_offspring(
    net: Supernet, rng: random.Random, p: tuple[float, float] | None = None
) -> tuple[int, ...]:
    """A canonical offspring with at least one stitch: output uniform, each switch on with
    a probability drawn uniformly from `p` (default `P_RANGE`; a switch of several
    sources: one of them)."""
    spec, p = net.genotype_spec, p or P_RANGE
    for _ in range(1000):
        rate = rng.uniform(*p)
        g = [rng.randrange(spec[0])]
        g += [rng.randrange(1, c) if rng.random() < rate else 0 for c in spec[1:]]
        g = net.canonical(g)
        if net.plan(g).stitched:
            return g
    raise SupernetError("no offspring with a stitch in 1,000 draws: is p too small?")


def step_offspring(net: Supernet, seed: int, step: int, n: int) -> list[tuple[int, ...]]:
    """The `n` offspring of step `step`: a function of (seed, step) alone, so a resumed
    stage draws what an uninterrupted one would."""
    rng = random.Random(seed * 1_000_003 + step)
    return [draw_offspring(net, rng) for _ in range(n)]


def distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of their softmax over dimension 1, summed over classes and
    averaged over everything else (samples, pixels)."""
    t = teacher.float().log_softmax(1)
    s = student.float().log_softmax(1)
    return (t.exp() * (t - s)).sum(1).mean()


class _SampleOffspring(Executor):
    """Both parents over the full plan, each sample of the batch its own offspring: values
    are (clean, mixed) pairs, `clean` the parents alone (no gradient; the teacher) and
    `mixed` with each sample's switches taken (stitches and what follows them carry
    gradients). A canonical genotype's switches off its output's path are 0, so a
    sample's mixed output is exactly its offspring's."""

    def __init__(self, net: Supernet, genotypes: list[tuple[int, ...]], amp: str | None) -> None:
        super().__init__(net)
        self.genotypes, self.amp = genotypes, amp

    def run(self, plan, x=None):
        """Every side's (clean, mixed) output, from the full plan."""
        self.device = x.device
        steps = plan.steps[:-1] + (("output", "every side"),)  # the full plan has none
        return super().run(dataclasses.replace(plan, steps=steps), (x, x))

    def node(self, key, inputs, x):
        with autocast(self.device, self.amp):
            mixed = super().node(key, [m for _, m in inputs], x[1])
            if all(c is m for c, m in inputs):
                return mixed, mixed
            with torch.no_grad():
                return super().node(key, [c for c, _ in inputs], x[0]), mixed

    def switch(self, sw: Switch, on: bool, own, source):
        take = torch.tensor([g[sw.index] == sw.value for g in self.genotypes])
        if not bool(take.any()):
            return own
        take = take.to(self.device)
        clean, mixed = own
        out = self.net.stitches[sw.stitch](source[1][take].float())
        mixed = mixed.clone()
        mixed[take] = out.to(mixed.dtype)
        return clean, mixed

    def output(self, choice, outputs):
        return outputs


def offspring_loss(
    net: Supernet, x: torch.Tensor, genotypes: list[tuple[int, ...]], amp: str | None = None
) -> torch.Tensor:
    """Mean distillation loss of a batch whose sample i runs offspring `genotypes[i]`,
    against the parents' output for the same output choice, in one walk over both."""
    outputs = _SampleOffspring(net, genotypes, amp).run(net.structure.full_plan(), x)
    loss = x.new_zeros((), dtype=torch.float32)
    for k, choice in enumerate(net.output_choices):
        rows = torch.tensor([g[0] == k for g in genotypes], device=x.device)
        if not bool(rows.any()):
            continue
        pick = [{s: v[i][rows] for s, v in outputs.items() if v is not None} for i in (0, 1)]
        teacher, student = (combine_outputs(choice, o) for o in pick)
        loss = loss + distillation(student, teacher) * (int(rows.sum()) / len(genotypes))
    return loss


@contextmanager
def stitches_only(net: Supernet) -> Iterator[None]:
    """Parents frozen in eval mode and without in-place activations (they would overwrite
    what backward needs), stitches in train mode; all restored afterwards."""
    grads = {param: param.requires_grad for param in net.parents.parameters()}
    inplace = [m for m in net.parents.modules() if getattr(m, "inplace", False) is True]
    net.parents.eval()
    net.stitches.train()
    for param in grads:
        param.requires_grad_(False)
    for m in inplace:
        m.inplace = False
    try:
        yield
    finally:
        net.stitches.eval()
        for m in inplace:
            m.inplace = True
        for param, wanted in grads.items():
            param.requires_grad_(wanted)


class StageOptimizer:
    """Adafactor over every stitch, with the per-parameter state access checkpoints use."""

    def __init__(self, net: Supernet, lr: float = LR) -> None:
        self.opt = torch.optim.Adafactor(net.stitches.parameters(), lr=lr)
        self.lr = lr

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def state(self, p: torch.Tensor) -> dict:
        return self.opt.state.get(p, {})

    def set_state(self, p: torch.Tensor, entry: dict) -> None:
        self.opt.state[p] = entry


@dataclasses.dataclass
class StageRun:
    """One run of the stage: steps `first` .. `steps - 1` of `steps`, their losses appended
    to `history`; `after_step(n)` is called after step n - 1 (checkpoints)."""

    steps: int
    opt: StageOptimizer
    first: int = 0
    seed: int = 0
    amp: str | None = None
    history: list[float] = dataclasses.field(default_factory=list)
    after_step: Callable[[int], None] | None = None
    progress: bool = True
    # the held-out loss before the stage and the stitches it started from (a resumed
    # stage gets them from its checkpoint: it needs them to check and undo itself)
    start: tuple[float, dict[str, torch.Tensor]] | None = None
    micro: int | None = None  # images per backward pass (None: the whole batch)


def micro_batch(net: Supernet, memory: int) -> int:
    """Images per backward pass, so that the autograd graph (every tensor of both parents
    for each image, the most a walk can keep) takes at most `memory` bytes. A step's
    gradient is the same in any number of passes: the loss is a sum over images."""
    per_image = sum(
        math.prod(n.shape[1:]) * 4
        for g in net.graphs.values()
        for n in g.nodes.values()
        if n.shape is not None
    )
    return max(1, memory // max(per_image, 1))


def train_downstream(
    net: Supernet, batches: Iterable[torch.Tensor], run: StageRun, until: int | None = None
) -> list[float]:
    """The steps of `run` (up to step `until`, default all), one batch of `batches`
    (inputs on the stitches' device) each; returns `run.history`. The learning rate
    follows a cosine over `run.steps`."""
    steps, first, opt = run.steps, run.first, run.opt
    last = steps if until is None else min(until, steps)
    bar_on = run.progress and last > first
    with (
        stitches_only(net),
        progress_bar("training stitches downstream", total=steps, enabled=bar_on) as bar,
    ):
        bar.update(completed=first)
        for step, x in zip(range(first, last), batches, strict=False):
            opt.set_lr(0.5 * opt.lr * (1 + math.cos(math.pi * step / steps)))
            genotypes = step_offspring(net, run.seed, step, len(x))
            loss = _accumulate(net, x, genotypes, run.micro or len(x), run)
            if loss is None:
                raise SupernetError(
                    f"the downstream stage diverged at step {step}: check the parents give "
                    "finite outputs on this data, or use --downstream-steps 0"
                )
            opt.opt.step()
            opt.opt.zero_grad(set_to_none=True)
            run.history.append(loss)
            bar.update(advance=1, description=f"training stitches downstream (KL {loss:.3f})")
            if run.after_step is not None:
                run.after_step(step + 1)
    return run.history


def _accumulate(
    net: Supernet, x: torch.Tensor, genotypes: list[tuple[int, ...]], micro: int, run: StageRun
) -> float | None:
    """The batch's loss, its gradient accumulated `micro` images at a time (each part's
    loss weighted by its share of the batch); None if a part's loss is not finite."""
    total = 0.0
    for i in range(0, len(x), micro):
        share = len(x[i : i + micro]) / len(x)
        part = offspring_loss(net, x[i : i + micro], genotypes[i : i + micro], run.amp) * share
        if not torch.isfinite(part):
            return None
        part.backward()
        total += float(part.detach())
    return total


def held_out_loss(
    net: Supernet, batches: Iterable[torch.Tensor], seed: int, amp: str | None = None
) -> float:
    """Mean distillation loss of random offspring (one per image, drawn from `seed`) on
    held-out images: the stage's own measure, before and after it."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i, x in enumerate(batches):
            genotypes = step_offspring(net, seed + 1, i, len(x))
            total += float(offspring_loss(net, x, genotypes, amp)) * len(x)
            count += len(x)
    return total / max(count, 1)


def run_stage(
    net: Supernet,
    stream: Callable[[int], Iterable[torch.Tensor]],
    held: Iterable[torch.Tensor] | None,
    run: StageRun,
) -> list[float | None]:
    """`run` on `stream(run.first)`'s batches, measured on `held` images before and after:
    [before, after] (empty without `held`). A stage that does not lower the held-out loss
    is undone: the stitches it started from are kept (Adafactor takes steps of the same
    relative size however small the gradient, so stitches that were already exact would
    only drift). The loss is first checked after `CHECK` of the steps, and a stage that
    has not lowered it by then stops there, undone (on pretrained EfficientNet-Lites it
    only rose: METHOD.md section 4). A resumed stage checks and undoes itself against
    `run.start` (set here when the stage starts, and kept in its checkpoints); one resumed
    without it (a checkpoint from before they were kept) is only measured after."""
    if held is not None and run.first == 0 and run.start is None:
        before = held_out_loss(net, held, run.seed, run.amp)
        run.start = (before, {k: v.clone() for k, v in net.stitches.state_dict().items()})
    measure = held is not None and run.start is not None
    batches = stream(run.first)
    checks = [math.ceil(CHECK * run.steps), run.steps] if measure else [run.steps]
    after = None
    for until in sorted({c for c in checks if c >= run.first}):
        train_downstream(net, batches, run, until=until)
        run = dataclasses.replace(run, first=max(run.first, until))
        if held is None:
            return []
        after = held_out_loss(net, held, run.seed, run.amp)
        if measure and after >= run.start[0]:
            net.stitches.load_state_dict(run.start[1])  # undone
            if run.after_step is not None:
                run.after_step(run.steps)  # the stage's final checkpoint holds what was kept
            break
    return [run.start[0] if measure else None, after]
