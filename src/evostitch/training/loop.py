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

import dataclasses
import math
from dataclasses import dataclass
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
from .fit import RIDGE, default_fit_memory, held_out_losses, least_squares_init
from .optimizers import Pending, StitchOptimizers
from .result import TrainResult, point_name
from .walks import forward_random

DEFAULT_FIT_SAMPLES = 2048  # images of the least-squares fit
DEFAULT_STEPS = 0  # gradient steps after it
HELD_OUT = 256  # images kept out of fit and training to measure each stitch


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


@dataclass(frozen=True)
class TrainSettings:
    """How `train_stitches` trains (each field is also one of its keywords).

    The least-squares fit on `fit_samples` images (0: keep the weights; `ridge`: its
    penalty relative to the mean input variance; `fit_memory`: the bytes its equations may
    take at once, the images walked once per pass that fits, see `least_squares_init`);
    then gradient steps: `steps`, or `epochs` / `samples` of the training images (at most
    one; default `DEFAULT_STEPS`), AdamW at `lr` and `weight_decay`, each switch flipped
    with probability `p`, toward the parents' clean tensors (`clean_targets`); then
    `downstream` steps of the downstream stage (None: `downstream.default_steps`).
    `held_out` images (at most a fifth of the data) are never fitted or trained on.
    Batches of `batch_size` from a DataLoader with `workers` processes; `amp` ("bf16",
    "fp16") runs the frozen parents under autocast; a checkpoint every
    `checkpoint_every` steps; everything seeded by `seed`."""

    fit_samples: int = DEFAULT_FIT_SAMPLES
    steps: int | None = None
    epochs: float | None = None
    samples: int | None = None
    held_out: int = HELD_OUT
    ridge: float = RIDGE
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    p: float = 0.5
    clean_targets: bool = True
    seed: int = 0
    amp: str | None = None
    checkpoint_every: int = 100
    workers: int | None = None
    fit_memory: int | None = None
    downstream: int | None = None


def train_stitches(
    net: Supernet,
    data: Dataset | DataLoader,
    settings: TrainSettings | None = None,
    *,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_identity: dict | None = None,
    progress: bool = True,
    **options,
) -> TrainResult:
    """Fit and train every stitch of `net` on the inputs of `data`, a map-style Dataset
    of (input, target) pairs or a DataLoader over one (labels are not used), as
    `settings` say (`options`: any of its fields, replacing them); each stitch's relative
    loss on the held-out images is returned.

    `device` (default: CUDA when available) says where; stitches stay float32. With
    `checkpoint_dir`, state is saved after the fit and every `checkpoint_every` steps, and
    a run started with the same arguments resumes from there (said in one line; one with
    other arguments, other parents or other `checkpoint_identity`, the caller's own
    settings such as the data spec, is refused in one line naming what differs).
    """
    try:
        settings = dataclasses.replace(settings or TrainSettings(), **options)
    except TypeError:
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(TrainSettings)})
        raise TypeError(f"train_stitches() got unexpected keyword arguments {unknown}") from None
    trainer = _Trainer(net, data, settings, device, progress)
    return trainer.run(checkpoint_dir, checkpoint_identity)


class _Trainer:
    """One call of `train_stitches`: its split of the data, its budgets, and the stages in
    turn (fit, gradient steps, downstream stage, held-out losses), checkpointed."""

    def __init__(self, net: Supernet, data, s: TrainSettings, device, progress: bool) -> None:
        data, own_workers = unwrap(data, "stitch training")
        self.workers = own_workers if s.workers is None else s.workers
        if s.fit_samples < 0 or s.held_out < 0:
            raise SupernetError(
                f"need fit_samples, held_out >= 0; got {s.fit_samples}, {s.held_out}"
            )
        if s.batch_size < 1 or not 0 <= s.seed < 2**32:
            raise SupernetError(
                f"need batch_size >= 1 and 0 <= seed < 2**32; got {s.batch_size}, {s.seed}"
            )
        self.fit, self.train, self.held = _split(len(data), s.fit_samples, s.held_out, s.seed)
        self.steps = _steps(len(self.train), s.batch_size, s.steps, s.epochs, s.samples)
        if s.downstream is not None and s.downstream < 0:
            raise SupernetError(f"need downstream >= 0 steps; got {s.downstream}")
        self.down = (
            stage.default_steps(len(self.train), s.batch_size)
            if s.downstream is None
            else s.downstream
        )
        self.device = resolve_device(device)
        check_amp(s.amp)
        self.net, self.data, self.s, self.progress = net, data, s, progress
        self.tail_from = self.steps - max(self.steps // 10, 1)
        net.to(self.device)
        net.parents.eval()
        net.stitches.train()
        self.opt = StitchOptimizers(net, lr=s.lr, weight_decay=s.weight_decay)
        self.ckpt: Path | None = None
        self.plan: dict = {}

    def identity(self, extra: dict | None) -> dict:
        """What a checkpoint must have been made with to be resumed."""
        s = self.s
        return {
            **(extra or {}),
            **{"seed": s.seed, "steps": self.steps, "fit_samples": len(self.fit)},
            **{"batch_size": s.batch_size, "ridge": s.ridge, "lr": s.lr},
            **{"weight_decay": s.weight_decay, "p": s.p, "amp": s.amp},
            **{"clean_targets": s.clean_targets, "held_out": len(self.held)},
            **{"train_samples": len(self.data), "fit_memory": s.fit_memory},
            "downstream": self.down,
        }

    def run(self, checkpoint_dir, checkpoint_identity: dict | None) -> TrainResult:
        net, steps = self.net, self.steps
        if checkpoint_dir is not None:
            self.ckpt = user_path(checkpoint_dir)
            self.plan = identity(net, self.identity(checkpoint_identity))
        pending = Pending()  # the optimiser state of whichever stage the checkpoint was in
        resumed = _resume(net, pending, self.ckpt, self.plan, steps + self.down, self.progress)
        start, history, stage_start = resumed if resumed is not None else (0, [], None)
        history, down_history = history[:steps], history[steps:]
        self.down_opt = stage.StageOptimizer(net)
        pending.apply(self.opt if start <= steps else self.down_opt)
        if resumed is None and self.fit:
            self.least_squares(history)
        sums, relative_sums = self.gradient_steps(start, history)
        net.stitches.eval()
        kl: list[float | None] = []
        if self.down:
            kl = self.downstream(start, history, down_history, stage_start)
        held_losses = self.held_out_losses()
        n_tail = max(steps - max(self.tail_from, start), 1)
        return TrainResult(
            {k: v / n_tail for k, v in sums.items()} if sums else {},
            steps,
            history,
            {k: v / n_tail for k, v in relative_sums.items()},
            held_losses,
            len(self.fit),
            len(self.held),
            self.down,
            down_history,
            kl,
        )

    def inputs(self, indices: list[int]):
        """The images at `indices`, in batches of 64, labels dropped."""
        return (x for x, _ in batches(self.data, _chunks(indices), workers=self.workers))

    def batch_stream(self, first: int, last: int, offset: int = 0, pin: bool = False):
        """Training batches `first` .. `last - 1` (batch k is `_batch_indices`' k + offset)."""
        n, size, seed = len(self.train), self.s.batch_size, self.s.seed
        order = (
            [self.train[i] for i in _batch_indices(n, size, k + offset, seed)]
            for k in range(first, last)
        )
        return batches(self.data, order, workers=self.workers, pin_memory=pin)

    def least_squares(self, history: list[float]) -> None:
        """The closed-form fit, checked finite, then checkpointed."""
        net = self.net
        least_squares_init(
            net, _Reiterable(lambda: self.inputs(self.fit)), ridge=self.s.ridge,
            device=self.device, amp=self.s.amp, total=len(self.fit),
            memory=self.s.fit_memory, progress=self.progress,
        )  # fmt: skip
        weights = {
            k: float(sum(w.detach().sum() for w in s.parameters())) for k, s in net.stitches.items()
        }
        _check_finite(net, weights, "in the least-squares fit")
        if self.ckpt is not None:
            save_checkpoint(net, self.opt, self.ckpt, 0, self.plan, history)

    def gradient_steps(self, start: int, history: list[float]) -> tuple[dict, dict]:
        """Steps `start` .. `steps - 1`, their mean relative loss appended to `history`;
        (sum of each stitch's loss, of its relative loss) over the last tenth."""
        net, s, steps, opt = self.net, self.s, self.steps, self.opt
        sums: dict[str, float] = {}
        relative_sums: dict[str, float] = {}
        bar_on = self.progress and steps > 0
        with progress_bar("training stitches", total=steps, enabled=bar_on) as bar:
            bar.update(completed=start)
            stream = self.batch_stream(start, steps, pin=self.device.type == "cuda")
            for step, (x, _) in zip(range(start, steps), stream, strict=True):
                opt.set_lr(0.5 * s.lr * (1 + math.cos(math.pi * step / steps)))
                x = x.to(self.device, non_blocking=True)
                gen = torch.Generator(device=self.device).manual_seed(s.seed * 7919 + step)
                variances: dict[str, float] = {}
                losses = forward_random(
                    net, x, p=s.p, on_loss=opt.learn, generator=gen,
                    clean_targets=s.clean_targets, variances=variances, amp=s.amp,
                )  # fmt: skip
                _check_finite(net, losses, f"at step {step}")
                relative = {k: v / max(variances[k], 1e-12) for k, v in losses.items()}
                mean = sum(relative.values()) / max(len(relative), 1)
                history.append(mean)
                if step >= self.tail_from:
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + v
                        relative_sums[k] = relative_sums.get(k, 0.0) + relative[k]
                bar.update(advance=1, description=f"training stitches (relative loss {mean:.3f})")
                if self.ckpt is not None and (
                    (step + 1) % s.checkpoint_every == 0 or step + 1 == steps
                ):
                    save_checkpoint(net, opt, self.ckpt, step + 1, self.plan, history)
        return sums, relative_sums

    def downstream(
        self, start: int, history: list[float], down_history: list[float], stage_start
    ) -> list[float | None]:
        """The downstream stage (`training.downstream.run_stage`), resumed from `start`."""
        net, s, steps, down, device = self.net, self.s, self.steps, self.down, self.device

        def checkpoint(done: int) -> None:
            if self.ckpt is not None and (done % s.checkpoint_every == 0 or done == down):
                save_checkpoint(
                    net, self.down_opt, self.ckpt, steps + done, self.plan,
                    history + down_history, run.start,
                )  # fmt: skip

        def stream(first: int):
            return (x.to(device) for x, _ in self.batch_stream(first, down, offset=steps))

        held = None
        if self.held:
            held = _Reiterable(lambda: (x.to(device) for x in self.inputs(self.held)))
        run = stage.StageRun(down, self.down_opt, max(start - steps, 0), s.seed, s.amp)
        run.history, run.after_step, run.progress = down_history, checkpoint, self.progress
        run.start = stage_start
        # the autograd graph within the fit's budget (default: the stitches' own weights)
        run.micro = stage.micro_batch(net, s.fit_memory or default_fit_memory(net))
        return stage.run_stage(net, stream, held, run)

    def held_out_losses(self) -> dict[str, float]:
        """Each stitch's relative loss on the held-out images (none: empty)."""
        if not self.held:
            return {}
        losses = held_out_losses(
            self.net, self.inputs(self.held), device=self.device, amp=self.s.amp,
            total=len(self.held), progress=self.progress,
        )  # fmt: skip
        _check_finite(self.net, losses, "on the held-out images")
        return losses


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
