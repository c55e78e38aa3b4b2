"""The `stitch` call's training (`evostitch.api.stitch`): the stitches fitted on a dataset's
train split, random offspring scored on val before and after, the losses and the figure
saved into the output folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data import dataset_info, load_dataset
from .evaluation import Evaluator
from .evaluation.holding import (
    HOLD_SAMPLES,
    hold_evaluator,
    measured,
    save_hold_figure,
    with_left_out,
)
from .evaluation.transitions import POOR, save_transitions, transition_map
from .supernet import Supernet
from .training import DEFAULT_FIT_SAMPLES, TrainResult, train_stitches


def fit_supernet(
    net: Supernet,
    folder: Path | None,
    training: dict,
    matching: dict,
    hold_samples: int,
    device: torch.device,
    amp: str | None,
    say: Any,
    progress: bool,
    keep_poor: bool = False,
) -> None:
    """Fit the stitches on the train split of `matching["data"]`, scoring random
    offspring on val before and after and then every single crossing (the transition
    map; both skipped when `hold_samples` is 0); losses and figures saved into `folder`.
    Stitches whose single crossing keeps less than `POOR` of the lower parent are left
    out of every offspring (`Supernet.leave_out`) unless `keep_poor`."""
    data, seed = matching["data"], training["seed"]
    fit_samples = training["fit_samples"]
    val = hold_evaluator(
        net, load_dataset(data, "val"), dataset_info(data).num_classes, device=device, amp=amp
    )
    train = load_dataset(data, "train")
    fitted = fit_and_map(
        net,
        lambda: train_stitches(
            net,
            train,
            fit_samples=DEFAULT_FIT_SAMPLES if fit_samples is None else fit_samples,
            fit_memory=training["fit_memory"],
            steps=training["steps"],
            epochs=training["epochs"],
            downstream=training.get("downstream"),
            batch_size=training["batch_size"],
            seed=seed,
            device=device,
            amp=amp,
            checkpoint_dir=folder / "checkpoints" if folder is not None else None,
            checkpoint_identity=matching,
            progress=progress,
        ),
        val,
        samples=hold_samples,
        seed=seed,
        keep_poor=keep_poor,
    )
    say("\n".join(fitted.lines))
    if folder is not None:
        fitted.save(folder)


@dataclass
class Fitted:
    """What `fit_and_map` measured: the training's result, the hold figure and the
    transition map (None when not measured) and the lines that say so."""

    result: TrainResult
    hold: dict | None
    transitions: dict | None
    lines: list[str]

    def save(self, folder: Path) -> None:
        """Losses, hold figure and transition map into a supernetwork folder."""
        folder.mkdir(parents=True, exist_ok=True)
        self.result.save(folder / "stitch_losses.json")
        if self.hold:
            save_hold_figure(self.hold, folder)
        if self.transitions:
            save_transitions(self.transitions, folder)


def fit_and_map(
    net: Supernet,
    train: Callable[[], TrainResult],
    val: Evaluator,
    *,
    samples: int = HOLD_SAMPLES,
    seed: int = 0,
    keep_poor: bool = False,
) -> Fitted:
    """`train()`, then the transition map on `val` and the poor stitches left out (unless
    `keep_poor`); random offspring scored on `val` before and after all of it, so that the
    hold line describes the offspring a search will see. Without `samples`, neither the
    figure nor the map is made and nothing is left out."""
    found: dict[str, Any] = {}

    def train_and_leave_out() -> TrainResult:
        result = train()
        if samples:
            found["map"] = transition_map(net, val)
            if not keep_poor:
                found["line"] = leave_out_poor(net, found["map"])
        return result

    result, hold = measured(train_and_leave_out, val, samples=samples, seed=seed)
    if hold is not None and net.left_out:
        hold = with_left_out(hold, len(net.left_out), len(net.stitches))
    transitions = found.get("map")
    lines = [result.summary(net), *(f["text"] for f in (hold, transitions) if f)]
    if "line" in found:
        lines.append(found["line"])
    return Fitted(result, hold, transitions, lines)


def leave_out_poor(net: Supernet, transitions: dict, threshold: float = POOR) -> str:
    """Leave out the stitches whose single crossing keeps less than `threshold` of the lower
    parent (on the demo pair, random offspring at p = 0.1 go from 0.25 to 0.87 of the
    parents' accuracy: docs/METHOD.md section 4); one line saying which."""
    poor = sorted(
        (p for p in transitions["points"] if p["fraction"] < threshold),
        key=lambda p: p["fraction"],
    )
    net.leave_out(p["stitch"] for p in poor)
    if not poor:
        return (
            f"No stitch left out: every single crossing keeps at least {threshold:g} of its "
            "parents."
        )
    worst = ", ".join(f"{p['from']} -> {p['to']} {p['fraction']:.2f}" for p in poor[:3])
    return (
        f"Left out {len(poor)} of {len(transitions['points'])} stitches whose single crossing "
        f"keeps less than {threshold:g} of the lower parent's {transitions['metric']} (worst "
        f"{worst}): no offspring takes them (--keep-poor-stitches keeps them)."
    )
