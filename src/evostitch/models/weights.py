"""Trained weights from files, without pickle: safetensors, or `torch.load(weights_only=True)`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from ..files import user_path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights without pickle: safetensors, or `torch.load(weights_only=True)`."""
    path = user_path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or unsafe file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot read weights {path}: {first}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors")
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], label: str) -> None:
    """Load a state dict strictly, with a one-line error naming what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of wrong shape (e.g. {k}: {tuple(state[k].shape)} "
                f"vs {tuple(own[k].shape)})"
            )
        raise ModelError(f"weights do not fit {label}: " + ", ".join(parts))
    model.load_state_dict(state)
