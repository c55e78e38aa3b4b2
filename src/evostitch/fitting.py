"""The `stitch` call's training (`evostitch.api.stitch`): the stitches fitted on a dataset's
train split, random offspring scored on val before and after, the losses and the figure
saved into the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .data import dataset_info, load_dataset
from .evaluation.holding import hold_evaluator, measured, save_hold_figure
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
    offspring on val before and after; the losses (and figure) saved into `folder`."""
    from .training import DEFAULT_FIT_SAMPLES, train_stitches

    data, seed = matching["data"], training["seed"]
    fit_samples = training["fit_samples"]
    result, hold = measured(
        lambda: train_stitches(
            net,
            load_dataset(data, "train"),
            fit_samples=DEFAULT_FIT_SAMPLES if fit_samples is None else fit_samples,
            fit_memory=training["fit_memory"],
            steps=training["steps"],
            epochs=training["epochs"],
            batch_size=training["batch_size"],
            seed=seed,
            device=device,
            amp=amp,
            checkpoint_dir=folder / "checkpoints" if folder is not None else None,
            checkpoint_identity=matching,
            progress=progress,
        ),
        hold_evaluator(
            net, load_dataset(data, "val"), dataset_info(data).num_classes, device=device, amp=amp
        ),
        samples=hold_samples,
        seed=seed,
    )
    say(result.summary(net) + (f"\n{hold['text']}" if hold else ""))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        result.save(folder / "stitch_losses.json")
        if hold:
            save_hold_figure(hold, folder)
