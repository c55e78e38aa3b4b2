"""Compute cost of offspring without running them.

Every node of both parents and every stitch is profiled once with
`torch.utils.flop_counter` (which counts FLOPs = 2 x multiply-accumulates for the
matrix and convolution ops it knows, and nothing for elementwise ops); an offspring's
MACs are the sum over the nodes and stitches it keeps. All figures are per input
sample. Parameters are counted once per distinct tensor an offspring uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .supernet import OTHER, Key, Supernet


def count_macs(module: nn.Module, x: torch.Tensor) -> float:
    """MACs per sample of `module(x)`, by torch's flop counter (FLOPs / 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() / 2 / x.shape[0]


def _param_names(net: Supernet, key: Key) -> dict[str, int]:
    side, name = key
    node = net._fx[side][name]
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
    def from_dict(cls, net: Supernet, data: dict) -> CostTable:
        """Rebuild a saved table for `net`; KeyError/ValueError if it does not fit."""
        node_macs = {(s, n): float(v) for s, n, v in data["node_macs"]}
        stitch_macs = {k: float(v) for k, v in data["stitch_macs"].items()}
        wanted = {item for kind, item in net._order if kind == "node"}
        if set(node_macs) != wanted or set(stitch_macs) != set(net.stitches.keys()):
            raise ValueError("saved cost table does not fit the supernetwork")
        return _with_params(net, node_macs, stitch_macs)


def _with_params(net: Supernet, node_macs: dict, stitch_macs: dict) -> CostTable:
    return CostTable(
        node_macs,
        stitch_macs,
        {key: _param_names(net, key) for key in node_macs},
        {k: sum(p.numel() for p in s.parameters()) for k, s in net.stitches.items()},
    )


def profile(net: Supernet, example_input: torch.Tensor) -> CostTable:
    """Run every node and stitch once under the flop counter."""
    n = example_input.shape[0]
    env: dict[Key, object] = {}
    node_macs: dict[Key, float] = {}
    stitch_macs: dict[str, float] = {}
    with torch.no_grad():
        for kind, item in net._order:
            if kind == "node":
                with FlopCounterMode(display=False) as counter:
                    env[item] = net._run_node(item, env, example_input)
                node_macs[item] = counter.get_total_flops() / 2 / n
            else:
                for sw in net.switches[2 * item : 2 * item + 2]:
                    source = env[(OTHER[sw.side], sw.source)]
                    stitch_macs[sw.stitch] = count_macs(net.stitches[sw.stitch], source)
    return _with_params(net, node_macs, stitch_macs)


def offspring_cost(net: Supernet, table: CostTable, genotype: Sequence[int]) -> dict[str, float]:
    """MACs and parameters of an offspring, summed from the table."""
    plan = net.plan(genotype)
    macs = sum(table.node_macs[k] for k in plan.raw)
    macs += sum(table.stitch_macs[sw.stitch] for sw in plan.stitched)
    params: dict[str, int] = {}
    for key in plan.raw:
        params.update(table.node_params[key])
    n_params = sum(params.values()) + sum(table.stitch_params[sw.stitch] for sw in plan.stitched)
    return {"macs": macs, "params": n_params}
