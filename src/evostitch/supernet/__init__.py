"""The supernetwork: parents, stitches and switches; plans, execution, cost, files.

Modules, bottom up: `stitches` (the trainable maps), `plan` (what a genotype computes,
from the graphs alone), `executor` (the one walk over a plan), `cost` (MACs without
running), `extract` (an offspring as a GraphModule), `io` (folders of JSON +
safetensors), `module` (`Supernet`, the nn.Module tying them together).
"""

from ..graph import example_input
from .cost import CostTable, count_macs
from .executor import Executor, combine_outputs, log_probs
from .module import Supernet
from .plan import (
    OTHER,
    SIDES,
    Key,
    Plan,
    Structure,
    Switch,
    output_choices_for,
    output_sides,
    side_names,
)
from .stitches import Stitch

__all__ = [
    "OTHER",
    "SIDES",
    "CostTable",
    "Executor",
    "Key",
    "Plan",
    "Stitch",
    "Structure",
    "Supernet",
    "Switch",
    "combine_outputs",
    "count_macs",
    "example_input",
    "log_probs",
    "output_choices_for",
    "output_sides",
    "side_names",
]
