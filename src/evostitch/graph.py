"""Trace a network into a dataflow graph of named tensor nodes (torch.fx).

The traced module returns a single tensor: for models that return a tuple or a dict
(segmentation models return `{"out": ..., "aux": ...}`) the main output is kept
(`"out"`, else the first entry) and what only fed the others is removed.
Node names are torch.fx node names, so results map back onto the traced module.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import networkx as nx
import torch
from torch import fx, nn

from .errors import ModelError

#: kinds of candidate stitching points, by the layout of their tensor
VECTOR, TOKENS, MAP = "vector", "tokens", "map"


def example_input(input_shape: Sequence[int], batch: int = 2) -> torch.Tensor:
    """A fixed random input to trace and profile with (only its shape matters)."""
    shape = tuple(input_shape)
    if not shape or not all(isinstance(v, numbers.Integral) and v > 0 for v in shape):
        raise ModelError(f"an input shape is positive ints like (3, 224, 224), not {shape}")
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, *shape, generator=gen)


@dataclass(frozen=True)
class Node:
    """One node of a traced graph."""

    name: str
    op: str
    target: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...] | None  # output shape, batch first; None if not a tensor
    dtype: str | None
    parameterised: bool  # produced by a module (or op) holding parameters
    depth: float  # longest path from the input, relative to the output's

    @property
    def kind(self) -> str | None:
        """`vector` [N,C], `tokens` [N,T,C] or `map` [N,C,H,W] for candidate points, else None."""
        if self.shape is None or self.op in ("get_attr", "output"):
            return None
        if self.dtype is None or not self.dtype.startswith("torch.float"):
            return None
        return {2: VECTOR, 3: TOKENS, 4: MAP}.get(len(self.shape))

    @property
    def channels(self) -> int:
        return self.shape[1] if self.kind in (VECTOR, MAP) else self.shape[-1]

    @property
    def spatial(self) -> tuple[int, ...]:
        """Size that must agree for two points to be stitched: (H, W), (T,) or ()."""
        if self.kind == MAP:
            return tuple(self.shape[2:])
        if self.kind == TOKENS:
            return (self.shape[1],)
        return ()

    @property
    def grid(self) -> tuple[int, int] | None:
        """The positions as an image grid: a map's (H, W); for tokens, (g, g) when all but
        `prefix` of them fill a square of side g >= 2 (a ViT's patches in raster order);
        else None."""
        if self.kind == MAP:
            return (self.shape[2], self.shape[3])
        if self.kind == TOKENS:
            side = _token_side(self.shape[1])
            return None if side is None else (side[0], side[0])
        return None

    @property
    def prefix(self) -> int:
        """Tokens before the patch grid (a class token, a distillation token): 0 to 2."""
        side = _token_side(self.shape[1]) if self.kind == TOKENS else None
        return 0 if side is None else side[1]


def _token_side(tokens: int) -> tuple[int, int] | None:
    """(g, k): `tokens` = k + g * g with g >= 2 and the fewest prefix tokens k <= 2.
    At most one k fits (two squares >= 4 differ by at least 5)."""
    for k in (0, 1, 2):
        g = math.isqrt(max(tokens - k, 0))
        if g >= 2 and g * g == tokens - k:
            return g, k
    return None


@dataclass
class Graph:
    """A traced network: its GraphModule and its nodes in topological order."""

    module: fx.GraphModule
    nodes: dict[str, Node]
    input: str
    output: str  # the node whose tensor is the network's output
    batch_size: int

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def candidates(self) -> list[str]:
        """Tensor nodes that can be stitched, batch-dependent, in topological order."""
        return [
            n.name
            for n in self.nodes.values()
            if n.kind is not None and n.shape[0] == self.batch_size
        ]

    @cached_property
    def dag(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for node in self.nodes.values():
            g.add_node(node.name)
            g.add_edges_from((i, node.name) for i in node.inputs)
        return g


class _Tracer(fx.Tracer):
    """Records the module being traced, so a failure can name it."""

    def __init__(
        self, leaf_modules: Iterable[str | type] = (), autowrap: Sequence[Callable] = ()
    ) -> None:
        super().__init__(autowrap_functions=tuple(autowrap))
        self.leaves = tuple(leaf_modules)
        self.stack: list[str] = []

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        for leaf in self.leaves:
            if isinstance(leaf, str) and (qualname == leaf or type(m).__name__ == leaf):
                return True
            if isinstance(leaf, type) and isinstance(m, leaf):
                return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        self.stack.append(f"{self.path_of_module(m) or '<root>'} ({type(m).__name__})")
        result = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        return result


def library_fx_rules(model: nn.Module) -> tuple[list[type], list[Callable]]:
    """The leaf modules and functions a model's library registers for torch.fx: timm's
    (e.g. `Conv2dSame`, whose "same" padding computes on shapes), for timm models."""
    if not any(type(m).__module__.startswith("timm.") for m in model.modules()):
        return [], []
    try:
        from timm.layers import _fx
    except ImportError:
        return [], []
    functions = [f for f in _fx.get_notrace_functions() if callable(f)]
    return list(_fx.get_notrace_modules()), functions


def symbolic_trace(model: nn.Module, leaf_modules: Sequence[str | type] = ()) -> fx.GraphModule:
    """torch.fx trace with a one-line error naming the module that could not be traced;
    the model's library's own fx rules (`library_fx_rules`) apply."""
    modules, functions = library_fx_rules(model)
    tracer = _Tracer([*leaf_modules, *modules], functions)
    try:
        graph = tracer.trace(model, concrete_args=_optional_arguments(model))
    except Exception as exc:
        where = tracer.stack[-1] if tracer.stack else f"<root> ({type(model).__name__})"
        name = where.split(" (")[-1].rstrip(")")
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(
            f"cannot trace module {where}: {reason}. Remedy: mark it a leaf module "
            f"(trace(..., leaf_modules=['{name}']) or --leaf-module {name})"
        ) from exc
    _drop_fixed_arguments(graph)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _drop_fixed_arguments(graph: fx.Graph) -> None:
    """Remove the placeholders of arguments fixed by `concrete_args`, when all they feed
    is fx's checks of their value."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"][1:]
    for placeholder in placeholders:
        found, stack = {placeholder: None}, list(placeholder.users)
        while stack:
            node = stack.pop()
            if node not in found:
                found[node] = None
                stack.extend(node.users)
        names = {getattr(n.target, "__name__", "") for n in list(found)[1:]}
        if names <= {"_assert_is_none", "eq", "_assert"}:
            for node in reversed([n for n in graph.nodes if n in found]):
                graph.erase_node(node)


def _optional_arguments(model: nn.Module) -> dict[str, object] | None:
    """forward's arguments after the input that have defaults (a mask, flags...), fixed to
    their defaults: the traced network takes one tensor."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    fixed = {p.name: p.default for p in params if p.kind in kinds and p.default is not p.empty}
    return fixed or None


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph once and records each node's tensor shape and dtype."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.shapes: dict[str, tuple[tuple[int, ...], str]] = {}
        self.failed_at: str | None = None

    def run_node(self, n: fx.Node):
        try:
            result = super().run_node(n)
        except Exception:
            self.failed_at = self.failed_at or n.name
            raise
        if isinstance(result, torch.Tensor):
            self.shapes[n.name] = (tuple(result.shape), str(result.dtype))
        return result


def _keep_main_output(gm: fx.GraphModule) -> None:
    """Make the graph return one tensor: dict -> "out" (else first), tuple -> first."""
    out = next(n for n in gm.graph.nodes if n.op == "output")
    value = out.args[0]
    while isinstance(value, dict | list | tuple):
        if isinstance(value, dict):
            value = value["out"] if "out" in value else next(iter(value.values()))
        else:
            value = value[0]
    if not isinstance(value, fx.Node):
        raise ModelError("the model's output is not a tensor computed from its input")
    out.args = (value,)
    gm.graph.eliminate_dead_code()
    gm.recompile()


def _is_parameterised(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_module":
        return any(True for _ in gm.get_submodule(node.target).parameters(recurse=False))
    return any(i.op == "get_attr" for i in node.all_input_nodes)


def _depths(gm: fx.GraphModule, output: str) -> dict[str, float]:
    longest: dict[str, int] = {}
    for node in gm.graph.nodes:
        longest[node.name] = max((longest[i.name] + 1 for i in node.all_input_nodes), default=0)
    top = max(longest[output], 1)
    return {name: min(d / top, 1.0) for name, d in longest.items()}


def trace(
    model: nn.Module, example_input: torch.Tensor, leaf_modules: Sequence[str | type] = ()
) -> Graph:
    """Trace `model` on `example_input` (batch first) into a `Graph` with shapes."""
    if example_input.dim() < 2:
        raise ModelError("example input must have a batch dimension")
    was_training = model.training
    model.eval()
    try:
        gm = symbolic_trace(model, leaf_modules)
    finally:
        model.train(was_training)
    gm.eval()
    _keep_main_output(gm)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ModelError(f"model must take one input tensor, it takes {len(placeholders)}")
    recorder = _ShapeRecorder(gm)
    try:
        with torch.no_grad():
            recorder.run(example_input)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(
            f"model rejects input of shape {tuple(example_input.shape)} "
            f"(at node {recorder.failed_at}): {reason}"
        ) from exc
    output = next(n for n in gm.graph.nodes if n.op == "output").args[0].name
    depth = _depths(gm, output)
    nodes: dict[str, Node] = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            continue
        shape, dtype = recorder.shapes.get(node.name, (None, None))
        nodes[node.name] = Node(
            name=node.name,
            op=node.op,
            target=str(node.target) if node.op != "call_function" else node.target.__name__,
            inputs=tuple(i.name for i in node.all_input_nodes),
            shape=shape,
            dtype=dtype,
            parameterised=_is_parameterised(node, gm),
            depth=depth[node.name],
        )
    if nodes[output].shape is None:
        raise ModelError("the model's output is not a tensor")
    return Graph(gm, nodes, placeholders[0].name, output, example_input.shape[0])
