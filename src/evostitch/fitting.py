"""The `stitch` call's training (`evostitch.api.stitch`): the stitches fitted on a dataset's
train split, random offspring scored on val before and after, the losses and the figure
saved into the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .data import dataset_info, load_dataset
from .evaluation.holding import hold_evaluator, measured, save_hold_figure
from .evaluation.transitions import POOR, save_transitions, transition_map
from .supernet import Supernet


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
    from .training import DEFAULT_FIT_SAMPLES, train_stitches

    data, seed = matching["data"], training["seed"]
    fit_samples = training["fit_samples"]
    val = hold_evaluator(
        net, load_dataset(data, "val"), dataset_info(data).num_classes, device=device, amp=amp
    )
    result, hold = measured(
        lambda: train_stitches(
            net,
            load_dataset(data, "train"),
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
    )
    transitions = transition_map(net, val) if hold_samples else None
    lines = [result.summary(net), *(f["text"] for f in (hold, transitions) if f)]
    if transitions and not keep_poor:
        lines.append(leave_out_poor(net, transitions))
    say("\n".join(lines))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        result.save(folder / "stitch_losses.json")
        if hold:
            save_hold_figure(hold, folder)
        if transitions:
            save_transitions(transitions, folder)


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
