"""The demo's trained parents: trained on bundled data and cached.

Trained weights are cached as safetensors in ``~/.cache/evostitch/parents`` (or
``$EVOSTITCH_CACHE/parents``), next to a JSON file with the test metrics and a hash of
architecture and training config; a cache whose hash differs is retrained.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data import DatasetInfo, dataset_info, load_dataset
from ..errors import DataError
from ..evaluation.metrics import evaluate, make_metric
from ..files import atomic_write, user_path
from ..models.zoo import build_demo_model

ZOO_VERSION = 1  # bump when training changes in a way the config hash cannot see

DEMO_PARENTS = {
    "classification": ("mnist5k", ("resnet_like", "mobilenet_like")),
    "segmentation": ("nuclei", ("unet_like", "fcn_like")),
}
# Training defaults per model: epochs, batch size, peak learning rate. The classifiers
# train 2 epochs, not 4: at 4 their ensemble was no better than parent A on validation
# (0.9707 both), so the demo could not show what recombination adds; at 2 the parents
# make different mistakes (val: A 0.9587, B 0.9173, ensemble 0.9600). Chosen on the
# validation split only (docs/METHOD.md, "The demo").
TRAIN_DEFAULTS = {
    "resnet_like": {"epochs": 2, "batch_size": 64, "lr": 3e-3},
    "mobilenet_like": {"epochs": 2, "batch_size": 64, "lr": 3e-3},
    "unet_like": {"epochs": 4, "batch_size": 16, "lr": 3e-3},
    "fcn_like": {"epochs": 4, "batch_size": 16, "lr": 3e-3},
}


def fit(
    model: nn.Module,
    train_set: Dataset,
    info: DatasetInfo,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[float]:
    """Adam with a cosine learning-rate decay for `steps` batches; returns the losses."""
    from rich.progress import Progress

    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    ignore = info.ignore_index if info.ignore_index is not None else -100
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        generator=gen,
        drop_last=len(train_set) > batch_size,
    )
    losses: list[float] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"training {type(model).__name__}", total=steps)
        while len(losses) < steps:
            for x, y in loader:
                loss = F.cross_entropy(model(x.to(device)), y.to(device), ignore_index=ignore)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.update(
                    task, advance=1, description=f"{type(model).__name__} loss {losses[-1]:.3f}"
                )
                if len(losses) == steps:
                    break
    return losses


def _plan(
    name: str, dataset_spec: str, epochs: int | None, steps: int | None, seed: int
) -> dict[str, Any]:
    """Everything that determines a trained parent (its hash names the cache entry)."""
    defaults = TRAIN_DEFAULTS.get(name, {"epochs": 2, "batch_size": 32, "lr": 1e-3})
    if steps is None:
        n = len(load_dataset(dataset_spec, "train", seed=seed))
        steps = (epochs or defaults["epochs"]) * max(1, n // defaults["batch_size"])
    info = dataset_info(dataset_spec)
    model = build_demo_model(name, info.input_shape[0], info.num_classes)
    return {
        "zoo_version": ZOO_VERSION,
        "name": name,
        "dataset": dataset_spec,
        "seed": seed,
        "steps": steps,
        "batch_size": defaults["batch_size"],
        "lr": defaults["lr"],
        "architecture": repr(model),
        "torch": torch.__version__.split("+")[0],
    }


def _build_seeded(name: str, info: DatasetInfo, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_demo_model(name, info.input_shape[0], info.num_classes)


def train_parent(
    name: str,
    dataset_spec: str,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[nn.Module, dict[str, float]]:
    """Train demo model `name` on the train split; returns it (eval mode) and its test
    metrics plus ``train_seconds``. `steps` overrides `epochs`."""
    plan = _plan(name, dataset_spec, epochs, steps, seed)
    info = dataset_info(dataset_spec)
    model = _build_seeded(name, info, seed)
    start = time.perf_counter()
    fit(
        model,
        load_dataset(dataset_spec, "train", seed=seed),
        info,
        steps=plan["steps"],
        batch_size=plan["batch_size"],
        lr=plan["lr"],
        seed=seed,
        device=device,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    metric = make_metric(info.task, info.num_classes, info.ignore_index or 255)
    test = evaluate(model, load_dataset(dataset_spec, "test", seed=seed), metric, device=device)
    return model.eval(), {**test, "train_seconds": seconds}


def cache_dir_default() -> Path:
    """``$EVOSTITCH_CACHE/parents``, else ``~/.cache/evostitch/parents``."""
    root = os.environ.get("EVOSTITCH_CACHE")
    return (user_path(root) if root else Path.home() / ".cache" / "evostitch") / "parents"


def load_or_train_parent(
    name: str,
    dataset_spec: str,
    *,
    cache_dir: str | Path | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[nn.Module, dict[str, float]]:
    """A trained demo parent from the cache, trained and cached first if missing or stale."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    plan = _plan(name, dataset_spec, epochs, steps, seed)
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    folder = user_path(cache_dir) if cache_dir else cache_dir_default()
    stem = f"{name}-{re.sub(r'[^A-Za-z0-9._-]+', '_', dataset_spec)[-60:]}-s{seed}"
    weights, meta = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    info = dataset_info(dataset_spec)
    try:
        record = json.loads(meta.read_text())
        if record["hash"] == digest:
            model = _build_seeded(name, info, seed)
            with safe_open(str(weights), framework="pt") as f:
                if (f.metadata() or {}).get("hash") != digest:
                    raise ValueError("weights do not match their JSON record")
                model.load_state_dict({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
            return model.to(device).eval(), record["metrics"]
    except (OSError, ValueError, KeyError, RuntimeError):
        pass  # missing, stale or damaged: retrain
    model, metrics = train_parent(
        name, dataset_spec, steps=plan["steps"], seed=seed, device=device, progress=progress
    )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    record = {"hash": digest, "metrics": metrics, "config": plan}
    try:  # a cache: the trained parent is used even when it cannot be kept
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(weights, lambda p: save_file(state, p, metadata={"hash": digest}))
        atomic_write(meta, lambda p: Path(p).write_text(json.dumps(record, indent=1)))
    except OSError as e:
        from rich.console import Console

        Console(stderr=True).print(
            f"note: could not cache the trained parent in {folder} ({e.strerror or e})",
            markup=False,
            highlight=False,
        )
    return model, metrics


def get_demo_parents(
    task: str,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    steps: int | None = None,
) -> tuple[nn.Module, nn.Module, dict]:
    """The two trained demo parents for `task` ("classification" on mnist5k or
    "segmentation" on nuclei) and an info dict with dataset and test metrics.
    `steps` overrides the training length (tests train for a few steps)."""
    if task not in DEMO_PARENTS:
        raise DataError(f"no demo parents for task {task!r}: use {', '.join(DEMO_PARENTS)}")
    spec, names = DEMO_PARENTS[task]
    models, metrics = [], {}
    for name in names:
        model, metrics[name] = load_or_train_parent(
            name, spec, cache_dir=cache_dir, steps=steps, device=device, progress=progress
        )
        models.append(model)
    if progress:
        from rich.console import Console

        key = "accuracy" if task == "classification" else "miou"
        Console(stderr=True, soft_wrap=True).print(
            f"demo parents on {spec} (test {key}): "
            + ", ".join(f"{n} {metrics[n][key]:.4f}" for n in names)
        )
    info = {
        "task": task,
        "dataset": spec,
        "dataset_info": dataset_info(spec),
        "names": names,
        "metrics": metrics,
    }
    return models[0], models[1], info
