"""Stitch-training checkpoints: one safetensors file (stitches, optimiser state, and in
its metadata the step, the run's budget and history), replaced atomically."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import RunError
from ..files import atomic_write
from ..supernet import Supernet

CHECKPOINT = "train_state.safetensors"


def save_checkpoint(net: Supernet, opt, folder: Path, step: int, plan: dict, history) -> None:
    """One file, replaced atomically: a kill at any moment leaves the previous checkpoint
    or this one, never new weights with an old step count. `plan` is the run's budget
    (steps, fit samples): a resume must ask for the same."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"stitch.{k}": v.detach().cpu().contiguous() for k, v in net.stitches.state_dict().items()
    }
    for i, p in enumerate(net.stitches.parameters()):
        for name, value in opt.state(p).items():
            tensors[f"opt.{i}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {"evostitch": json.dumps({"step": step, **plan, "history": history})}
    atomic_write(folder / CHECKPOINT, lambda tmp: save_file(tensors, tmp, metadata=meta))
    (folder / "train_state.json").unlink(missing_ok=True)  # evostitch <= 0.1's second file


def _read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """The checkpoint's (metadata, tensors), or None if there is none."""
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


def load_checkpoint(net: Supernet, opt, folder: Path, plan: dict) -> tuple[int, list] | None:
    """Restore stitches and optimiser state; (step, history), or None without a checkpoint."""
    found = _read(folder)
    if found is None:
        return None
    meta, tensors = found
    for key, value in plan.items():
        if key in meta and meta[key] != value:
            raise RunError(
                f"checkpoint in {folder} is for a run with {key} {meta[key]}, not {value}: "
                "use the same budget, batch size and fit, or another checkpoint folder"
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
