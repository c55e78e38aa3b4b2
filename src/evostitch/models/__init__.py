"""Parent networks: named by a spec (`torchvision:resnet50`, `demo:resnet_like`, ...),
with their trained weights read from files without pickle."""

from .specs import build_model, load_model, parse_options, split_spec
from .weights import load_weights, read_state_dict

__all__ = [
    "build_model",
    "load_model",
    "load_weights",
    "parse_options",
    "read_state_dict",
    "split_spec",
]
