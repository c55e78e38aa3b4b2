"""Stitch-training checkpoints: one safetensors file (stitches, optimiser state, and in
its metadata the step, the history and what the checkpoint belongs to), replaced
atomically.

What it belongs to (`identity`): the parents (specs and a hash of their tensors), the
input shape, the stitches' number and shapes, the data and matching settings the caller
gives, and every training setting. A resume with any of them different is refused in
one line naming the option, before a weight is loaded: a rerun with another seed or the
parents swapped must never continue from weights trained for something else.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import RunError
from ..files import atomic_write
from ..supernet import Supernet

CHECKPOINT = "train_state.safetensors"
# what a person types for each setting the identity records (the CLI's option names)
# in the order they are checked: what a person chooses first (a parent's weights drawn
# under another seed differ too, but the seed is the cause to name)
LABELS = {
    "seed": "--seed",
    "data": "--data",
    "input_shape": "--input-shape",
    "parents": "parents",
    "similarity": "--similarity",
    "max_ratio": "--max-ratio",
    "leaf_modules": "--leaf-module",
    "fit_samples": "--fit-samples",
    "steps": "--steps",
    "downstream": "--downstream-steps",
    "batch_size": "--batch-size",
    "amp": "--amp",
    "train_samples": "train-split size",
    "held_out": "held_out",
    "ridge": "ridge",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "p": "p",
    "clean_targets": "clean_targets",
    "weights": "weights",
    "stitches": "stitches (number and shapes)",
}
STAGE = "stage_start."  # tensor names of the stitches the downstream stage started from
UNCHECKED = {"fit_memory"}  # recorded, but the fit's result does not depend on it


def weights_hash(module: torch.nn.Module) -> str:
    """A hash of a module's tensors (names, dtypes, shapes and bytes): equal for the same
    weights wherever they were loaded from; about a second per GB."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def identity(net: Supernet, settings: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint of `net`'s stitches belongs to: parents, their weights' hashes,
    input shape, stitch shapes, and the caller's `settings` (data, matching, training)."""
    parents = [
        (spec or {}).get("spec") or type(net.parents[side]).__name__
        for side, spec in zip(net.sides, net.specs, strict=True)
    ]
    return json.loads(  # JSON's own types, as a reloaded checkpoint gives them
        json.dumps(
            {
                "parents": parents,
                "weights": [weights_hash(net.parents[side]) for side in net.sides],
                "input_shape": list(net.input_shape),
                "stitches": {
                    key: [list(t.shape) for t in stitch.state_dict().values()]
                    for key, stitch in net.stitches.items()
                },
                **settings,
            }
        )
    )


def save_checkpoint(
    net: Supernet,
    opt,
    folder: Path,
    step: int,
    belongs_to: dict,
    history: list,
    stage: tuple[float, dict[str, torch.Tensor]] | None = None,
) -> None:
    """One file, replaced atomically: a kill at any moment leaves the previous checkpoint
    or this one, never new weights with an old step count. `belongs_to` is `identity`'s:
    a resume must be for the same. `stage`: the downstream stage's held-out loss before
    it and the stitches it started from, which a resumed stage needs to undo itself."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"stitch.{k}": v.detach().cpu().contiguous() for k, v in net.stitches.state_dict().items()
    }
    for i, p in enumerate(net.stitches.parameters()):
        for name, value in opt.state(p).items():
            tensors[f"opt.{i}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    record = {"step": step, "identity": belongs_to, "history": history}
    if stage is not None:
        record["stage_before"] = stage[0]
        tensors.update({f"{STAGE}{k}": v.detach().cpu().contiguous() for k, v in stage[1].items()})
    meta = {"evostitch": json.dumps(record)}
    atomic_write(folder / CHECKPOINT, lambda tmp: save_file(tensors, tmp, metadata=meta))
    (folder / "train_state.json").unlink(missing_ok=True)  # evostitch <= 0.1's second file


def _read(folder: Path, tensors: bool = True) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """The checkpoint's (metadata, tensors; none unless `tensors`), or None if there is
    none."""
    path = folder / CHECKPOINT
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():
        raise RunError(f"cannot resume stitch training from {folder}: {path} is not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("evostitch")
        legacy = folder / "train_state.json"
        meta = json.loads(text if text is not None else legacy.read_text())
        return meta, load_file(str(path)) if tensors else {}
    except Exception as exc:
        why = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise RunError(
            f"cannot resume stitch training from {folder} ({why}): remove it to start over"
        ) from None


def check_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Refuse in one line a checkpoint in `folder` made with other `settings` (any of
    `identity`'s keys: parents, seed, data...), before the work that `identity` needs
    (loading and matching the parents); nothing without a checkpoint."""
    found = _read(folder, tensors=False)
    if found is not None:
        _check_identity(folder, found[0], json.loads(json.dumps(settings)))


def _show(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return json.dumps(value) if not isinstance(value, str) else value


def _check_identity(folder: Path, meta: Any, wanted: dict) -> tuple[int, list[float]]:
    """(step, history) of a checkpoint made for `wanted`; one line naming the first
    setting that differs, and the fix, otherwise."""
    start_over = f"remove {folder} to start over"
    made = meta.get("identity") if isinstance(meta, dict) else None
    if not isinstance(made, dict):
        raise RunError(f"{folder} holds a checkpoint that records no identity: {start_over}")
    for key in dict.fromkeys([*LABELS, *wanted]):
        if key in UNCHECKED or key not in wanted or made.get(key) == wanted[key]:
            continue
        if key == "weights":
            raise RunError(
                f"{folder} was made with other weights of parent {_changed(made, wanted)}: "
                f"rerun with the same weights to resume, or {start_over}"
            )
        label, old = LABELS.get(key, key), _show(made.get(key))
        raise RunError(
            f"{folder} was made with {label} {old}, not {_show(wanted[key])}: rerun with "
            f"{label} {old} to resume, or {start_over}"
        )
    step, history = meta.get("step"), meta.get("history")
    steps = wanted.get("steps", 0) + wanted.get("downstream", 0) if "steps" in wanted else None
    if not _is_int(step) or not 0 <= step <= (steps if _is_int(steps) else step):
        raise RunError(f"{folder} holds a checkpoint with a bad step {step!r}: {start_over}")
    if not isinstance(history, list) or not all(_is_number(h) for h in history):
        raise RunError(f"{folder} holds a checkpoint with a bad history: {start_over}")
    return step, [float(h) for h in history]


def _changed(made: dict, wanted: dict) -> str:
    """The parents (A, B, ...) whose weights' hash differs from the checkpoint's."""
    old = made.get("weights") if isinstance(made.get("weights"), list) else []
    new = wanted["weights"]
    old = (old + [None] * len(new))[: len(new)]
    sides = [chr(ord("A") + i) for i, (x, y) in enumerate(zip(old, new, strict=True)) if x != y]
    return ", ".join(sides) or "A"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_checkpoint(
    net: Supernet, opt, folder: Path, belongs_to: dict
) -> tuple[int, list[float], tuple[float, dict[str, torch.Tensor]] | None] | None:
    """Restore stitches and optimiser state from a checkpoint made for `belongs_to`
    (`identity`); (step, history, the downstream stage's start as `save_checkpoint` took
    it or None), or None without a checkpoint."""
    found = _read(folder)
    if found is None:
        return None
    meta, tensors = found
    step, history = _check_identity(folder, meta, belongs_to)
    state = {k[len("stitch.") :]: v for k, v in tensors.items() if k.startswith("stitch.")}
    start = {k[len(STAGE) :]: v for k, v in tensors.items() if k.startswith(STAGE)}
    before = meta.get("stage_before")
    try:
        net.stitches.load_state_dict(state)
        _load_optimiser(net, opt, tensors)
        if start and (not _is_number(before) or start.keys() != state.keys()):
            raise ValueError("the downstream stage's start is incomplete")
        if start and any(start[k].shape != v.shape for k, v in state.items()):
            raise ValueError("the downstream stage's start has other shapes")
    except (RuntimeError, KeyError, ValueError) as exc:
        why = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise RunError(
            f"{folder} holds a damaged checkpoint ({why}): remove it to start over"
        ) from None
    return step, history, (float(before), start) if start else None


def _load_optimiser(net: Supernet, opt, tensors: dict[str, torch.Tensor]) -> None:
    for i, p in enumerate(net.stitches.parameters()):
        device = p.device
        entry = {
            n.split(".", 2)[2]: v.to(device)
            for n, v in tensors.items()
            if n.startswith(f"opt.{i}.")
        }
        if entry:
            entry["step"] = entry["step"].cpu()
            opt.set_state(p, entry)
