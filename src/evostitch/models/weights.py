"""Trained weights from files, without pickle: safetensors, or `torch.load(weights_only=True)`.

A *layout* is what a state dict holds without its values: per tensor name, its dtype (by
safetensors' names, "F32", "I64", ...) and shape. A file's layout can be read from its
header alone, so a stored file is compared with the model it is meant for before a byte
of it is loaded (`layout_mismatch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import EvostitchError, ModelError
from ..files import regular_file, user_path

Layout = dict[str, tuple[str, tuple[int, ...]]]

DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights without pickle: safetensors, or `torch.load(weights_only=True)`."""
    path = user_path(path)
    if not path.exists():
        raise ModelError(f"weights file not found: {path}")
    try:
        regular_file(path)  # a FIFO or a device would block or never end
    except EvostitchError as exc:
        raise ModelError(f"weights file {exc}") from None
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


def dtype_name(dtype: torch.dtype) -> str:
    """safetensors' name of a torch dtype ("F32", "I64", ...)."""
    return DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def layout(state: Mapping[str, torch.Tensor]) -> Layout:
    """The layout of a state dict (works on meta tensors: nothing is read)."""
    return {k: (dtype_name(v.dtype), tuple(v.shape)) for k, v in state.items()}


def _kind(dtype: str) -> str:
    """float, int or bool: a float16 file may load into a float32 model, an int may not."""
    if dtype == "BOOL":
        return "bool"
    return "int" if dtype[0] in "IU" else "float"


def layout_mismatch(own: Layout, found: Layout, *, exact_dtype: bool = False) -> str | None:
    """Why `found` does not fit a model of layout `own`, in one phrase (missing,
    unexpected, of wrong shape or dtype, the first of each named); None if it fits.
    `exact_dtype` asks for the same dtypes, else only the same kind (float, int, bool)."""
    missing = [k for k in own if k not in found]
    unexpected = [k for k in found if k not in own]
    common = [k for k in own if k in found]
    wrong = [k for k in common if own[k][1] != found[k][1]]
    same = (lambda a, b: a == b) if exact_dtype else (lambda a, b: _kind(a) == _kind(b))
    dtypes = [k for k in common if not same(own[k][0], found[k][0])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} of wrong shape (e.g. {k}: {found[k][1]} vs {own[k][1]})")
    if dtypes:
        k = dtypes[0]
        parts.append(f"{len(dtypes)} of wrong dtype (e.g. {k}: {found[k][0]} vs {own[k][0]})")
    return ", ".join(parts) or None


def non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating tensor holding a NaN or an infinity, else None."""
    for name, value in state.items():
        if not value.is_floating_point() or bool(torch.isfinite(value.sum())):
            continue  # NaN and inf propagate through a sum: several times faster than isfinite
        if not bool(torch.isfinite(value).all()):  # the sum might only have overflowed
            return name
    return None


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], label: str) -> None:
    """Load a state dict strictly, with a one-line error naming what does not fit."""
    why = layout_mismatch(layout(model.state_dict()), layout(state))
    if why:
        raise ModelError(f"weights do not fit {label}: {why}")
    model.load_state_dict(state)
