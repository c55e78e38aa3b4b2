"""Where evaluations run: in this process (optionally pipelined) or on Ray actors.

Both implement `evostitch.evolution.backend.Backend`; the search loop knows nothing else
of them. Ray is imported only when a `RayBackend` is built.
"""

from .backends import BACKENDS, DEFAULT_EVAL_BATCH, Workers, make_backend
from .inprocess import InProcessBackend
from .ray_backend import RayBackend

__all__ = [
    "BACKENDS",
    "DEFAULT_EVAL_BATCH",
    "InProcessBackend",
    "RayBackend",
    "Workers",
    "make_backend",
]
