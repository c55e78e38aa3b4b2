"""An offspring as a torch.fx graph: no switches, no unused layers.

Its targets name the supernetwork's modules (`parents.<side>.<target>`,
`stitches.<name>`): `Supernet.extract` makes it a GraphModule rooted at itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import fx

from .executor import Executor, Network, log_probs
from .plan import Key, Plan, Switch, is_probability_mean, output_sides


class _Builder(Executor):
    """Executes a plan symbolically: every value is a node of a new fx graph."""

    def __init__(self, net: Network) -> None:
        super().__init__(net)
        self.graph = fx.Graph()
        self.placeholder: fx.Node | None = None

    def node(self, key: Key, inputs: Sequence[fx.Node], x: Any) -> fx.Node:
        side, name = key
        node = self.net.fx_node(key)
        if node.op == "placeholder":
            if self.placeholder is None:
                self.placeholder = self.graph.placeholder("x")
            return self.placeholder
        target = node.target
        if node.op in ("call_module", "get_attr"):
            target = f"parents.{side}.{node.target}"
        env = dict(zip(node.all_input_nodes, inputs, strict=True))
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        return self.graph.create_node(node.op, target, args, kwargs, f"{side}_{name}")

    def switch(self, sw: Switch, on: bool, own: Any, source: Any) -> Any:
        return self.graph.call_module(f"stitches.{sw.stitch}", (source,)) if on else own

    def output(self, choice: str, outputs: Mapping[str, fx.Node]) -> fx.Node:
        graph = self.graph
        values = [outputs[s] for s in output_sides(choice, tuple(outputs))]
        if len(values) == 1:
            result = values[0]
        else:
            if is_probability_mean(choice):
                values = [graph.call_method("softmax", (v, 1)) for v in values]
            total = values[0]
            for v in values[1:]:
                total = graph.call_function(torch.add, (total, v))
            result = graph.call_function(torch.div, (total, len(values)))
            if is_probability_mean(choice):
                result = graph.call_function(log_probs, (result,))
        graph.output(result)
        return result


def offspring_graph(net: Network, plan: Plan) -> fx.Graph:
    """The plan's network as an fx graph over `net`'s parents and stitches (checked)."""
    builder = _Builder(net)
    builder.run(plan)
    builder.graph.lint()
    return builder.graph
