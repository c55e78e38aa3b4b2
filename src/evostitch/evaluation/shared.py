"""Evaluate a population of offspring at once, computing what they share only once.

A value in the supernetwork depends only on its node and on the switches upstream of
it that are active for it. Each value an offspring needs gets a *signature*, interned
to an int (inputs are always interned before their consumers, so ids are topological):

    raw node        ("node", key, signatures of its resolved inputs)
    stitched point  ("stitch", stitch name, (signature of the source's raw value,))
    output          ("out", choice, signatures of the parents' outputs it combines)

Equal signatures are equal tensors. Per data batch the distinct outputs are computed
one after the other, similar offspring next to each other, and a value is kept while a
later offspring still reads it (reference counting over the remaining schedule). A
value that would push the kept bytes over the budget is dropped and recomputed when
it is needed again, so metrics equal those of evaluating each offspring alone.
"""

from __future__ import annotations

import contextlib
import operator
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import fx

from ..devices import autocast
from ..errors import DataError
from ..graph import example_input
from ..supernet import Executor, Key, Supernet, Switch, combine_outputs, output_sides
from .metrics import make_metric

DEFAULT_SHARED_BYTES = 1 << 30  # bytes of values kept for later offspring
_INPLACE_OPERATORS = {
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
    operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
    operator.ilshift, operator.irshift, operator.imatmul,
}  # fmt: skip


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 0


class SharedEvaluator:
    """Scores many genotypes on a split, sharing every common intermediate.

    `data` is the split: an (inputs, targets) pair of tensors, or a re-iterable of
    (inputs, targets) batches (e.g. `evostitch.data.batches`), streamed once per call.

    `budget_bytes` bounds the bytes of values kept for later offspring (None: no bound);
    each offspring's own working memory is that of running it alone. `amp` ("bf16",
    "fp16") runs under torch.autocast in that precision. After `metrics()`:
    `peak_cached_bytes`, `runs` (executions per ("node", key) and ("stitch", name)) and
    `computed_macs` (per sample).
    """

    def __init__(
        self,
        net: Supernet,
        data: tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]],
        num_classes: int,
        *,
        batch_size: int = 256,
        budget_bytes: int | None = DEFAULT_SHARED_BYTES,
        device: str | torch.device | None = None,
        amp: str | None = None,
    ) -> None:
        if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
            x, y = data
            data = [
                (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
            ]
        self.net, self.data = net, data
        self.num_classes, self.batch_size = num_classes, batch_size
        self.budget = float("inf") if budget_bytes is None else budget_bytes
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.amp = amp
        net.to(self.device).eval()
        self._inputs = net.structure.inputs
        self._mutating = {key for key in self._inputs if self._mutates(key)}
        self._inplace_modules = [m for m in net.parents.modules() if getattr(m, "inplace", 0)]
        with self._context():
            two, four = self._measure(2), self._measure(4)
        # bytes of a value for a batch of n: fixed part + per-sample part
        self._size = {k: (2 * two[k] - four[k], (four[k] - two[k]) // 2) for k in two}
        self._ids: dict[tuple, int] = {}
        self._recipes: list[tuple[str, Any, tuple[int, ...]]] = []
        self._macs = 0.0
        self.peak_cached_bytes = 0
        self.runs: Counter[tuple[str, Any]] = Counter()
        self.computed_macs = 0.0

    # ----- graph facts ------------------------------------------------------------------------
    def _mutates(self, key: Key) -> bool:
        """Whether a node writes into its first input (it would corrupt a shared value).

        Modules with an `inplace` flag are switched to out-of-place while evaluating.
        """
        node = self.net.fx_node(key)
        if not node.args or not isinstance(node.args[0], fx.Node):
            return False
        if node.op == "call_method":
            return node.target.endswith("_")
        if node.op == "call_function":
            name = getattr(node.target, "__name__", "")
            inplace = node.kwargs.get("inplace") is True or name.endswith("_")
            return inplace or node.target in _INPLACE_OPERATORS
        return False

    def _context(self) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        for module in self._inplace_modules:
            module.inplace = False
            stack.callback(setattr, module, "inplace", True)
        stack.enter_context(autocast(self.device, self.amp))
        return stack

    def _measure(self, n: int) -> dict[tuple[str, Any], int]:
        """Bytes of every node's and stitch's value for a batch of `n` (0 for inputs, weights)."""
        sizes = _Sizes(self)
        sizes.run(
            self.net.structure.full_plan(), example_input(self.net.input_shape, n).to(self.device)
        )
        return sizes.sizes

    def _run_node(self, key: Key, args: Sequence[Any], x: torch.Tensor) -> Any:
        if key in self._mutating:  # run it on a copy: the input may be shared
            args = [args[0].clone(), *args[1:]]
        return self.net.run_node(key, args, x)

    # ----- signatures -------------------------------------------------------------------------
    def _intern(self, kind: str, item: Any, inputs: tuple[int, ...]) -> int:
        sig = (kind, item, inputs)
        i = self._ids.get(sig)
        if i is None:
            i = self._ids[sig] = len(self._recipes)
            self._recipes.append(sig)
        return i

    def _trace(self, genotype: Sequence[int]) -> tuple[int, tuple[int, ...]]:
        """Signature of the genotype's output and of its values in execution order."""
        walk = _Signatures(self)
        out = walk.run(self.net.plan(genotype))
        return out, tuple(walk.order)

    def _bytes(self, sig: int, n: int) -> int:
        kind, item, _ = self._recipes[sig]
        if kind == "out":
            return 0
        fixed, per_sample = self._size[(kind, item)]
        return max(fixed + per_sample * n, 0)

    # ----- schedule ---------------------------------------------------------------------------
    def _schedule(self, outs: Sequence[int], n: int) -> tuple[list[set[int]], list[list[int]]]:
        """Which values to keep after computing them for output k, and which to drop after k.

        Outputs are taken in order; each reads what earlier ones kept and computes the rest.
        A value read again is kept from its computation to its last read, unless that would
        take the kept bytes over the budget at some output in between: then it is recomputed.
        """
        load = [0] * len(outs)  # bytes kept during each output
        born: dict[int, int] = {}  # value -> output that computed it last
        until: dict[int, int] = {}  # value -> last output reading that computation
        keep: list[set[int]] = [set() for _ in outs]
        drop: list[list[int]] = [[] for _ in outs]

        def close(sig: int) -> None:
            if until[sig] > born[sig]:
                keep[born[sig]].add(sig)
                drop[until[sig]].append(sig)

        for k, out in enumerate(outs):
            stack, seen = [out], set()
            while stack:
                sig = stack.pop()
                if sig in seen:
                    continue
                seen.add(sig)
                if sig in born and born[sig] < k:
                    start = until[sig] + 1 if until[sig] > born[sig] else born[sig]
                    size = self._bytes(sig, n)
                    if size == 0 or max(load[start : k + 1]) + size <= self.budget:
                        for t in range(start, k + 1):
                            load[t] += size
                        until[sig] = k
                        continue
                    close(sig)
                born[sig] = until[sig] = k
                stack.extend(self._recipes[sig][2])
        for sig in born:
            close(sig)
        return keep, drop

    # ----- execution --------------------------------------------------------------------------
    def _compute(self, sig: int, args: list[Any], x: torch.Tensor) -> Any:
        kind, item, _ = self._recipes[sig]
        if kind == "out":
            outputs = dict(zip(output_sides(item, self.net.sides), args, strict=True))
            return combine_outputs(item, outputs)
        self.runs[(kind, item)] += 1
        table = self.net.cost_table
        if table is not None:
            macs = table.node_macs if kind == "node" else table.stitch_macs
            self._macs += macs.get(item, 0.0) * len(x)
        if kind == "stitch":
            return self.net.stitches[item](args[0])
        return self._run_node(item, args, x)

    def _batch(self, x: torch.Tensor, y: torch.Tensor, outs: Sequence[int], metric: dict) -> None:
        """Update every output's metric with one data batch, keeping values as scheduled."""
        recipes, keep, drop = self._recipes, self._keep, self._drop
        cache: dict[int, Any] = {}
        sizes: dict[int, int] = {}  # bytes of each kept value (inputs and weights: 0)
        held = 0
        for k, out in enumerate(outs):
            need, stack = set(), [out]
            while stack:
                sig = stack.pop()
                if sig not in need and sig not in cache:
                    need.add(sig)
                    stack.extend(recipes[sig][2])
            uses = Counter(i for sig in need for i in recipes[sig][2])
            local: dict[int, Any] = {}
            for sig in sorted(need):  # ids are topological
                kind, item, inputs = recipes[sig]
                args = [cache[i] if i in cache else local[i] for i in inputs]
                value = self._compute(sig, args, x)
                for i in inputs:
                    uses[i] -= 1
                    if not uses[i]:
                        local.pop(i, None)
                size = _nbytes(value) if self._size.get((kind, item), (0, 0)) != (0, 0) else 0
                if sig in keep[k] and held + size <= self.budget:
                    cache[sig], sizes[sig], held = value, size, held + size
                    self.peak_cached_bytes = max(self.peak_cached_bytes, held)
                else:
                    local[sig] = value
            metric[out].update(local.pop(out), y)
            for sig in drop[k]:
                if sig in cache:
                    held -= sizes.pop(sig)
                    del cache[sig]

    def metrics(
        self,
        genotypes: Sequence[Sequence[int]],
        *,
        calibrate: bool = False,
        data: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
        make: Any = None,
    ) -> list[dict[str, Any]]:
        """Metrics, MACs and parameters of each genotype, as `Evaluator.metrics` gives them;
        `calibrate` (classifiers): also "by_temperature", the metric's `temperature_curves`.
        `data`: other batches than the split's (a racing chunk); `make`: a zero-argument
        factory of the metric accumulator instead of the task's (per-image statistics)."""
        self._ids, self._recipes = {}, []
        self._macs, self.runs, self.peak_cached_bytes = 0.0, Counter(), 0
        traced = [self._trace(g) for g in genotypes]
        outs = sorted({out: order for out, order in traced}.items(), key=lambda kv: kv[1])
        outs = [out for out, _ in outs]  # similar offspring next to each other
        task = self.net.task
        fresh = make or (lambda: make_metric(task, self.num_classes, calibrate=calibrate))
        metric = {out: fresh() for out in outs}
        seen = 0
        with self._context():
            for x, y in self.data if data is None else data:
                if not seen:  # sized by the first (largest) batch
                    self._keep, self._drop = self._schedule(outs, len(x))
                seen += len(x)
                x = x.to(self.device, non_blocking=True)
                self._batch(x, y.to(self.device, non_blocking=True), outs, metric)
        if seen == 0:
            raise DataError("cannot evaluate on an empty split")
        self.computed_macs = self._macs / seen
        scores: dict[int, dict[str, Any]] = {out: m.compute() for out, m in metric.items()}
        if calibrate:
            for out, m in metric.items():
                scores[out]["by_temperature"] = m.temperature_curves()
        pairs = zip(genotypes, traced, strict=True)
        return [{**scores[out], **self.net.cost(g)} for g, (out, _) in pairs]


class _Sizes(Executor):
    """Runs every node and stitch once and records the bytes of its value."""

    def __init__(self, shared: SharedEvaluator) -> None:
        super().__init__(shared.net)
        self.shared = shared
        self.sizes: dict[tuple[str, Any], int] = {}

    def node(self, key: Key, inputs: Sequence[Any], x: Any) -> Any:
        value = self.shared._run_node(key, inputs, x)
        free = self.net.fx_node(key).op in ("placeholder", "get_attr")
        self.sizes[("node", key)] = 0 if free else _nbytes(value)
        return value

    def switch(self, sw: Switch, on: bool, own: Any, source: Any) -> Any:
        self.sizes[("stitch", sw.stitch)] = _nbytes(self.net.stitches[sw.stitch](source))
        return own


class _Signatures(Executor):
    """Executes a plan on signatures: every value is the interned id of its recipe."""

    def __init__(self, shared: SharedEvaluator) -> None:
        super().__init__(shared.net)
        self.intern = shared._intern
        self.order: list[int] = []

    def node(self, key: Key, inputs: Sequence[int], x: Any) -> int:
        sig = self.intern("node", key, tuple(inputs))
        self.order.append(sig)
        return sig

    def switch(self, sw: Switch, on: bool, own: Any, source: Any) -> Any:
        if not on:
            return own
        sig = self.intern("stitch", sw.stitch, (source,))
        self.order.append(sig)
        return sig

    def output(self, choice: str, outputs: dict[str, int]) -> int:
        sides = output_sides(choice, self.net.sides)
        return self.intern("out", choice, tuple(outputs[s] for s in sides))
