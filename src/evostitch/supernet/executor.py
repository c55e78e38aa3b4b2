"""One way to execute a plan, whatever its values are.

`Executor.run(plan, x)` walks the plan's steps, keeps each value until its last read
and hands every step to a method a subclass may override:

- `node(key, inputs, x)`: a parent's node on the values of its inputs (default: run it);
- `switch(sw, on, own, source)`: what the switched point holds: `own` (the parent's
  value, None if the plan does not need it) or something computed from `source` (the
  other parent's raw value); default: the stitch if `on`, else `own`;
- `output(choice, outputs)`: the offspring's output from the parents' (default: one
  parent's, their mean or the log of their mean probabilities).

Eager evaluation, stitch training, profiling, extraction to torch.fx and the shared
evaluator's signatures are such subclasses (values: tensors, fx nodes, ints).

An executor reads a supernetwork through `Network`, its parts by name (`module.Supernet`
is one): the helpers of this package never import the class they serve.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import fx, nn

from ..errors import SupernetError
from .plan import Key, Plan, Structure, Switch, is_probability_mean, output_sides


class Network(Protocol):
    """What the helpers read of a supernetwork: the structure its plans come from, the
    parents' and stitches' modules by side and by name, and the torch.fx node behind each
    parent's node `(side, name)`."""

    structure: Structure
    parents: nn.ModuleDict
    stitches: nn.ModuleDict

    def fx_node(self, key: Key) -> fx.Node: ...


def log_probs(probs: torch.Tensor) -> torch.Tensor:
    """log of probabilities, with zeros clamped to the dtype's smallest positive value."""
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def combine_outputs(choice: str, outputs: Mapping[str, Any]) -> Any:
    """An output switch on tensors: one parent's (`choice` its side), the mean of the
    outputs it names ("mean" all, "mean-ab" those of a and b), or the log of their mean
    softmax ("mean-prob", "mean-prob-ab"); summed in side order. `outputs` maps sides to
    values (those the choice does not read may be missing or None)."""
    values = [outputs[s] for s in output_sides(choice, tuple(outputs))]
    if len(values) == 1:
        return values[0]
    if is_probability_mean(choice):
        values = [v.softmax(1) for v in values]
        return log_probs(functools.reduce(operator.add, values) / len(values))
    return functools.reduce(operator.add, values) / len(values)


def run_fx_node(
    module: nn.Module, node: fx.Node, inputs: Sequence[Any], x: torch.Tensor | None
) -> Any:
    """Run one node of `module`'s fx graph, its inputs given in `all_input_nodes` order."""
    if node.op == "placeholder":
        return x
    if node.op == "get_attr":
        obj = module
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return obj
    env = dict(zip(node.all_input_nodes, inputs, strict=True))
    args = fx.node.map_arg(node.args, env.__getitem__)
    kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
    if node.op == "call_module":
        return module.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    raise SupernetError(f"unsupported fx op {node.op}")


class Executor:
    """Walks plans of `net`; frees each value after its last read (see module docstring)."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.structure = net.structure

    def run(self, plan: Plan, x: Any = None) -> Any:
        """The output step's value (None for a plan without output)."""
        inputs = self.structure.inputs
        on = plan.on
        env: dict[Key, Any] = {}
        raw: dict[Key, Any] = {}  # the group's own values, while its switches replace them
        for step, release in zip(plan.steps, plan.release, strict=True):
            kind, item = step
            if kind == "node":
                raw.clear()
                env[item] = self.node(item, [env[k] for k in inputs[item]], x)
            elif kind == "switch":
                own = env.get(item.own)
                if own is not None:
                    raw.setdefault(item.own, own)
                source = raw.get(item.src, env.get(item.src))
                value = self.switch(item, item.index in on, own, source)
                if value is not None:
                    env[item.own] = value
            else:
                outputs = {side: env.get(key) for side, key in self.structure.outputs().items()}
                return None if item is None else self.output(item, outputs)
            for key in release:
                env.pop(key, None)
        raise SupernetError("plan without output")

    def node(self, key: Key, inputs: Sequence[Any], x: Any) -> Any:
        return run_fx_node(self.net.parents[key[0]], self.net.fx_node(key), inputs, x)

    def switch(self, sw: Switch, on: bool, own: Any, source: Any) -> Any:
        return self.net.stitches[sw.stitch](source) if on else own

    def output(self, choice: str, outputs: Mapping[str, Any]) -> Any:
        return combine_outputs(choice, outputs)
