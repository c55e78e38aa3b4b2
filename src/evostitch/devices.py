"""Where tensors go, in which precision, and how many CPU threads torch uses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .errors import DeviceError

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}  # --amp's choices


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device (None: `default_device()`); DeviceError if this machine
    has no such device (cpu, cuda, cuda:N, mps)."""
    if device is None:
        return default_device()
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps") from None
    if found.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r}: CUDA is not available on this machine")
    if found.type == "cuda" and (found.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPUs")
    if found.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r}: MPS is not available on this machine")
    return found


def check_amp(amp: str | None) -> str | None:
    """`amp` if it names a precision (bf16, fp16) or is None; DeviceError otherwise."""
    if amp is not None and amp not in AMP:
        raise DeviceError(f"unknown precision {amp!r}: use {' or '.join(AMP)}")
    return amp


def autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """torch.autocast to `amp` (bf16, fp16) on `device`; nothing when `amp` is None."""
    if check_amp(amp) is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP[amp])


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to `threads` meanwhile (None: left as they are)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
