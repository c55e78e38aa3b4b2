"""The supernetwork: K >= 2 frozen parents, stitches at matched points, and switches.

Everything a genotype implies (which nodes run, which switches matter, its cost) is
derived from the graphs (`plan.Structure`), never by running the network; running,
profiling and extracting an offspring all go through one executor (`executor`). The
helpers below this module never see the class: they take its parts (`executor.Network`,
`io.Record`, the structure, the modules).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from ..errors import SupernetError
from ..graph import Graph, example_input, trace
from ..matching import match
from ..models import architecture_spec, load_model
from . import io
from .cost import CostTable, plan_cost, profile
from .executor import Executor, run_fx_node
from .extract import offspring_graph
from .plan import Key, Plan, Structure, Switch
from .stitches import Stitch


def _seeded(build: Callable) -> Callable:
    """`build(..., seed=0)`: the untrained stitches (and any randomly initialised parent)
    drawn from `seed`, the caller's global random state left as it was."""

    @functools.wraps(build)
    def seeded(cls: type, *args: Any, seed: int = 0, **kwargs: Any) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(cls, *args, **kwargs)

    return seeded


class Supernet(nn.Module):
    """Parents joined by stitches; `forward(x, genotype)` runs one offspring.

    `Supernet(graphs, groups, specs)` joins K >= 2 traced parents at matched groups
    `(node or None per parent, ..., weight)` (see `Structure`); `build` traces and
    matches them first."""

    def __init__(
        self,
        graphs: Sequence[Graph],
        matches: Sequence[tuple] = (),
        specs: Sequence[dict | None] | None = None,
    ) -> None:
        super().__init__()
        self.structure = Structure(graphs, matches)
        graphs = self.structure.graphs
        self.parents = nn.ModuleDict({side: g.module for side, g in graphs.items()})
        for p in self.parents.parameters():
            p.requires_grad_(False)
        self.parents.eval()
        self.specs = list(specs) if specs is not None else [None] * len(graphs)
        if len(self.specs) != len(graphs):
            raise SupernetError(f"{len(self.specs)} specs for {len(graphs)} parents")
        first = graphs["a"]
        self.input_shape: tuple[int, ...] = tuple(first[first.input].shape[1:])
        self.leaf_modules: list[str] = []
        self.matching: dict[str, Any] = {}  # the matching's total, optimal and seconds
        self.cost_table: CostTable | None = None
        self.data: str | None = None  # dataset spec the stitches were trained on
        self.left_out: frozenset[str] = frozenset()  # stitches no offspring takes
        self._off: set[tuple[int, int]] = set()  # their (position, value) pairs
        self._dead: set[int] = set()  # positions whose every stitch is left out
        self.stitches = nn.ModuleDict()  # ba0, ab0, ba1, ...: the switches' order
        for sw in self.structure.switches:
            self.stitches[sw.stitch] = Stitch(
                graphs[sw.src[0]][sw.source], graphs[sw.side][sw.node]
            )
        self._fx = {
            side: {n.name: n for n in g.module.graph.nodes} for side, g in self.graphs.items()
        }
        self._plan = lru_cache(maxsize=4096)(self.structure.plan)

    # ----- the structure, by name ----------------------------------------------------------------
    @property
    def graphs(self) -> dict[str, Graph]:
        return self.structure.graphs

    @property
    def matches(self) -> list[tuple]:
        """Matched pairs `(a, b, weight)`; for K parents groups `(node or None, ..., weight)`."""
        return self.structure.matches

    @property
    def sides(self) -> tuple[str, ...]:
        return self.structure.sides

    @property
    def switches(self) -> list[Switch]:
        return self.structure.switches

    @property
    def genotype_spec(self) -> list[int]:
        return self.structure.genotype_spec

    @property
    def task(self) -> str:
        return self.structure.task

    @property
    def output_choices(self) -> tuple[str, ...]:
        return self.structure.output_choices

    def fx_node(self, key: Key) -> fx.Node:
        """The torch.fx node of a parent's node `(side, name)`."""
        return self._fx[key[0]][key[1]]

    def run_node(self, key: Key, inputs: Sequence[Any], x: torch.Tensor | None) -> Any:
        """A parent's node on its inputs' values (in the order of `structure.inputs[key]`)."""
        return run_fx_node(self.parents[key[0]], self.fx_node(key), inputs, x)

    # ----- building, saving, loading -------------------------------------------------------------
    @classmethod
    @_seeded
    def build(
        cls,
        parents: Sequence[str | nn.Module],
        input_shape: Sequence[int],
        *,
        weights: Sequence[str | Path | None] | None = None,
        similarity: str = "uniform",
        data: Iterable[torch.Tensor] | None = None,
        max_ratio: int = 1,
        leaf_modules: Sequence[str] = (),
        method: str = "auto",
        time_limit: float | None = None,
    ) -> Supernet:
        """Trace K >= 2 parents (specs or modules, sides "a", "b", "c", ... in order), match
        them (`evostitch.matching.match`) and insert untrained stitches.

        `weights` (one per parent, None for none) load a spec's weights. `similarity` is
        "uniform" (every compatible pair weighs 1) or "cka" (needs `data`, an iterable of
        input batches). `max_ratio` > 1 also allows stitching feature maps whose sizes
        differ by an integer factor up to it; `method` and `time_limit` as `match`. `seed`
        (keyword) draws the untrained stitches; the caller's global random state is left
        as it was.
        """
        if isinstance(parents, str | nn.Module):
            raise SupernetError("parents is a list: Supernet.build([a, b, ...], input_shape)")
        models, specs = _load_parents(parents, weights or [None] * len(parents))
        example = example_input(input_shape)
        graphs = [trace(m, example, leaf_modules) for m in models]
        result = match(
            graphs,
            similarity=similarity,
            data=data,
            max_ratio=max_ratio,
            method=method,
            time_limit=time_limit,
        )
        net = cls(graphs, result.rows(), specs)
        net.input_shape = tuple(input_shape)
        net.leaf_modules = list(leaf_modules)
        net.matching = {"total": result.total, "optimal": result.optimal, "seconds": result.seconds}
        net.profile(example)
        return net

    def save(self, folder: str | Path) -> Path:
        """Save as JSON + safetensors (see `evostitch.supernet.io`); returns the folder."""
        cost = self.cost_table.to_dict() if self.cost_table is not None else None
        record = io.Record(
            input_shape=self.input_shape,
            leaf_modules=list(self.leaf_modules),
            matching=self.matching,
            data=self.data,
            left_out=sorted(self.left_out),
            cost=cost,
        )
        return io.save(folder, self.structure, self.specs, self.parents, self.stitches, record)

    @classmethod
    def load(cls, folder: str | Path, *, trust_code: bool = False) -> Supernet:
        """Load a supernetwork saved with `save`. Nothing is unpickled; no code named in
        the folder runs unless `trust_code` (a `package.module:factory` parent)."""
        saved = io.read(folder, trust_code=trust_code)
        try:
            net = cls(list(saved.graphs), saved.matches, saved.specs)
        except SupernetError as exc:
            raise SupernetError(f"{saved.folder} is damaged: {exc}") from None
        io.load_stitches(net.stitches, saved.stitches)
        record = saved.record
        net.input_shape = record.input_shape
        net.leaf_modules = record.leaf_modules
        net.matching = record.matching
        net.data = record.data
        try:
            net.leave_out(record.left_out)
        except SupernetError as exc:
            raise SupernetError(f"{saved.folder} is damaged: {exc}") from None
        try:
            net.cost_table = CostTable.from_dict(net, record.cost)
        except SupernetError:
            net.profile(example_input(net.input_shape))  # older or foreign file: measure again
        return net

    # ----- genotypes ----------------------------------------------------------------------------
    def check_genotype(self, genotype: Sequence[int]) -> tuple[int, ...]:
        """The genotype as a tuple of ints; SupernetError if it does not fit."""
        return self.structure.check_genotype(genotype)

    def plan(self, genotype: Sequence[int]) -> Plan:
        """What the offspring computes (cached per genotype); a left-out stitch's switch
        is off whatever its value."""
        return self._plan(self._taken(self.check_genotype(genotype)))

    def leave_out(self, stitches: Iterable[str]) -> None:
        """Stitches no offspring takes from now on (their switches read as 0): those whose
        single crossing broke the network (`evaluation.transitions`), so that a search
        spends no evaluation on them. Saved with the supernetwork."""
        keys = frozenset(stitches)
        unknown = sorted(keys - set(self.stitches))
        if unknown:
            raise SupernetError(f"cannot leave out {unknown[0]}: no such stitch")
        self.left_out = keys
        self._off = {(sw.index, sw.value) for sw in self.switches if sw.stitch in keys}
        # positions whose every stitched value is left out: they never change an offspring
        self._dead = {
            i
            for i, c in enumerate(self.genotype_spec)
            if i and all((i, v) in self._off for v in range(1, c))
        }
        self._plan.cache_clear()

    def _taken(self, g: tuple[int, ...]) -> tuple[int, ...]:
        """`g` with the switches of left-out stitches set to 0."""
        if not self.left_out:
            return g
        return tuple(0 if i and (i, v) in self._off else v for i, v in enumerate(g))

    def active_variables(self, genotype: Sequence[int]) -> list[bool]:
        """Which genotype positions change the offspring (the output switch always does);
        a switch whose every stitch is left out never does."""
        active = self.plan(genotype).active
        if not self.left_out:
            return list(active)
        return [on and i not in self._dead for i, on in enumerate(active)]

    def canonical(self, genotype: Sequence[int]) -> tuple[int, ...]:
        """The genotype with every inactive variable (and left-out switch) set to 0: equal
        networks, equal keys."""
        g = self._taken(self.check_genotype(genotype))
        return tuple(v if on else 0 for v, on in zip(g, self._plan(g).active, strict=True))

    @property
    def reference_genotypes(self) -> list[tuple[int, ...]]:
        """Each parent and their ensemble(s): output choice, every switch 0."""
        zeros = (0,) * (len(self.genotype_spec) - 1)
        return [(k,) + zeros for k in range(len(self.output_choices))]

    # ----- cost and execution -------------------------------------------------------------------
    def profile(self, example: torch.Tensor) -> None:
        """Measure MACs and parameters per node and stitch (once; `cost()` sums them)."""
        self.cost_table = profile(self, example)

    def cost(self, genotype: Sequence[int]) -> dict[str, float]:
        """MACs (per sample) and parameter count of an offspring, without running it."""
        if self.cost_table is None:
            raise SupernetError("supernet has no cost table: call profile(example) first")
        return plan_cost(self.cost_table, self.plan(genotype))

    def forward(self, x: torch.Tensor, genotype: Sequence[int]) -> torch.Tensor:
        """Output of the offspring `genotype` (only the nodes it keeps are run)."""
        return Executor(self).run(self.plan(genotype), x)

    def extract(self, genotype: Sequence[int]) -> fx.GraphModule:
        """A standalone GraphModule of the offspring: no switches, no unused layers.

        It shares parameters with the supernetwork; `copy.deepcopy` it to change them.
        """
        return fx.GraphModule(self, offspring_graph(self, self.plan(genotype)), "Offspring")

    def describe(self, genotype: Sequence[int]) -> str:
        """A readable account of an offspring: parents used, crossovers, output."""
        plan = self.plan(genotype)
        parts = [f"output: {self.output_choices[genotype[0]]}"]
        for side, g in self.graphs.items():
            kept = [n for n in g.nodes if (side, n) in plan.raw]
            if kept:
                parts.append(f"{side.upper()}: {len(kept)}/{len(g.nodes)} nodes")
        for sw in plan.stitched:
            parts.append(f"{sw.src[0].upper()}:{sw.source} -> {sw.side.upper()}:{sw.node}")
        return "; ".join(parts)


def _load_parents(
    parents: Sequence[str | nn.Module], weights: Sequence[str | Path | None]
) -> tuple[list[nn.Module], list[dict | None]]:
    """The parents' modules, and per parent its spec record (None for a module given)."""
    if len(weights) != len(parents):
        raise SupernetError(f"{len(weights)} weights for {len(parents)} parents")
    models, specs = [], []
    for model, w in zip(parents, weights, strict=True):
        if isinstance(model, str):
            spec = {"spec": model, "weights": str(w) if w else None}
            model = load_model(model, w)
            spec["architecture"] = architecture_spec(model=model, spec=spec["spec"])
            specs.append(spec)
        else:
            specs.append(None)
        models.append(model)
    return models, specs
