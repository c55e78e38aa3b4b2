"""The `stitch` call's training (`evostitch.api.stitch`): the stitches fitted on a dataset's
train split, random offspring scored on val before and after, the losses and the figure
saved into the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .data import dataset_info, load_dataset
from .evaluation.holding import hold_evaluator, measured, save_hold_figure
from .evaluation.transitions import save_transitions, transition_map
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
) -> None:
    """Fit the stitches on the train split of `matching["data"]`, scoring random
    offspring on val before and after and then every single crossing (the transition
    map; both skipped when `hold_samples` is 0); losses and figures saved into `folder`."""
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
    say("\n".join(lines))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        result.save(folder / "stitch_losses.json")
        if hold:
            save_hold_figure(hold, folder)
        if transitions:
            save_transitions(transitions, folder)
