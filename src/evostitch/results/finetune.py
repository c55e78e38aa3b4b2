"""Fine-tune one offspring briefly on the training split (METHOD.md step 11).

The offspring is a deep copy of `Supernet.extract(genotype)`: the supernetwork is
never changed. All its parameters train, or only its stitches (`stitches_only`).
The network stays in eval mode while it trains: batch-norm statistics stay frozen
(batches of 8 are too small to estimate them) and dropout stays off. Loss: cross-
entropy (pixels with the ignore index are skipped for segmentation); AdamW with a
constant learning rate (the paper: 1e-4, batches of 8, up to 1,000 batches).

Fine-tuning never hands back a network worse than it started from: given a `validate`
score, the offspring is scored before the first batch, at `checks` evenly spaced
batches and after the last, and the best state (the starting one included) is kept.

`finetune_solution` writes ``RUN/finetuned/<solution>/``: ``weights.safetensors``
(the kept state dict) and ``finetune.json`` (options, losses, the validation scores
along the way, the batch kept, metrics before and after on the validation and test
splits).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import fx
from torch.utils.data import Dataset

from ..data import dataset_info, load_dataset
from ..devices import autocast, check_amp, resolve_device
from ..errors import RunError, SupernetError
from ..evaluation.metrics import evaluate, make_metric, primary_metric
from ..files import inside, save_output, user_path, writable_folder
from ..progress import progress_bar
from ..supernet import Supernet
from .export import offspring_module
from .solutions import find_solution, finetuned_weights, genotype_text, load_supernet, read_run

SUMMARY = "finetune.json"


@dataclass
class Finetuned:
    """A fine-tuned offspring (eval mode, the kept state), the loss of every batch, the
    validation score after each scored batch (0: the start) and the batch it was kept at."""

    model: fx.GraphModule
    losses: list[float]
    scores: dict[int, float] = field(default_factory=dict)
    kept: int | None = None


@dataclass(frozen=True)
class FinetuneSettings:
    """How `finetune` trains (each field is also one of its keywords): `epochs` over the
    training images, at most `max_batches` batches of `batch_size`, AdamW at `lr`, all
    parameters or only the stitches (`stitches_only`), the score checked `checks` times,
    `amp` ("bf16", "fp16": the forward under autocast, fp16 with a gradient scaler), the
    batches drawn from `seed` (the paper: 1e-4, batches of 8, up to 1,000 batches)."""

    epochs: float = 1.0
    max_batches: int | None = None
    lr: float = 1e-4
    batch_size: int = 8
    stitches_only: bool = False
    seed: int = 0
    amp: str | None = None
    checks: int = 4


def finetune(
    net: Supernet,
    genotype: tuple[int, ...],
    train: Dataset,
    settings: FinetuneSettings | None = None,
    *,
    device: Any = None,
    validate: Callable[[torch.nn.Module], float] | None = None,
    start_score: float | None = None,
    progress: bool = True,
    **options: Any,
) -> Finetuned:
    """Train a copy of the offspring as `settings` say (`options`: any of its fields,
    replacing them) and return it with its losses.
    With `validate` (higher is better), the best scored state is kept (see above);
    without it, the state after the last batch. `start_score`: the starting network's
    score when the caller already has it (saves one validation pass)."""
    try:
        s = dataclasses.replace(settings or FinetuneSettings(), **options)
    except TypeError:
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(FinetuneSettings)})
        raise TypeError(f"finetune() got unexpected keyword arguments {unknown}") from None
    epochs, max_batches, lr, batch_size = s.epochs, s.max_batches, s.lr, s.batch_size
    stitches_only, seed, amp, checks = s.stitches_only, s.seed, s.amp, s.checks
    device = resolve_device(device)
    check_amp(amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    model = offspring_module(net, genotype).to(device)
    _without_inplace(model)
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(not stitches_only or name.startswith("stitches."))
        if p.requires_grad:
            params.append(p)
    if not params:
        raise SupernetError("nothing to train: this offspring uses no stitches")
    n = len(train)
    steps = max(math.ceil(epochs * n / batch_size), 1)
    steps = min(steps, max_batches) if max_batches else steps
    opt = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    order, losses = torch.empty(0, dtype=torch.long), []
    every = max(math.ceil(steps / max(checks, 1)), 1)
    best = _Best(model, validate, start_score)
    with progress_bar("fine-tuning", total=steps, enabled=progress) as bar:
        for step in range(1, steps + 1):
            if len(order) < batch_size:
                order = torch.cat([order, torch.randperm(n, generator=gen)])
            batch, order = order[:batch_size], order[batch_size:]
            x = torch.stack([train[int(i)][0] for i in batch]).to(device)
            y = torch.stack([torch.as_tensor(train[int(i)][1]) for i in batch]).to(device)
            with autocast(device, amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y.long(), ignore_index=255)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))
            bar.update(advance=1, description=f"fine-tuning (loss {losses[-1]:.4f})")
            if step % every == 0 or step == steps:
                best.score(model, step)
    best.restore(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return Finetuned(model.eval(), losses, best.scores, best.step if validate else None)


class _Best:
    """The best-scoring state of a model under training, kept on the CPU; without a score
    function, nothing is kept. A later state must score strictly higher to be kept."""

    def __init__(self, model: torch.nn.Module, validate: Callable | None, start) -> None:
        self.validate, self.scores, self.step, self.state = validate, {}, 0, None
        self.score(model, 0, start)

    def score(self, model: torch.nn.Module, step: int, value: float | None = None) -> None:
        if self.validate is None:
            return
        if value is None:
            with torch.no_grad():
                value = float(self.validate(model))
        self.scores[step] = value
        if self.state is None or value > self.scores[self.step]:
            self.step = step
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def restore(self, model: torch.nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def _without_inplace(model: fx.GraphModule) -> None:
    """Make in-place ops out-of-place: they would overwrite what a stitch's gradient needs."""
    for m in model.modules():
        if getattr(m, "inplace", None) is True:
            m.inplace = False
    for node in model.graph.nodes:
        if node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
    model.recompile()


def finetune_solution(
    run: str | Path,
    solution: str,
    *,
    device: Any = None,
    progress: bool = True,
    trust_code: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Fine-tune the run's solution `solution`; save and return the summary (see above)."""
    run = user_path(run)
    config, records = read_run(run)
    net = load_supernet(config, trust_code=trust_code)
    found = find_solution(net, records, solution)
    weights = output_file(run, found.label)  # checked before the work
    data = config.problem["data"]
    info = dataset_info(data)
    device = resolve_device(device)
    searched = config.problem.get("split", "val")
    splits = {s: load_dataset(data, s) for s in (searched, "test")}
    metric = make_metric(net.task, info.num_classes, info.ignore_index or 255)

    def scores(model: torch.nn.Module) -> dict[str, dict[str, float]]:
        return {s: evaluate(model, d, metric, device=device) for s, d in splits.items()}

    def validate(model: torch.nn.Module) -> float:
        return evaluate(model, splits[searched], metric, device=device)[primary_metric(net.task)]

    before = scores(net.extract(found.genotype).to(device).eval())
    done = finetune(
        net,
        found.genotype,
        load_dataset(data, "train"),
        device=device,
        progress=progress,
        validate=validate,
        start_score=before[searched][primary_metric(net.task)],
        **options,
    )
    summary = {
        "solution": found.label,
        "id": found.id,
        "genotype": genotype_text(found.genotype),
        "data": data,
        "options": options,
        "batches": len(done.losses),
        "losses": done.losses,
        "validation": {"split": searched, "scores": done.scores, "kept_batch": done.kept},
        "before": before,
        "after": scores(done.model),
    }
    save_finetuned(run, done.model, summary, weights)
    summary["folder"] = str(weights.parent)
    return summary


def output_file(run: Path, label: str) -> Path:
    """Where the weights go (`finetuned_weights`), checked before any work: inside the run
    (a `finetuned` link in a received run folder must not send them elsewhere), in a
    folder that can be written."""
    weights = finetuned_weights(run, label)
    writable_folder(inside(run, weights.parent), "fine-tuning folder")
    return weights


def save_finetuned(
    run: Path, model: torch.nn.Module, summary: dict[str, Any], weights: Path
) -> None:
    """The kept weights and the summary beside them, each written atomically (a link in
    their place is replaced, never written through)."""
    folder = inside(run, weights.parent)  # again: a link may have appeared meanwhile
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create {folder} ({e.strerror})") from None
    inside(run, folder)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_output(weights, lambda tmp: save_file(state, tmp))
    text = json.dumps(summary, indent=1)
    save_output(folder / SUMMARY, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
