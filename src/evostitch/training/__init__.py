"""Stitch training: fit every stitch to the tensor it replaces, parents frozen.

`walks` holds the passes over a supernetwork, `fit` the closed-form fit and the held-out
losses, `checkpoint` the resumable state, `loop` the training run that ties them.
"""

from .fit import held_out_losses, least_squares_init
from .loop import DEFAULT_FIT_SAMPLES, DEFAULT_STEPS, HELD_OUT, TrainResult, train_stitches
from .walks import forward_random, parent_tensors

__all__ = [
    "DEFAULT_FIT_SAMPLES",
    "DEFAULT_STEPS",
    "HELD_OUT",
    "TrainResult",
    "forward_random",
    "held_out_losses",
    "least_squares_init",
    "parent_tensors",
    "train_stitches",
]
