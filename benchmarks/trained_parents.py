"""Parents trained from scratch on bundled data for benchmarks, cached by config hash.

Shared by cnn_vit.py and multi_parent.py: one seeded training (evostitch.demo.parents.fit,
Adam with a cosine decay) per (spec, data, training config, architecture, torch version),
saved as safetensors + a JSON record (val/test accuracy, MACs, steps, seconds) under a
cache folder, and read back when a file of the same hash is there.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

MNIST32 = "mnist5k?size=32&channels=3"  # the bundled digits as 3x32x32 colour images
SHAPE32 = (3, 32, 32)


def trained_parent(
    name: str, spec: str, train: dict[str, Any], folder: Path, seed: int, data: str = MNIST32
) -> tuple[str, Path, dict[str, Any]]:
    """(spec, safetensors file, record) of `spec` trained on `data` with `train` (epochs,
    batch_size, lr), seeded: read from `folder` when cached, else trained, scored, saved."""
    import safetensors.torch

    from evostitch.data import dataset_info, load_dataset
    from evostitch.demo.parents import fit
    from evostitch.evaluation.metrics import evaluate, make_metric
    from evostitch.graph import example_input
    from evostitch.models import build_model
    from evostitch.supernet.cost import count_macs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    config = {
        "spec": spec, "data": data, "seed": seed, **train,
        "architecture": repr(model), "torch": torch.__version__.split("+")[0],
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    label = "mnist5k32" if data == MNIST32 else "".join(c if c.isalnum() else "_" for c in data)
    stem = folder / f"{name}-{label}-s{seed}-{digest}"
    weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if weights.exists() and meta.exists():
        return spec, weights, json.loads(meta.read_text())
    info = dataset_info(data)
    train_split = load_dataset(data, "train", seed=seed)
    steps = int(train["epochs"] * (len(train_split) // train["batch_size"]))
    start = time.perf_counter()
    fit(model, train_split, info, steps=steps, batch_size=train["batch_size"],
        lr=train["lr"], seed=seed, progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    model.eval()
    metric = make_metric(info.task, info.num_classes)
    accuracy = {
        split: evaluate(model, load_dataset(data, split, seed=seed), metric)["accuracy"]
        for split in ("val", "test")
    }
    record = {
        "config": config, "steps": steps, "train_seconds": seconds, "accuracy": accuracy,
        "macs": count_macs(model, example_input(info.input_shape)),
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(weights), metadata={"hash": digest})
    meta.write_text(json.dumps(record, indent=1))
    print(f"  trained {name}: {steps} steps in {seconds:.0f} s -> {weights}", flush=True)
    return spec, weights, record
