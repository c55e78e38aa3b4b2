"""What a genotype computes, derived from the graphs alone (never by running a network).

The supernetwork's *structure*: both parents' graphs, the matched pairs, one switch per
side of each pair, and one topological order of both graphs with each matched pair
merged into one step. A *plan* is the structure specialised to one genotype: the nodes
it runs in that order, the switches that matter, the stitches it uses, and when each
value is read for the last time (so an executor can free it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ..errors import SupernetError
from ..graph import VECTOR, Graph

SIDES = ("a", "b")
OTHER = {"a": "b", "b": "a"}
Key = tuple[str, str]  # (side, node name)
Step = tuple[str, Any]  # ("node", Key) | ("switch", Switch) | ("output", choice or None)


@dataclass(frozen=True)
class Switch:
    """Position `index` swaps `side`'s tensor at `node` for `stitch` of the other's `source`."""

    index: int
    side: str
    node: str
    source: str
    stitch: str

    @property
    def own(self) -> Key:
        """The value this switch replaces."""
        return (self.side, self.node)

    @property
    def src(self) -> Key:
        """The other parent's value its stitch reads."""
        return (OTHER[self.side], self.source)


@dataclass(frozen=True)
class Plan:
    """What one genotype computes.

    `steps` in execution order; `raw`: the parents' own values it needs; `stitched`: the
    switches it takes; `active`: per genotype position, whether it changes the network;
    `release[i]`: the values read for the last time at step i.
    """

    steps: tuple[Step, ...]
    raw: frozenset[Key]
    stitched: tuple[Switch, ...]
    active: tuple[bool, ...]
    release: tuple[tuple[Key, ...], ...]

    @property
    def on(self) -> frozenset[int]:
        """Genotype positions of the switches it takes."""
        return frozenset(sw.index for sw in self.stitched)


class Structure:
    """Graphs, matched pairs and switches of a supernetwork; plans genotypes.

    A genotype is a sequence of ints: `g[0]` is the output switch (0 = A, 1 = B, 2 = mean
    of the outputs, and for classifiers 3 = mean of the softmax probabilities), then two
    binary switches per matched pair i: `g[1 + 2i]` replaces A's tensor at `a_i` by the
    stitched tensor from B's `b_i`, `g[2 + 2i]` replaces B's tensor at `b_i` by the one
    stitched from `a_i`.
    """

    def __init__(self, graph_a: Graph, graph_b: Graph, matches: Sequence[tuple]) -> None:
        self.graphs = {"a": graph_a, "b": graph_b}
        out_a, out_b = graph_a[graph_a.output], graph_b[graph_b.output]
        if out_a.shape[1:] != out_b.shape[1:]:
            raise SupernetError(
                f"parents disagree on their output shape: {out_a.shape[1:]} vs {out_b.shape[1:]}"
            )
        ends = {graph_a.input, graph_a.output, graph_b.input, graph_b.output}
        self.matches = [(a, b, float(s)) for a, b, s in matches if a not in ends and b not in ends]
        self.task = "classification" if out_a.kind == VECTOR else "segmentation"
        self.output_choices = ("a", "b", "mean") + (
            ("mean-prob",) if self.task == "classification" else ()
        )
        self.switches: list[Switch] = []
        for i, (a, b, _) in enumerate(self.matches):
            self.switches.append(Switch(1 + 2 * i, "a", a, b, f"ba{i}"))
            self.switches.append(Switch(2 + 2 * i, "b", b, a, f"ab{i}"))
        self.genotype_spec = [len(self.output_choices)] + [2] * len(self.switches)
        self.inputs: dict[Key, tuple[Key, ...]] = {
            (side, n.name): tuple((side, i) for i in n.inputs)
            for side, g in self.graphs.items()
            for n in g.nodes.values()
        }
        self._switch_at = {sw.own: sw for sw in self.switches}
        self.order = self._merged_order()
        self._full: Plan | None = None

    def outputs(self) -> dict[str, Key]:
        """Each parent's output value."""
        return {side: (side, g.output) for side, g in self.graphs.items()}

    def _merged_order(self) -> list[tuple[str, Any]]:
        """Topological order of both graphs, each matched pair merged into one step:
        ("node", key) items, and ("pair", i) after both nodes of pair i."""
        merged = nx.DiGraph()
        alias: dict[Key, Any] = {}
        for i, (a, b, _) in enumerate(self.matches):
            alias[("a", a)] = alias[("b", b)] = ("pair", i)
        for key, inputs in self.inputs.items():
            me = alias.get(key, key)
            merged.add_node(me)
            merged.add_edges_from((alias.get(i, i), me) for i in inputs)
        position = {(side, n): k for side, g in self.graphs.items() for k, n in enumerate(g.nodes)}

        def rank(item: Any) -> tuple:
            if item[0] == "pair":
                a, b, _ = self.matches[item[1]]
                return (position[("a", a)], 0, position[("b", b)])
            return (position[item], 0 if item[0] == "a" else 1, 0)

        try:
            order = list(nx.lexicographical_topological_sort(merged, key=rank))
        except nx.NetworkXUnfeasible as exc:
            raise SupernetError("the matching merges the parents into a cyclic graph") from exc
        steps: list[tuple[str, Any]] = []
        for item in order:
            if item[0] == "pair":
                a, b, _ = self.matches[item[1]]
                steps += [("node", ("a", a)), ("node", ("b", b)), ("pair", item[1])]
            else:
                steps.append(("node", item))
        return steps

    def check_genotype(self, genotype: Sequence[int]) -> tuple[int, ...]:
        """The genotype as a tuple of ints; SupernetError if it does not fit."""
        try:
            g = tuple(int(v) for v in genotype)
        except (TypeError, ValueError):
            g = ()
        spec = self.genotype_spec
        if len(g) != len(spec) or any(not 0 <= v < c for v, c in zip(g, spec, strict=True)):
            raise SupernetError(
                f"genotype must have {len(spec)} values within cardinalities (output switch "
                f"< {spec[0]}, switches 0/1); got length {len(g)}"
            )
        return g

    def plan(self, g: tuple[int, ...]) -> Plan:
        """The plan of a checked genotype (see `check_genotype`)."""
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
            raw = sw.src if sw is not None and g[sw.index] else key
            if raw in need_raw:
                continue
            need_raw.add(raw)
            stack.extend(self.inputs[raw])
        active = [True] + [sw.own in need_resolved for sw in self.switches]
        stitched = tuple(s for s in self.switches if active[s.index] and g[s.index])
        steps: list[Step] = []
        for kind, item in self.order:
            if kind == "node" and item in need_raw:
                steps.append(("node", item))
            elif kind == "pair":
                for sw in self.switches[2 * item : 2 * item + 2]:
                    if active[sw.index]:
                        steps.append(("switch", sw))
        steps.append(("output", choice))
        return Plan(
            tuple(steps), frozenset(need_raw), stitched, tuple(active), self._release(steps)
        )

    def full_plan(self) -> Plan:
        """Every node of both parents and every switch, no output: what stitch training
        and profiling walk."""
        if self._full is None:
            self._full = self._make_full_plan()
        return self._full

    def _make_full_plan(self) -> Plan:
        steps: list[Step] = []
        for kind, item in self.order:
            if kind == "node":
                steps.append(("node", item))
            else:
                steps += [("switch", sw) for sw in self.switches[2 * item : 2 * item + 2]]
        steps.append(("output", None))
        raw = frozenset(self.inputs)
        active = (True,) * len(self.genotype_spec)
        return Plan(tuple(steps), raw, tuple(self.switches), active, self._release(steps))

    def _release(self, steps: Sequence[Step]) -> tuple[tuple[Key, ...], ...]:
        """Per step, the values read (or written, if never read) for the last time there."""
        last: dict[Key, int] = {}
        outputs = self.outputs()
        for i, (kind, item) in enumerate(steps):
            if kind == "node":
                reads = (*self.inputs[item], item)
            elif kind == "switch":
                reads = (item.own, item.src)
            else:
                reads = tuple(outputs.values())
            for key in reads:
                last[key] = i
        release: list[list[Key]] = [[] for _ in steps]
        for key, i in last.items():
            release[i].append(key)
        return tuple(map(tuple, release))
