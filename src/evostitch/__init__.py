"""evostitch: recombine trained neural networks by stitching, then search the offspring."""

__version__ = "0.1.0"

from .errors import EvostitchError
from .graph import Graph, trace
from .matching import match
from .specs import load_model
from .supernet import Supernet

__all__ = ["EvostitchError", "Graph", "Supernet", "load_model", "match", "trace"]
