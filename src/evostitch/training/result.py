"""What stitch training reports: each stitch's loss, and the line a person reads."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..files import user_path
from ..supernet import Supernet


@dataclass
class TrainResult:
    """How well the stitches imitate their targets, relative to the target's variance
    (1.0: no better than predicting the target's mean; 0: exact).

    `held_out_losses`: per stitch, on `held_out` images never fitted or trained on (the
    figure to read). `stitch_losses` / `relative_losses`: MSE and relative MSE during the
    gradient steps, mean over the last tenth (empty without gradient steps); `history`:
    the mean relative loss per step."""

    stitch_losses: dict[str, float]
    steps: int
    history: list[float] = field(default_factory=list)
    relative_losses: dict[str, float] = field(default_factory=dict)
    held_out_losses: dict[str, float] = field(default_factory=dict)
    fit_samples: int = 0
    held_out: int = 0
    downstream_steps: int = 0
    downstream_history: list[float] = field(default_factory=list)
    # the stage's measure (`downstream.held_out_loss`) before and after it; before is None
    # when the stage resumed from a checkpoint; empty without held-out images or stage
    downstream_held_out: list[float | None] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        user_path(path).write_text(json.dumps(vars(self), indent=1))

    def summary(self, net: Supernet, worst: int = 3) -> str:
        """One line for a person: the held-out losses' median, how many points are poor
        (> 0.5), and the worst ones by name."""
        losses = self.held_out_losses or self.relative_losses
        if not losses:
            return "stitches: no loss measured (no held-out images and no gradient steps)"
        where = f"on {self.held_out} held-out images" if self.held_out_losses else "in training"
        ranked = sorted(losses, key=losses.get, reverse=True)[:worst]
        names = ", ".join(f"{point_name(net, k)} {losses[k]:.2f}" for k in ranked)
        poor = sum(v > 0.5 for v in losses.values())
        line = (
            f"stitches: relative loss {where} (1.0 = no better than the target's mean): "
            f"median {statistics.median(losses.values()):.3f}, {poor} of {len(losses)} above "
            f"0.5; worst {names}"
        )
        if len(self.downstream_held_out) == 2:
            before, after = self.downstream_held_out
            change = f"{before:.3f} -> {after:.3f}" if before is not None else f"{after:.3f}"
            ran = len(self.downstream_history)
            steps = f"{self.downstream_steps} steps"
            if ran < self.downstream_steps:
                steps = f"stopped after {ran} of {steps}"
            line += (
                f"\ndownstream stage: {steps}; random offspring's KL "
                f"from the parents' output on the held-out images {change}"
            )
            if before is not None and after >= before:
                line += " (not lower: the stitches before the stage were kept)"
        return line


def point_name(net: Supernet, key: str) -> str:
    """A stitch as a person reads it: `A:source -> B:node`."""
    sw = next(s for s in net.switches if s.stitch == key)
    return f"{sw.src[0].upper()}:{sw.source} -> {sw.side.upper()}:{sw.node}"
