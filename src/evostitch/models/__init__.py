"""Parent networks: named by a spec (`torchvision:resnet50`, `demo:resnet_like`, ...),
with their trained weights read from files without pickle."""

from .preprocess import Preprocess, preprocessing
from .specs import (
    architecture_spec,
    build_model,
    load_model,
    names_code,
    parse_options,
    split_spec,
)
from .weights import load_weights, read_state_dict

__all__ = [
    "Preprocess",
    "preprocessing",
    "architecture_spec",
    "build_model",
    "load_model",
    "load_weights",
    "names_code",
    "parse_options",
    "read_state_dict",
    "split_spec",
]
