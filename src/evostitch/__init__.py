"""evostitch: recombine trained neural networks by stitching, then search the offspring."""

__version__ = "0.1.0"

from .errors import EvostitchError
from .graph import Graph, trace
from .specs import load_model
from .supernet import Supernet

__all__ = ["EvostitchError", "Graph", "Supernet", "load_model", "match", "trace"]


def __getattr__(name: str):
    if name == "match":  # imported lazily: scipy is only needed once matching
        from .matching import match

        return match
    raise AttributeError(name)
