"""What a genotype computes, derived from the graphs alone (never by running a network).

The supernetwork's *structure*: the K >= 2 parents' graphs (sides "a", "b", "c", ...),
the matched groups (at most one node per parent, at least two members), one genotype
variable per member of each group, and one topological order of all graphs with each
group merged into one step. A *plan* is the structure specialised to one genotype: the
nodes it runs in that order, the switches that matter, the stitches it uses, and when
each value is read for the last time (so an executor can free it).
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ..errors import SupernetError
from ..graph import VECTOR, Graph

SIDES = ("a", "b")  # the two parents of a K = 2 supernetwork
OTHER = {"a": "b", "b": "a"}
Key = tuple[str, str]  # (side, node name)
Step = tuple[str, Any]  # ("node", Key) | ("switch", Switch) | ("output", choice or None)


SUB_ENSEMBLES_UP_TO = 4  # K up to which every proper subset's ensembles are output choices


def output_choices_for(sides: Sequence[str], task: str) -> tuple[str, ...]:
    """The output switch's values: each parent's own output; the mean of every proper
    subset of two or more parents ("mean-ab", ..., in order of size; for K >= 3, up to
    `SUB_ENSEMBLES_UP_TO`): a zoo's cheaper ensembles; the mean of all K ("mean"); and,
    for classifiers, the same ensembles of probabilities ("mean-prob-ab", ...,
    "mean-prob": the log of the mean softmax). K = 2: a, b, mean, mean-prob."""
    subsets = []
    if len(sides) <= SUB_ENSEMBLES_UP_TO:
        for r in range(2, len(sides)):
            subsets += ["".join(c) for c in itertools.combinations(sides, r)]
    means = (*sides, *(f"mean-{s}" for s in subsets), "mean")
    if task != "classification":
        return means
    return (*means, *(f"mean-prob-{s}" for s in subsets), "mean-prob")


def output_sides(choice: str, sides: Sequence[str]) -> tuple[str, ...]:
    """The parents (of `sides`, in order) whose outputs an output choice reads."""
    if choice in ("mean", "mean-prob"):
        return tuple(sides)
    if choice.startswith("mean-"):
        return tuple(s for s in sides if s in choice.removeprefix("mean-").removeprefix("prob-"))
    return (choice,)


def is_probability_mean(choice: str) -> bool:
    """Whether an output choice averages probabilities (else logits, or one output)."""
    return choice.startswith("mean-prob")


def side_names(k: int) -> tuple[str, ...]:
    """The sides of K parents: "a", "b", "c", ..."""
    if not 2 <= k <= len(string.ascii_lowercase):
        raise SupernetError(f"a supernetwork has 2 to 26 parents, not {k}")
    return tuple(string.ascii_lowercase[:k])


@dataclass(frozen=True)
class Switch:
    """Value `value` of position `index` swaps `side`'s tensor at `node` for `stitch` of
    `source` (a node of `source_side`; by default the other parent of a K = 2 net)."""

    index: int
    side: str
    node: str
    source: str
    stitch: str
    value: int = 1
    source_side: str | None = None

    @property
    def own(self) -> Key:
        """The value this switch replaces."""
        return (self.side, self.node)

    @property
    def src(self) -> Key:
        """The other parent's value its stitch reads."""
        return (self.source_side or OTHER[self.side], self.source)


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
    """Graphs, matched groups and switches of a supernetwork; plans genotypes.

    Built from K >= 2 graphs and groups `(node or None per parent, ..., weight)`:
    `Structure([graph_a, graph_b], [(a, b, weight), ...])` (`Matching.rows()`).

    A genotype is a sequence of ints: `g[0]` is the output switch (`output_choices`: each
    parent, then "mean" of the K outputs and, for classifiers, "mean-prob", the log of
    the mean softmax probabilities), then one variable per member of each group (groups
    in order, members in parent order): 0 keeps the member's own tensor, v >= 1 takes the
    tensor stitched from the v-th other member (parent order). For K = 2 every variable is
    binary: `g[1 + 2i]` replaces A's tensor at `a_i` by the stitched tensor from B's
    `b_i`, `g[2 + 2i]` replaces B's tensor at `b_i` by the one stitched from `a_i`.
    """

    def __init__(self, graphs: Sequence[Graph], matches: Sequence[tuple] = ()) -> None:
        graphs = list(graphs)
        if len(graphs) < 2 or not all(isinstance(g, Graph) for g in graphs):
            raise SupernetError("a supernetwork needs a sequence of at least two traced graphs")
        self.sides = side_names(len(graphs))
        self.graphs: dict[str, Graph] = dict(zip(self.sides, graphs, strict=True))
        first = graphs[0][graphs[0].output]
        for g in graphs[1:]:
            if g[g.output].shape[1:] != first.shape[1:]:
                raise SupernetError(
                    "parents disagree on their output shape: "
                    f"{first.shape[1:]} vs {g[g.output].shape[1:]}"
                )
        ends = {n for g in graphs for n in (g.input, g.output)}
        self.matches: list[tuple] = []
        for *group, weight in matches:
            if len(group) != len(graphs) or sum(n is not None for n in group) < 2:
                raise SupernetError(f"group {group}: need {len(graphs)} entries, two nodes")
            if not ends.intersection(group):
                self.matches.append((*group, float(weight)))
        self.groups: list[tuple[str | None, ...]] = [tuple(m[:-1]) for m in self.matches]
        self.task = "classification" if first.kind == VECTOR else "segmentation"
        self.output_choices = output_choices_for(self.sides, self.task)
        self._make_switches()
        self.genotype_spec = [len(self.output_choices)] + [1 + len(o) for o in self.options]
        self.inputs: dict[Key, tuple[Key, ...]] = {
            (side, n.name): tuple((side, i) for i in n.inputs)
            for side, g in self.graphs.items()
            for n in g.nodes.values()
        }
        self.order = self._merged_order()
        self._full: Plan | None = None

    def _make_switches(self) -> None:
        """`switches` (every stitch option), per variable its `options` and member, per
        group its variables' positions."""
        self.switches: list[Switch] = []
        self.options: list[list[Switch]] = []  # per genotype position - 1, by value - 1
        self.variables: list[Key] = []  # per genotype position - 1: the member it switches
        self.group_variables: list[list[int]] = []
        named = len(self.sides) > 2  # K = 2: the source side is implied (OTHER)
        for i, group in enumerate(self.groups):
            members = [(s, n) for s, n in zip(self.sides, group, strict=True) if n is not None]
            self.group_variables.append([])
            for side, node in members:
                index = 1 + len(self.variables)
                sources = [(s, n) for s, n in members if s != side]
                opts = [
                    Switch(index, side, node, n, f"{s}{side}{i}", v, s if named else None)
                    for v, (s, n) in enumerate(sources, start=1)
                ]
                self.variables.append((side, node))
                self.options.append(opts)
                self.switches += opts
                self.group_variables[-1].append(index)
        self._var_at = {key: i for i, key in enumerate(self.variables, start=1)}

    def outputs(self) -> dict[str, Key]:
        """Each parent's output value."""
        return {side: (side, g.output) for side, g in self.graphs.items()}

    def _merged_order(self) -> list[tuple[str, Any]]:
        """Topological order of all graphs, each matched group merged into one step:
        ("node", key) items, and ("group", i) after every node of group i."""
        merged = nx.DiGraph()
        alias: dict[Key, Any] = {}
        members = [
            [(s, n) for s, n in zip(self.sides, group, strict=True) if n is not None]
            for group in self.groups
        ]
        for i, keys in enumerate(members):
            alias.update({key: ("group", i) for key in keys})
        for key, inputs in self.inputs.items():
            me = alias.get(key, key)
            merged.add_node(me)
            merged.add_edges_from((alias.get(i, i), me) for i in inputs)
        position = {(side, n): k for side, g in self.graphs.items() for k, n in enumerate(g.nodes)}
        rank_of = {s: r for r, s in enumerate(self.sides)}

        def rank(item: Any) -> tuple:
            if item[0] == "group":
                one, two = members[item[1]][:2]
                return (position[one], rank_of[one[0]], position[two])
            return (position[item], rank_of[item[0]], 0)

        try:
            order = list(nx.lexicographical_topological_sort(merged, key=rank))
        except nx.NetworkXUnfeasible as exc:
            raise SupernetError("the matching merges the parents into a cyclic graph") from exc
        steps: list[tuple[str, Any]] = []
        for item in order:
            if item[0] == "group":
                steps += [("node", key) for key in members[item[1]]] + [item]
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
            binary = all(c == 2 for c in spec[1:])
            switches = "switches 0/1" if binary else "switch i < genotype_spec[i]"
            bad = [i for i, (v, c) in enumerate(zip(g, spec, strict=False)) if not 0 <= v < c]
            where = f", position {bad[0]} is {g[bad[0]]}" if bad and not binary else ""
            raise SupernetError(
                f"genotype must have {len(spec)} values within cardinalities (output switch "
                f"< {spec[0]}, {switches}); got length {len(g)}{where}"
            )
        return g

    def plan(self, g: tuple[int, ...]) -> Plan:
        """The plan of a checked genotype (see `check_genotype`)."""
        choice = self.output_choices[g[0]]
        outputs = output_sides(choice, self.sides)
        need_raw: set[Key] = set()
        need_resolved: set[Key] = set()
        stack = [(s, self.graphs[s].output) for s in outputs]
        while stack:
            key = stack.pop()
            if key in need_resolved:
                continue
            need_resolved.add(key)
            index = self._var_at.get(key)
            raw = self.options[index - 1][g[index] - 1].src if index and g[index] else key
            if raw in need_raw:
                continue
            need_raw.add(raw)
            stack.extend(self.inputs[raw])
        active = [True] + [key in need_resolved for key in self.variables]
        stitched = tuple(s for s in self.switches if active[s.index] and g[s.index] == s.value)
        steps: list[Step] = []
        for kind, item in self.order:
            if kind == "node" and item in need_raw:
                steps.append(("node", item))
            elif kind == "group":
                for index in self.group_variables[item]:
                    if active[index]:  # the option taken, or (kept) the first one, off
                        steps.append(("switch", self.options[index - 1][max(g[index], 1) - 1]))
        steps.append(("output", choice))
        return Plan(
            tuple(steps), frozenset(need_raw), stitched, tuple(active), self._release(steps)
        )

    def full_plan(self) -> Plan:
        """Every node of every parent and every switch, no output: what stitch training
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
                for index in self.group_variables[item]:
                    steps += [("switch", sw) for sw in self.options[index - 1]]
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
