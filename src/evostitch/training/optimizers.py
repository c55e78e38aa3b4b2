"""The optimisers of stitch training's gradient steps, and optimiser state read from a
checkpoint before it is known which stage it belongs to."""

from __future__ import annotations

import torch

from ..supernet import Supernet


class StitchOptimizers:
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


class Pending:
    """Optimiser state read from a checkpoint before it is known which stage's it is."""

    def __init__(self) -> None:
        self.entries: dict[torch.Tensor, dict] = {}

    def state(self, p: torch.Tensor) -> dict:
        return {}

    def set_state(self, p: torch.Tensor, entry: dict) -> None:
        self.entries[p] = entry

    def apply(self, opt) -> None:
        for p, entry in self.entries.items():
            opt.set_state(p, entry)
