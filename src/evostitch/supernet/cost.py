"""Compute cost of offspring without running them.

Every node of both parents and every stitch is profiled once with
`torch.utils.flop_counter` (which counts FLOPs = 2 x multiply-accumulates for the
matrix and convolution ops it knows, and nothing for elementwise ops); an offspring's
MACs are the sum over the nodes and stitches it keeps. All figures are per input
sample. Parameters are counted once per distinct tensor an offspring uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import SupernetError
from .executor import Executor, Network
from .plan import Key, Plan, Switch


def count_macs(module: nn.Module, x: torch.Tensor) -> float:
    """MACs per sample of `module(x)`, by torch's flop counter (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode  # 0.6 s to import: on use

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() / 2 / x.shape[0]


def _param_names(net: Network, key: Key) -> dict[str, int]:
    side, _ = key
    node = net.fx_node(key)
    prefix = f"parents.{side}."
    if node.op == "call_module":
        module = net.parents[side].get_submodule(node.target)
        return {f"{prefix}{node.target}.{k}": p.numel() for k, p in module.named_parameters()}
    if node.op == "get_attr":
        obj = net.parents[side]
        for part in node.target.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, nn.Parameter):
            return {f"{prefix}{node.target}": obj.numel()}
    return {}


@dataclass
class CostTable:
    """MACs per node and per stitch, and the parameters each uses."""

    node_macs: dict[Key, float]
    stitch_macs: dict[str, float]
    node_params: dict[Key, dict[str, int]] = field(default_factory=dict)
    stitch_params: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The measured MACs, for saving (parameters are recounted from the modules)."""
        return {
            "node_macs": [[s, n, v] for (s, n), v in self.node_macs.items()],
            "stitch_macs": self.stitch_macs,
        }

    @classmethod
    def from_dict(cls, net: Network, data: dict) -> CostTable:
        """Rebuild a saved table for `net`; SupernetError if it does not fit."""
        try:
            node_macs = {(s, n): float(v) for s, n, v in data["node_macs"]}
            stitch_macs = {k: float(v) for k, v in data["stitch_macs"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SupernetError(f"saved cost table is damaged ({exc})") from None
        figures = [*node_macs.values(), *stitch_macs.values()]
        if not all(math.isfinite(v) and v >= 0 for v in figures):
            raise SupernetError("saved cost table holds MACs negative or not finite")
        if set(node_macs) != set(net.structure.inputs) or set(stitch_macs) != set(net.stitches):
            raise SupernetError("saved cost table does not fit the supernetwork")
        return _with_params(net, node_macs, stitch_macs)


def _with_params(net: Network, node_macs: dict, stitch_macs: dict) -> CostTable:
    return CostTable(
        node_macs,
        stitch_macs,
        {key: _param_names(net, key) for key in node_macs},
        {k: sum(p.numel() for p in s.parameters()) for k, s in net.stitches.items()},
    )


class _Profiler(Executor):
    """Runs every node and stitch once under the flop counter."""

    def __init__(self, net: Network) -> None:
        super().__init__(net)
        self.node_macs: dict[Key, float] = {}
        self.stitch_macs: dict[str, float] = {}

    def node(self, key: Key, inputs: Sequence[Any], x: Any) -> Any:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            value = super().node(key, inputs, x)
        self.node_macs[key] = counter.get_total_flops() / 2 / x.shape[0]
        return value

    def switch(self, sw: Switch, on: bool, own: Any, source: Any) -> Any:
        self.stitch_macs[sw.stitch] = count_macs(self.net.stitches[sw.stitch], source)
        return own


def profile(net: Network, example_input: torch.Tensor) -> CostTable:
    """Measure MACs and parameters of every node and stitch (once per supernetwork)."""
    profiler = _Profiler(net)
    with torch.no_grad():
        profiler.run(net.structure.full_plan(), example_input)
    return _with_params(net, profiler.node_macs, profiler.stitch_macs)


def plan_cost(table: CostTable, plan: Plan) -> dict[str, float]:
    """MACs and parameters of the offspring a plan computes, summed from the table."""
    macs = sum(table.node_macs[k] for k in plan.raw)
    macs += sum(table.stitch_macs[sw.stitch] for sw in plan.stitched)
    params: dict[str, int] = {}
    for key in plan.raw:
        params.update(table.node_params[key])
    n_params = sum(params.values()) + sum(table.stitch_params[sw.stitch] for sw in plan.stitched)
    return {"macs": macs, "params": n_params}
