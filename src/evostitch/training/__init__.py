"""Stitch training: fit every stitch to the tensor it replaces, parents frozen.

`walks` holds the passes over a supernetwork, `fit` the closed-form fit and the held-out
losses, `downstream` the stage that trains all stitches on random offspring, `checkpoint`
the resumable state, `optimizers` the gradient steps' AdamW, `loop` the training run
that ties them (`TrainSettings`, how it trains) and `result` what it reports.
"""

from .fit import held_out_losses, least_squares_init
from .loop import (
    DEFAULT_FIT_SAMPLES,
    DEFAULT_STEPS,
    HELD_OUT,
    TrainResult,
    TrainSettings,
    train_stitches,
)
from .walks import forward_random, parent_tensors

__all__ = [
    "DEFAULT_FIT_SAMPLES",
    "DEFAULT_STEPS",
    "HELD_OUT",
    "TrainResult",
    "TrainSettings",
    "forward_random",
    "held_out_losses",
    "least_squares_init",
    "parent_tensors",
    "train_stitches",
]
