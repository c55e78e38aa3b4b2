"""Stitch training: parents frozen, every stitch learns to imitate the tensor it replaces.

One forward pass trains all stitches at once (METHOD.md step 6): switches flip at
random per sample, each stitch's MSE loss is backpropagated as soon as it is
computed (its input and target are detached, so memory holds one stitch's graph at
a time), then AdamW takes one step with a per-batch cosine learning rate.
Runs are reproducible from `seed`, and a checkpoint resumes to the same weights as an
uninterrupted run.

Two refinements beyond the paper, both on by default: stitches start from a ridge
least-squares fit of their MSE (`least_squares_init`), and each stitch's target is the
parent's *clean* tensor (computed with no switch taken) rather than the tensor in the
mixed forward pass, which upstream stitches have already perturbed. On the demo pair the
median random offspring keeps ~99% of the parents' accuracy after one epoch
(benchmarks/stitch_quality.py). The clean pass walks in step with the mixed one, so it
costs at most a second set of live values, not a stored tensor per matched point.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from .data import batches, unwrap
from .devices import autocast, check_amp, resolve_device
from .errors import RunError, SupernetError
from .files import atomic_write, user_path
from .progress import progress_bar
from .supernet import Executor, Supernet, Switch


@dataclass
class TrainResult:
    """Per-stitch loss, mean over the last tenth of the steps: the MSE (`stitch_losses`)
    and the MSE relative to the target's variance (`relative_losses`: 1.0 is no better
    than predicting the target's mean, 0 is exact); `history`: the mean relative loss per
    step."""

    stitch_losses: dict[str, float]
    steps: int
    history: list[float] = field(default_factory=list)
    relative_losses: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        user_path(path).write_text(json.dumps(vars(self), indent=1))


def _batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of batch `step`: epochs are seeded permutations, so any step is reproducible."""
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[k * batch_size : (k + 1) * batch_size]


class _Clean(Executor):
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
        _Clean(net, keep, amp).run(net.structure.full_plan(), x)
    return pairs


class _RandomSwitches(Executor):
    """Every node of both parents (no gradients), and at each matched point both stitches:
    trained against their targets, and taken per sample with probability `p`.

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
        target = mixed.detach()  # stitches train in float32 whatever the parents ran in
        goal = (clean if self.clean else target).detach().float()
        with torch.enable_grad():
            out = self.net.stitches[sw.stitch](source[1].detach().float())
            loss = torch.nn.functional.mse_loss(out, goal)
        if self.on_loss is not None:
            self.on_loss(sw.stitch, loss)
        self.losses[sw.stitch] = float(loss.detach())
        self.variances[sw.stitch] = float(goal.var())
        mask = torch.rand(self.n, generator=self.generator, device=self.device) < self.p
        mask = mask.view(self.n, *([1] * (target.dim() - 1)))
        taken = torch.where(mask, out.detach().to(target.dtype), target)
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


def least_squares_init(
    net: Supernet,
    images: torch.Tensor | Iterable[torch.Tensor],
    *,
    batch_size: int = 64,
    ridge: float = 1e-4,
    device: str | torch.device | None = None,
) -> None:
    """Set every stitch to the ridge least-squares map from its source to its target.

    Source and target are the parents' own tensors on `images` (a tensor, or an iterable
    of input batches; all switches off);
    the fit is the stitch's MSE optimum there, so gradient training starts close to
    it rather than from an arbitrary map between unrelated channels (beyond the paper).
    `ridge` is relative to the mean input energy.
    """
    device = resolve_device(device)
    net.to(device)
    normal: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def accumulate(sw: Switch, source: torch.Tensor, target: torch.Tensor) -> None:
        x, y = net.stitches[sw.stitch].rows(source, target)
        x = torch.cat([x, torch.ones_like(x[:, :1])], 1).double()
        xtx, xty = x.T @ x, x.T @ y.double()
        if sw.stitch in normal:
            xtx, xty = xtx + normal[sw.stitch][0], xty + normal[sw.stitch][1]
        normal[sw.stitch] = (xtx, xty)

    chunks = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    with torch.no_grad():
        for batch in chunks:
            _Clean(net, accumulate).run(net.structure.full_plan(), batch.to(device))
    for key, (xtx, xty) in normal.items():
        reg = torch.diag(xtx)[:-1].mean() * ridge + 1e-12
        penalty = torch.diag(torch.cat([reg.expand(len(xtx) - 1), reg.new_zeros(1)]))
        sol = torch.linalg.solve(xtx + penalty, xty)
        net.stitches[key].set_linear(sol[:-1].T.float(), sol[-1].float())


def train_stitches(
    net: Supernet,
    data: Dataset | DataLoader,
    *,
    epochs: float | None = None,
    samples: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    p: float = 0.5,
    clean_targets: bool = True,
    init_samples: int = 256,
    seed: int = 0,
    device: str | torch.device | None = None,
    amp: str | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    workers: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train every stitch of `net` on the inputs of `data`, a map-style Dataset of (input,
    target) pairs or a DataLoader over one (labels are not used).

    `device` (default: CUDA when available) and `amp` ("bf16", "fp16": the frozen parents
    run under autocast; stitches train in float32) say where and how.

    The budget is `samples` (images seen) or `epochs` (default 1 epoch). Stitches start
    from a least-squares fit on the first `init_samples` images of a seeded permutation
    (`least_squares_init`; 0: keep their current weights). With `checkpoint_dir`, state
    is saved every `checkpoint_every` steps and a run started with the same arguments
    resumes from the latest checkpoint there. Batches stream from `data` through a
    DataLoader with `workers` processes (`evostitch.data.batches`).
    """
    data, own_workers = unwrap(data, "stitch training")
    workers = own_workers if workers is None else workers
    n = len(data)
    if samples is None:
        samples = int(round((1.0 if epochs is None else epochs) * n))
    steps = max(math.ceil(samples / batch_size), 1)
    device = resolve_device(device)
    check_amp(amp)
    net.to(device)
    net.parents.eval()
    net.stitches.train()
    opt = _StitchOptimizers(net, lr=lr, weight_decay=weight_decay)
    start, history = 0, []
    ckpt = user_path(checkpoint_dir) if checkpoint_dir is not None else None
    resumed = _load_checkpoint(net, opt, ckpt, steps) if ckpt is not None else None
    if resumed is not None:
        start, history = resumed
    elif init_samples > 0:
        first = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:init_samples]
        chunks = [first[i : i + 64].tolist() for i in range(0, len(first), 64)]
        inputs = (x for x, _ in batches(data, chunks, workers=workers))
        least_squares_init(net, inputs, device=device)
    sums: dict[str, float] = {}
    relative_sums: dict[str, float] = {}
    tail_from = steps - max(steps // 10, 1)
    with progress_bar("training stitches", total=steps, enabled=progress) as bar:
        bar.update(completed=start)
        order = (_batch_indices(n, batch_size, step, seed).tolist() for step in range(start, steps))
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
            _check_finite(net, losses, step)
            relative = {k: v / max(variances[k], 1e-12) for k, v in losses.items()}
            mean = sum(relative.values()) / max(len(relative), 1)
            history.append(mean)
            if step >= tail_from:
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                    relative_sums[k] = relative_sums.get(k, 0.0) + relative[k]
            bar.update(advance=1, description=f"training stitches (relative loss {mean:.3f})")
            if ckpt is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                _save_checkpoint(net, opt, ckpt, step + 1, steps, history)
    net.stitches.eval()
    n_tail = max(steps - max(tail_from, start), 1)
    final = {k: v / n_tail for k, v in sums.items()}
    return TrainResult(final, steps, history, {k: v / n_tail for k, v in relative_sums.items()})


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


def _check_finite(net: Supernet, losses: dict[str, float], step: int) -> None:
    """A stitch whose loss is NaN or infinite stops training, named (nothing is saved)."""
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        sw = next(s for s in net.switches if s.stitch == bad[0])
        raise SupernetError(
            f"stitch {sw.stitch} ({sw.src[0].upper()}:{sw.source} -> "
            f"{sw.side.upper()}:{sw.node}) diverged at step {step} (loss {losses[bad[0]]}); "
            f"{len(bad)} stitch(es) in all: try a lower learning rate or check the parents "
            "give finite outputs on this data"
        )


CHECKPOINT = "train_state.safetensors"  # tensors and, in its metadata, the step and history


def _save_checkpoint(net, opt, folder: Path, step: int, steps: int, history) -> None:
    """One file, replaced atomically: a kill at any moment leaves the previous checkpoint
    or this one, never new weights with an old step count."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"stitch.{k}": v.detach().cpu().contiguous() for k, v in net.stitches.state_dict().items()
    }
    for i, p in enumerate(net.stitches.parameters()):
        for name, value in opt.state(p).items():
            tensors[f"opt.{i}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {"evostitch": json.dumps({"step": step, "steps": steps, "history": history})}
    atomic_write(folder / CHECKPOINT, lambda tmp: save_file(tensors, tmp, metadata=meta))
    (folder / "train_state.json").unlink(missing_ok=True)  # evostitch <= 0.1's second file


def _read_checkpoint(folder: Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """The checkpoint's (step/steps/history, tensors), or None if there is none."""
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("evostitch")
        legacy = folder / "train_state.json"
        meta = json.loads(text if text is not None else legacy.read_text())
        return meta, load_file(str(path))
    except Exception as exc:
        raise RunError(f"cannot resume stitch training from {folder}: {exc}") from exc


def _load_checkpoint(net, opt, folder: Path, steps: int) -> tuple[int, list[float]] | None:
    found = _read_checkpoint(folder)
    if found is None:
        return None
    meta, tensors = found
    if meta.get("steps") != steps:
        raise RunError(
            f"checkpoint in {folder} is for a {meta.get('steps')}-step run, not {steps}: "
            "use the same budget and batch size, or another checkpoint folder"
        )
    state = {k[len("stitch.") :]: v for k, v in tensors.items() if k.startswith("stitch.")}
    net.stitches.load_state_dict(state)
    device = next(net.stitches.parameters()).device
    for i, p in enumerate(net.stitches.parameters()):
        entry = {
            n.split(".", 2)[2]: v.to(device)
            for n, v in tensors.items()
            if n.startswith(f"opt.{i}.")
        }
        if entry:
            entry["step"] = entry["step"].cpu()
            opt.set_state(p, entry)
    return int(meta["step"]), list(meta["history"])
