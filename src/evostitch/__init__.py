"""evostitch: recombine trained neural networks by stitching, then search the offspring."""

__version__ = "0.1.0"
