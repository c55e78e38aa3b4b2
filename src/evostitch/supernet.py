"""The supernetwork: two frozen parents, stitches at matched points, and switches.

A genotype is a sequence of ints: `g[0]` is the output switch (0 = A, 1 = B,
2 = mean of the outputs, and for classifiers 3 = mean of the softmax probabilities,
returned as its log so that every output is a logit), then two binary switches per
matched pair i: `g[1 + 2i]` replaces A's tensor at `a_i` by the stitched tensor from
B's `b_i`, `g[2 + 2i]` replaces B's tensor at `b_i` by the stitched one from `a_i`.

Everything a genotype implies (which nodes run, which switches matter, its cost) is
derived from the graphs, never by running the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from torch import fx, nn

from .errors import EvostitchError
from .graph import VECTOR, Graph, trace
from .stitches import Stitch

SIDES = ("a", "b")
EXAMPLE_BATCH = 2


def example_input(input_shape: Sequence[int], batch: int = EXAMPLE_BATCH) -> torch.Tensor:
    """A fixed random input used to trace and profile (only its shape matters)."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, *input_shape, generator=gen)


OTHER = {"a": "b", "b": "a"}
Key = tuple[str, str]  # (side, node name)


@dataclass(frozen=True)
class Switch:
    """Position `index` swaps `side`'s tensor at `node` for `stitch` of the other's `source`."""

    index: int
    side: str
    node: str
    source: str
    stitch: str


@dataclass(frozen=True)
class Plan:
    """What one genotype computes: raw nodes in execution order and the stitches it uses."""

    steps: tuple[tuple[str, Any], ...]  # ("node", key) | ("switch", Switch) | ("output", choice)
    raw: frozenset[Key]
    stitched: tuple[Switch, ...]
    active: tuple[bool, ...]


class Supernet(nn.Module):
    """Two parents joined by stitches; `forward(x, genotype)` runs one offspring."""

    def __init__(
        self,
        graph_a: Graph,
        graph_b: Graph,
        matches: Sequence[tuple[str, str, float]],
        specs: Sequence[dict | None] = (None, None),
    ) -> None:
        super().__init__()
        self.graphs = {"a": graph_a, "b": graph_b}
        self.parents = nn.ModuleDict({"a": graph_a.module, "b": graph_b.module})
        for p in self.parents.parameters():
            p.requires_grad_(False)
        self.parents.eval()
        out_a, out_b = graph_a[graph_a.output], graph_b[graph_b.output]
        if out_a.shape[1:] != out_b.shape[1:]:
            raise EvostitchError(
                f"parents disagree on their output shape: {out_a.shape[1:]} vs {out_b.shape[1:]}"
            )
        ends = {graph_a.input, graph_a.output, graph_b.input, graph_b.output}
        self.matches = [(a, b, float(s)) for a, b, s in matches if a not in ends and b not in ends]
        self.specs = list(specs)
        self.input_shape: tuple[int, ...] = tuple(graph_a[graph_a.input].shape[1:])
        self.leaf_modules: list[str] = []
        self.matching: Any = None
        self.cost_table: Any = None
        self.data: str | None = None  # dataset spec the stitches were trained on
        self.task = "classification" if out_a.kind == VECTOR else "segmentation"
        self.output_choices = ("a", "b", "mean") + (
            ("mean-prob",) if self.task == "classification" else ()
        )
        self.stitches = nn.ModuleDict()
        self.switches: list[Switch] = []
        for i, (a, b, _) in enumerate(self.matches):
            self.stitches[f"ba{i}"] = Stitch(graph_b[b], graph_a[a])
            self.stitches[f"ab{i}"] = Stitch(graph_a[a], graph_b[b])
            self.switches.append(Switch(1 + 2 * i, "a", a, b, f"ba{i}"))
            self.switches.append(Switch(2 + 2 * i, "b", b, a, f"ab{i}"))
        self.genotype_spec = [len(self.output_choices)] + [2] * len(self.switches)
        self._switch_at = {(s.side, s.node): s for s in self.switches}
        self._fx = {
            side: {n.name: n for n in g.module.graph.nodes} for side, g in self.graphs.items()
        }
        self._order = self._merged_order()
        self._plan = lru_cache(maxsize=4096)(self._make_plan)

    @classmethod
    def build(
        cls,
        a: str | nn.Module,
        b: str | nn.Module,
        input_shape: Sequence[int],
        *,
        weights_a: str | None = None,
        weights_b: str | None = None,
        similarity: str = "uniform",
        data: Iterable[torch.Tensor] | None = None,
        max_ratio: int = 1,
        leaf_modules: Sequence[str] = (),
        time_limit: float | None = None,
    ) -> Supernet:
        """Trace two parents (specs or modules), match them and insert untrained stitches.

        `similarity` is "uniform" (every compatible pair weighs 1) or "cka" (needs `data`,
        an iterable of input batches). `max_ratio` > 1 also allows stitching feature maps
        whose sizes differ by an integer factor up to it.
        """
        from .matching import match
        from .specs import load_model

        models, specs = [], []
        for model, weights in ((a, weights_a), (b, weights_b)):
            if isinstance(model, str):
                specs.append({"spec": model, "weights": str(weights) if weights else None})
                model = load_model(model, weights)
            else:
                specs.append(None)
            models.append(model)
        example = example_input(input_shape)
        graphs = [trace(m, example, leaf_modules) for m in models]
        result = match(
            graphs[0],
            graphs[1],
            similarity=similarity,
            data=data,
            max_ratio=max_ratio,
            time_limit=time_limit,
        )
        net = cls(graphs[0], graphs[1], result.pairs, specs)
        net.input_shape = tuple(input_shape)
        net.leaf_modules = list(leaf_modules)
        net.matching = result
        net.profile(example)
        return net

    def profile(self, example: torch.Tensor) -> None:
        """Measure MACs and parameters per node and stitch (once; `cost()` sums them)."""
        from .cost import profile

        self.cost_table = profile(self, example)

    def cost(self, genotype: Sequence[int]) -> dict[str, float]:
        """MACs (per sample) and parameter count of an offspring, without running it."""
        from .cost import offspring_cost

        if getattr(self, "cost_table", None) is None:
            raise EvostitchError("supernet has no cost table: call profile(example) first")
        return offspring_cost(self, self.cost_table, genotype)

    def save(self, folder: str | Path) -> Path:
        """Save as JSON + safetensors (see `evostitch.persistence`)."""
        from .persistence import save

        return save(self, folder)

    @classmethod
    def load(cls, folder: str | Path) -> Supernet:
        """Load a supernetwork saved with `save`, without pickle."""
        from .persistence import load

        return load(folder)

    # ----- structure -------------------------------------------------------------------------
    def _merged_order(self) -> list[tuple[str, Any]]:
        """Topological order of both graphs with each matched pair merged into one step."""
        merged = nx.DiGraph()
        alias: dict[Key, Any] = {}
        for i, (a, b, _) in enumerate(self.matches):
            alias[("a", a)] = alias[("b", b)] = ("pair", i)
        for side, g in self.graphs.items():
            for node in g.nodes.values():
                me = alias.get((side, node.name), (side, node.name))
                merged.add_node(me)
                merged.add_edges_from((alias.get((side, i), (side, i)), me) for i in node.inputs)
        position = {(side, n): k for side, g in self.graphs.items() for k, n in enumerate(g.nodes)}

        def rank(item: Any) -> tuple:
            if item[0] == "pair":
                a, b, _ = self.matches[item[1]]
                return (position[("a", a)], 0, position[("b", b)])
            return (position[item], 0 if item[0] == "a" else 1, 0)

        try:
            order = list(nx.lexicographical_topological_sort(merged, key=rank))
        except nx.NetworkXUnfeasible as exc:
            raise EvostitchError("the matching merges the parents into a cyclic graph") from exc
        steps: list[tuple[str, Any]] = []
        for item in order:
            if item[0] == "pair":
                a, b, _ = self.matches[item[1]]
                steps += [("node", ("a", a)), ("node", ("b", b)), ("pair", item[1])]
            else:
                steps.append(("node", item))
        return steps

    def check_genotype(self, genotype: Sequence[int]) -> tuple[int, ...]:
        g = tuple(int(v) for v in genotype)
        spec = self.genotype_spec
        if len(g) != len(spec) or any(not 0 <= v < c for v, c in zip(g, spec, strict=True)):
            raise EvostitchError(
                f"genotype must have {len(spec)} values within cardinalities (output switch "
                f"< {spec[0]}, switches 0/1); got length {len(g)}"
            )
        return g

    def _make_plan(self, g: tuple[int, ...]) -> Plan:
        choice = self.output_choices[g[0]]
        outputs = [s for s in SIDES if choice in (s, "mean", "mean-prob")]
        need_raw: set[Key] = set()
        need_resolved: set[Key] = set()
        stack = [(s, self.graphs[s].output) for s in outputs]
        while stack:
            key = stack.pop()
            if key in need_resolved:
                continue
            need_resolved.add(key)
            sw = self._switch_at.get(key)
            raw = (OTHER[key[0]], sw.source) if sw is not None and g[sw.index] else key
            if raw in need_raw:
                continue
            need_raw.add(raw)
            stack.extend((raw[0], i) for i in self.graphs[raw[0]][raw[1]].inputs)
        active = [True] + [(s.side, s.node) in need_resolved for s in self.switches]
        stitched = tuple(s for s in self.switches if active[s.index] and g[s.index])
        steps: list[tuple[str, Any]] = []
        for kind, item in self._order:
            if kind == "node" and item in need_raw:
                steps.append(("node", item))
            elif kind == "pair":
                for sw in self.switches[2 * item : 2 * item + 2]:
                    if active[sw.index]:
                        steps.append(("switch", sw))
        steps.append(("output", choice))
        return Plan(tuple(steps), frozenset(need_raw), stitched, tuple(active))

    def plan(self, genotype: Sequence[int]) -> Plan:
        return self._plan(self.check_genotype(genotype))

    def active_variables(self, genotype: Sequence[int]) -> list[bool]:
        """Which genotype positions change the offspring (the output switch always does)."""
        return list(self.plan(genotype).active)

    def canonical(self, genotype: Sequence[int]) -> tuple[int, ...]:
        """The genotype with every inactive variable set to 0: equal networks, equal keys."""
        g = self.check_genotype(genotype)
        return tuple(v if on else 0 for v, on in zip(g, self.plan(g).active, strict=True))

    @property
    def reference_genotypes(self) -> list[tuple[int, ...]]:
        """Parent A, parent B and their ensemble(s): output choice, every switch 0."""
        zeros = (0,) * len(self.switches)
        return [(k,) + zeros for k in range(len(self.output_choices))]

    # ----- execution -------------------------------------------------------------------------
    def _run_node(self, key: Key, env: dict[Key, Any], x: torch.Tensor) -> Any:
        side, name = key
        node = self._fx[side][name]
        if node.op == "placeholder":
            return x
        parent = self.parents[side]
        if node.op == "get_attr":
            obj = parent
            for part in node.target.split("."):
                obj = getattr(obj, part)
            return obj
        args = fx.node.map_arg(node.args, lambda n: env[(side, n.name)])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[(side, n.name)])
        if node.op == "call_module":
            return parent.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        raise EvostitchError(f"unsupported fx op {node.op}")

    def _combine(self, choice: str, env: dict[Key, Any]) -> torch.Tensor:
        out_a = env.get(("a", self.graphs["a"].output))
        out_b = env.get(("b", self.graphs["b"].output))
        if choice == "a":
            return out_a
        if choice == "b":
            return out_b
        if choice == "mean":
            return (out_a + out_b) / 2
        return _log_probs((out_a.softmax(1) + out_b.softmax(1)) / 2)

    def forward(self, x: torch.Tensor, genotype: Sequence[int]) -> torch.Tensor:
        """Output of the offspring `genotype` (only the nodes it keeps are run)."""
        plan = self.plan(genotype)
        env: dict[Key, Any] = {}
        raw_of_switched: dict[Key, Any] = {}
        for kind, item in plan.steps:
            if kind == "node":
                env[item] = self._run_node(item, env, x)
            elif kind == "switch":
                sw: Switch = item
                own, src = (sw.side, sw.node), (OTHER[sw.side], sw.source)
                if own in env:  # keep the raw tensor for the partner switch
                    raw_of_switched.setdefault(own, env[own])
                if genotype[sw.index]:
                    source = raw_of_switched.get(src, env.get(src))
                    env[own] = self.stitches[sw.stitch](source)
            else:
                return self._combine(item, env)
        raise AssertionError("plan without output")

    def forward_random(
        self,
        x: torch.Tensor,
        p: float = 0.5,
        on_loss: Callable[[str, torch.Tensor], None] | None = None,
        generator: torch.Generator | None = None,
        targets: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Stitch-training pass: every switch flips per sample with probability `p`.

        Each stitch learns to reproduce the tensor it would replace in this pass (MSE),
        or `targets[stitch]` when given (e.g. the parent's clean tensor). Its loss is
        handed to `on_loss` at once (call `.backward()` there): inputs and targets are
        detached, so memory stays bounded by one stitch's graph. Returns the losses.
        """
        env: dict[Key, Any] = {}
        losses: dict[str, float] = {}
        n = x.shape[0]
        for kind, item in self._order:
            if kind == "node":
                with torch.no_grad():
                    env[item] = self._run_node(item, env, x)
                continue
            a, b, _ = self.matches[item]
            raw = {"a": env[("a", a)], "b": env[("b", b)]}
            for sw in self.switches[2 * item : 2 * item + 2]:
                target = raw[sw.side].detach()
                goal = target if targets is None else targets[sw.stitch]
                with torch.enable_grad():
                    out = self.stitches[sw.stitch](raw[OTHER[sw.side]].detach())
                    loss = nn.functional.mse_loss(out, goal)
                if on_loss is not None:
                    on_loss(sw.stitch, loss)
                losses[sw.stitch] = float(loss.detach())
                mask = torch.rand(n, generator=generator, device=x.device) < p
                mask = mask.view(n, *([1] * (target.dim() - 1)))
                env[(sw.side, sw.node)] = torch.where(mask, out.detach(), target)
        return losses

    # ----- offspring -------------------------------------------------------------------------
    def extract(self, genotype: Sequence[int]) -> fx.GraphModule:
        """A standalone GraphModule of the offspring: no switches, no unused layers.

        It shares parameters with the supernetwork; `copy.deepcopy` it to change them.
        """
        plan = self.plan(genotype)
        graph = fx.Graph()
        new: dict[Key, fx.Node] = {}
        raw_of_switched: dict[Key, fx.Node] = {}
        placeholder = None
        for kind, item in plan.steps:
            if kind == "node":
                side, name = item
                node = self._fx[side][name]
                if node.op == "placeholder":
                    if placeholder is None:
                        placeholder = graph.placeholder("x")
                    new[item] = placeholder
                    continue
                target = node.target
                if node.op in ("call_module", "get_attr"):
                    target = f"parents.{side}.{node.target}"
                args = fx.node.map_arg(node.args, lambda n, s=side: new[(s, n.name)])
                kwargs = fx.node.map_arg(node.kwargs, lambda n, s=side: new[(s, n.name)])
                new[item] = graph.create_node(node.op, target, args, kwargs, f"{side}_{name}")
            elif kind == "switch":
                sw: Switch = item
                own, src = (sw.side, sw.node), (OTHER[sw.side], sw.source)
                if own in new:
                    raw_of_switched.setdefault(own, new[own])
                if genotype[sw.index]:
                    source = raw_of_switched.get(src, new.get(src))
                    new[own] = graph.call_module(f"stitches.{sw.stitch}", (source,))
            else:
                graph.output(self._combine_fx(graph, item, new))
        graph.lint()
        return fx.GraphModule(self, graph, "Offspring")

    def _combine_fx(self, graph: fx.Graph, choice: str, new: dict[Key, fx.Node]) -> fx.Node:
        out_a = new.get(("a", self.graphs["a"].output))
        out_b = new.get(("b", self.graphs["b"].output))
        if choice in ("a", "b"):
            return out_a if choice == "a" else out_b
        if choice == "mean":
            return graph.call_function(
                torch.div, (graph.call_function(torch.add, (out_a, out_b)), 2)
            )
        pa = graph.call_method("softmax", (out_a, 1))
        pb = graph.call_method("softmax", (out_b, 1))
        probs = graph.call_function(torch.div, (graph.call_function(torch.add, (pa, pb)), 2))
        return graph.call_function(_log_probs, (probs,))

    def describe(self, genotype: Sequence[int]) -> str:
        """A readable account of an offspring: parents used, crossovers, output."""
        plan = self.plan(genotype)
        parts = [f"output: {self.output_choices[genotype[0]]}"]
        for side in SIDES:
            g = self.graphs[side]
            kept = [n for n in g.nodes if (side, n) in plan.raw]
            if kept:
                parts.append(f"{side.upper()}: {len(kept)}/{len(g.nodes)} nodes")
        for sw in plan.stitched:
            other = OTHER[sw.side].upper()
            parts.append(f"{other}:{sw.source} -> {sw.side.upper()}:{sw.node}")
        return "; ".join(parts)


def _log_probs(probs: torch.Tensor) -> torch.Tensor:
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
