"""Stitch training: parents frozen, every stitch learns to imitate the tensor it replaces.

By default each stitch is fitted in closed form (`least_squares_init`) on
`DEFAULT_FIT_SAMPLES` images, and its loss is then measured on `HELD_OUT` images that
were never fitted on. On real pretrained parents this fit is what makes stitches hold;
gradient steps after it (`steps` or `epochs`) trade minutes for a little on some pairs
and nothing on others (docs/METHOD.md section 4 has the measurements).

A gradient step is the paper's (METHOD.md step 6): one forward pass trains all stitches
at once, switches flip at random per sample, each stitch's MSE loss is backpropagated as
soon as it is computed (inputs and targets detached, so memory holds one stitch's graph
at a time), then AdamW steps with a cosine learning rate. Each stitch's target is the
parent's *clean* tensor (no switch taken), not the one upstream stitches perturbed.
Runs are reproducible from `seed`; a checkpoint resumes to the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from torch.utils.data import DataLoader, Dataset

from ..data import batches, unwrap
from ..devices import check_amp, resolve_device
from ..errors import SupernetError
from ..files import user_path
from ..progress import progress_bar
from ..supernet import Supernet
from . import downstream as stage
from .checkpoint import identity, load_checkpoint, save_checkpoint
from .fit import RIDGE, held_out_losses, least_squares_init
from .walks import forward_random

DEFAULT_FIT_SAMPLES = 2048  # images of the least-squares fit
DEFAULT_STEPS = 0  # gradient steps after it
HELD_OUT = 256  # images kept out of fit and training to measure each stitch


@dataclass
class TrainResult:
    """How well the stitches imitate their targets, relative to the target's variance
    (1.0: no better than predicting the target's mean; 0: exact).

    `held_out_losses`: per stitch, on `held_out` images never fitted or trained on (the
    figure to read). `stitch_losses` / `relative_losses`: MSE and relative MSE during the
    gradient steps, mean over the last tenth (empty without gradient steps); `history`:
    the mean relative loss per step."""

    stitch_losses: dict[str, float]
    steps: int
    history: list[float] = field(default_factory=list)
    relative_losses: dict[str, float] = field(default_factory=dict)
    held_out_losses: dict[str, float] = field(default_factory=dict)
    fit_samples: int = 0
    held_out: int = 0
    downstream_steps: int = 0
    downstream_history: list[float] = field(default_factory=list)
    # the stage's measure (`downstream.held_out_loss`) before and after it; before is None
    # when the stage resumed from a checkpoint; empty without held-out images or stage
    downstream_held_out: list[float | None] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        user_path(path).write_text(json.dumps(vars(self), indent=1))

    def summary(self, net: Supernet, worst: int = 3) -> str:
        """One line for a person: the held-out losses' median, how many points are poor
        (> 0.5), and the worst ones by name."""
        losses = self.held_out_losses or self.relative_losses
        if not losses:
            return "stitches: no loss measured (no held-out images and no gradient steps)"
        where = f"on {self.held_out} held-out images" if self.held_out_losses else "in training"
        ranked = sorted(losses, key=losses.get, reverse=True)[:worst]
        names = ", ".join(f"{point_name(net, k)} {losses[k]:.2f}" for k in ranked)
        poor = sum(v > 0.5 for v in losses.values())
        line = (
            f"stitches: relative loss {where} (1.0 = no better than the target's mean): "
            f"median {statistics.median(losses.values()):.3f}, {poor} of {len(losses)} above "
            f"0.5; worst {names}"
        )
        if len(self.downstream_held_out) == 2:
            before, after = self.downstream_held_out
            change = f"{before:.3f} -> {after:.3f}" if before is not None else f"{after:.3f}"
            ran = len(self.downstream_history)
            steps = f"{self.downstream_steps} steps"
            if ran < self.downstream_steps:
                steps = f"stopped after {ran} of {steps}"
            line += (
                f"\ndownstream stage: {steps}; random offspring's KL "
                f"from the parents' output on the held-out images {change}"
            )
            if before is not None and after >= before:
                line += " (not lower: the stitches before the stage were kept)"
        return line


def point_name(net: Supernet, key: str) -> str:
    """A stitch as a person reads it: `A:source -> B:node`."""
    sw = next(s for s in net.switches if s.stitch == key)
    return f"{sw.src[0].upper()}:{sw.source} -> {sw.side.upper()}:{sw.node}"


def _split(n: int, fit_samples: int, held_out: int, seed: int):
    """(fit, train, held-out) indices of a seeded permutation: the held-out images are
    its last min(held_out, n // 5), never fitted or trained on; the fit takes the first
    `fit_samples` of the rest, gradient steps draw from all of the rest."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    keep = n - min(held_out, n // 5)
    return order[:keep][:fit_samples], order[:keep], order[keep:]


def _steps(n: int, batch_size: int, steps, epochs, samples) -> int:
    """The gradient budget in steps, from at most one of steps, epochs and samples."""
    given = {
        k: v
        for k, v in (("steps", steps), ("epochs", epochs), ("samples", samples))
        if v is not None
    }
    if len(given) > 1:
        raise SupernetError(f"give one gradient budget, not {' and '.join(given)}")
    if any(v < 0 for v in given.values()):
        raise SupernetError(f"the gradient budget must be >= 0, got {given}")
    if steps is not None:
        return int(steps)
    if epochs is not None or samples is not None:
        return math.ceil((samples if samples is not None else epochs * n) / batch_size)
    return DEFAULT_STEPS


def _chunks(indices: list[int], size: int = 64) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def _batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Positions of batch `step`: epochs are seeded permutations, so any step is reproducible."""
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[k * batch_size : (k + 1) * batch_size].tolist()


class _Reiterable:
    """An iterable that starts again on each `iter()`: the fit may walk its images in
    several passes."""

    def __init__(self, make) -> None:
        self.make = make

    def __iter__(self):
        return iter(self.make())


def train_stitches(
    net: Supernet,
    data: Dataset | DataLoader,
    *,
    fit_samples: int = DEFAULT_FIT_SAMPLES,
    steps: int | None = None,
    epochs: float | None = None,
    samples: int | None = None,
    held_out: int = HELD_OUT,
    ridge: float = RIDGE,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    p: float = 0.5,
    clean_targets: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    amp: str | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    workers: int | None = None,
    fit_memory: int | None = None,
    checkpoint_identity: dict | None = None,
    downstream: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fit and train every stitch of `net` on the inputs of `data`, a map-style Dataset
    of (input, target) pairs or a DataLoader over one (labels are not used).

    Stitches are fitted by least squares on `fit_samples` images (0: keep their weights;
    `ridge`: the fit's penalty relative to the mean input variance; `fit_memory`: the
    bytes its equations may take at once, the images walked once per pass that fits, see
    `least_squares_init`), then take gradient
    steps: `steps`, or `epochs` / `samples` of the training images (at most one; default
    `DEFAULT_STEPS`). `held_out` images (at most a fifth of the
    data) are never fitted or trained on; each stitch's relative loss there is returned.
    `device` (default: CUDA when available) and `amp` ("bf16", "fp16": the frozen
    parents run under autocast; stitches stay float32) say where and how. With
    `checkpoint_dir`, state is saved after the fit and every `checkpoint_every` steps, and
    a run started with the same arguments resumes from there (said in one line; one with
    other arguments, other parents or other `checkpoint_identity`, the caller's own
    settings such as the data spec, is refused in one line naming what differs). Batches
    stream from `data` through a DataLoader with `workers` processes
    (`evostitch.data.batches`). Then `downstream` steps (None: `downstream.default_steps`)
    train all stitches together on random offspring toward the parents' output
    (`training.downstream`), checkpointed and resumed in the same way.
    """
    data, own_workers = unwrap(data, "stitch training")
    workers = own_workers if workers is None else workers
    if fit_samples < 0 or held_out < 0:
        raise SupernetError(f"need fit_samples, held_out >= 0; got {fit_samples}, {held_out}")
    if batch_size < 1 or not 0 <= seed < 2**32:
        raise SupernetError(f"need batch_size >= 1 and 0 <= seed < 2**32; got {batch_size}, {seed}")
    fit, train, held = _split(len(data), fit_samples, held_out, seed)
    steps = _steps(len(train), batch_size, steps, epochs, samples)
    if downstream is not None and downstream < 0:
        raise SupernetError(f"need downstream >= 0 steps; got {downstream}")
    down = stage.default_steps(len(train), batch_size) if downstream is None else downstream
    device = resolve_device(device)
    check_amp(amp)
    net.to(device)
    net.parents.eval()
    net.stitches.train()
    opt = _StitchOptimizers(net, lr=lr, weight_decay=weight_decay)
    ckpt = user_path(checkpoint_dir) if checkpoint_dir is not None else None
    settings = {
        **(checkpoint_identity or {}),
        **{"seed": seed, "steps": steps, "fit_samples": len(fit), "batch_size": batch_size},
        **{"ridge": ridge, "lr": lr, "weight_decay": weight_decay, "p": p, "amp": amp},
        **{"clean_targets": clean_targets, "held_out": len(held), "train_samples": len(data)},
        "fit_memory": fit_memory,
        "downstream": down,
    }
    plan = identity(net, settings) if ckpt is not None else {}
    pending = _Pending()  # the optimiser state of whichever stage the checkpoint was in
    resumed = _resume(net, pending, ckpt, plan, steps + down, progress)
    start, history, stage_start = resumed if resumed is not None else (0, [], None)
    history, down_history = history[:steps], history[steps:]
    down_opt = stage.StageOptimizer(net)
    pending.apply(opt if start <= steps else down_opt)

    def inputs(indices: list[int]):
        return (x for x, _ in batches(data, _chunks(indices), workers=workers))

    if resumed is None and fit:
        least_squares_init(
            net, _Reiterable(lambda: inputs(fit)), ridge=ridge, device=device, amp=amp,
            total=len(fit), memory=fit_memory, progress=progress,
        )  # fmt: skip
        weights = {
            k: float(sum(w.detach().sum() for w in s.parameters())) for k, s in net.stitches.items()
        }
        _check_finite(net, weights, "in the least-squares fit")
        if ckpt is not None:
            save_checkpoint(net, opt, ckpt, 0, plan, history)
    sums: dict[str, float] = {}
    relative_sums: dict[str, float] = {}
    tail_from = steps - max(steps // 10, 1)
    with progress_bar("training stitches", total=steps, enabled=progress and steps > 0) as bar:
        bar.update(completed=start)
        order = (
            [train[i] for i in _batch_indices(len(train), batch_size, step, seed)]
            for step in range(start, steps)
        )
        stream = batches(data, order, workers=workers, pin_memory=device.type == "cuda")
        for step, (x, _) in zip(range(start, steps), stream, strict=True):
            opt.set_lr(0.5 * lr * (1 + math.cos(math.pi * step / steps)))
            x = x.to(device, non_blocking=True)
            gen = torch.Generator(device=device).manual_seed(seed * 7919 + step)
            variances: dict[str, float] = {}
            losses = forward_random(
                net,
                x,
                p=p,
                on_loss=opt.learn,
                generator=gen,
                clean_targets=clean_targets,
                variances=variances,
                amp=amp,
            )
            _check_finite(net, losses, f"at step {step}")
            relative = {k: v / max(variances[k], 1e-12) for k, v in losses.items()}
            mean = sum(relative.values()) / max(len(relative), 1)
            history.append(mean)
            if step >= tail_from:
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                    relative_sums[k] = relative_sums.get(k, 0.0) + relative[k]
            bar.update(advance=1, description=f"training stitches (relative loss {mean:.3f})")
            if ckpt is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                save_checkpoint(net, opt, ckpt, step + 1, plan, history)
    net.stitches.eval()
    held_images = _Reiterable(lambda: (x.to(device) for x in inputs(held))) if held else None
    kl: list[float | None] = []
    if down:

        def checkpoint(done: int) -> None:
            if ckpt is not None and (done % checkpoint_every == 0 or done == down):
                save_checkpoint(
                    net, down_opt, ckpt, steps + done, plan, history + down_history, run.start
                )

        def stream(first: int):
            order = ([train[i] for i in _batch_indices(len(train), batch_size, steps + k, seed)]
                     for k in range(first, down))  # fmt: skip
            return (x.to(device) for x, _ in batches(data, order, workers=workers))

        run = stage.StageRun(down, down_opt, max(start - steps, 0), seed, amp, down_history)
        run.after_step, run.progress, run.start = checkpoint, progress, stage_start
        kl = stage.run_stage(net, stream, held_images, run)
    held_losses = {}
    if held:
        held_losses = held_out_losses(
            net, inputs(held), device=device, amp=amp, total=len(held), progress=progress
        )
        _check_finite(net, held_losses, "on the held-out images")
    n_tail = max(steps - max(tail_from, start), 1)
    return TrainResult(
        {k: v / n_tail for k, v in sums.items()} if sums else {},
        steps,
        history,
        {k: v / n_tail for k, v in relative_sums.items()},
        held_losses,
        len(fit),
        len(held),
        down,
        down_history,
        kl,
    )


class _Pending:
    """Optimiser state read from a checkpoint before it is known which stage's it is."""

    def __init__(self) -> None:
        self.entries: dict[torch.Tensor, dict] = {}

    def state(self, p: torch.Tensor) -> dict:
        return {}

    def set_state(self, p: torch.Tensor, entry: dict) -> None:
        self.entries[p] = entry

    def apply(self, opt) -> None:
        for p, entry in self.entries.items():
            opt.set_state(p, entry)


def _resume(net: Supernet, opt, ckpt: Path | None, plan: dict, steps: int, progress: bool):
    """(step, history, the downstream stage's start) of a checkpoint in `ckpt` made for
    `plan`, said in one line; None without a checkpoint folder or a checkpoint in it."""
    resumed = load_checkpoint(net, opt, ckpt, plan) if ckpt is not None else None
    if resumed is not None and progress:
        Console(stderr=True, highlight=False).print(
            f"resuming stitch training from {escape(str(ckpt))} (step {resumed[0]} of {steps})",
            soft_wrap=True,
        )
    return resumed


class _StitchOptimizers:
    """One AdamW per stitch, stepped as soon as that stitch's loss is backpropagated and
    its gradients then dropped: one stitch's gradients exist at a time, not all of them.
    AdamW updates each parameter on its own, so this is one AdamW over all stitches."""

    def __init__(self, net: Supernet, lr: float, weight_decay: float) -> None:
        self.opts = {
            key: torch.optim.AdamW(stitch.parameters(), lr=lr, weight_decay=weight_decay)
            for key, stitch in net.stitches.items()
        }
        self.owner = {p: self.opts[k] for k, s in net.stitches.items() for p in s.parameters()}

    def set_lr(self, lr: float) -> None:
        for opt in self.opts.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def learn(self, key: str, loss: torch.Tensor) -> None:
        """Backpropagate stitch `key`'s loss and step it (a non-finite loss: no step)."""
        loss.backward()
        if torch.isfinite(loss):
            self.opts[key].step()
        self.opts[key].zero_grad(set_to_none=True)

    def state(self, p: torch.Tensor) -> dict:
        return self.owner[p].state.get(p, {})

    def set_state(self, p: torch.Tensor, entry: dict) -> None:
        self.owner[p].state[p] = entry


def _check_finite(net: Supernet, losses: dict[str, float], when: str) -> None:
    """A stitch whose loss (or weight) is NaN or infinite stops training, named; nothing
    is saved."""
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise SupernetError(
            f"stitch {bad[0]} ({point_name(net, bad[0])}) diverged {when} "
            f"(loss {losses[bad[0]]}); {len(bad)} stitch(es) in all: try a lower learning "
            "rate or check the parents give finite outputs on this data"
        )
