"""Which pairs of points can be stitched, and how much each pair weighs.

Compatible pairs: same kind of tensor (vector, tokens, feature map) and the same
spatial size, or a feature map and tokens whose patches fill the map's grid; with
`max_ratio > 1`, also grids that differ by the same integer factor in both dimensions
(the stitch then resamples).

Weights: `uniform` (every compatible pair weighs 1; the paper's setting) or linear
CKA computed on real data. CKA memory stays bounded: each point's activation is
reduced per sample to at most `positions` spatial positions, then count-sketched to
`sketch_dim` numbers; only these sketches (samples x sketch_dim per point) are kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import fx

from ..errors import DataError
from ..graph import MAP, TOKENS, Graph, Node

Pair = tuple[str, str]


def size_ratio(a: Node, b: Node) -> int | None:
    """Integer r >= 1 with a's spatial size = r x b's (or the reverse, given as -r), else None.

    Points of one kind compare their sizes; a feature map and tokens compare their grids
    (`Node.grid`), so a stitch can lay tokens out as the map's positions or the reverse.
    """
    if a.kind == b.kind:
        sa, sb = a.spatial, b.spatial
        if sa == sb:
            return 1
        if a.kind != MAP:
            return None
    elif {a.kind, b.kind} == {MAP, TOKENS} and a.grid and b.grid:
        sa, sb = a.grid, b.grid
    else:
        return None
    if sa == sb:
        return 1
    for big, small, sign in ((sa, sb, 1), (sb, sa, -1)):
        if all(s > 0 and g % s == 0 for g, s in zip(big, small, strict=True)):
            ratios = {g // s for g, s in zip(big, small, strict=True)}
            if len(ratios) == 1:
                return sign * ratios.pop()
    return None


def compatible_pairs(graph_a: Graph, graph_b: Graph, max_ratio: int = 1) -> list[Pair]:
    """Candidate pairs that a stitch can join, inputs and outputs excluded."""
    ends_a, ends_b = {graph_a.input, graph_a.output}, {graph_b.input, graph_b.output}
    pairs = []
    for a in graph_a.candidates():
        if a in ends_a:
            continue
        na = graph_a[a]
        for b in graph_b.candidates():
            if b in ends_b:
                continue
            r = size_ratio(na, graph_b[b])
            if r is not None and abs(r) <= max_ratio:
                pairs.append((a, b))
    return pairs


def uniform_weights(pairs: Iterable[Pair]) -> dict[Pair, float]:
    return {p: 1.0 for p in pairs}


class _Sketcher(fx.Interpreter):
    """Runs a traced graph and keeps a small per-sample sketch of each candidate tensor."""

    def __init__(self, graph: Graph, positions: int, sketch_dim: int, seed: int) -> None:
        super().__init__(graph.module)
        self.keep = set(graph.candidates())
        self.positions, self.dim, self.seed = positions, sketch_dim, seed
        self.sketches: dict[str, list[torch.Tensor]] = {n: [] for n in self.keep}
        self._plans: dict[tuple, tuple] = {}

    def _plan(self, sample_shape: tuple[int, ...]) -> tuple:
        """Fixed position subset and count-sketch hashing for one per-sample shape."""
        if sample_shape not in self._plans:
            gen = torch.Generator().manual_seed(self.seed + hash(sample_shape) % 100_003)
            if len(sample_shape) == 2:  # tokens (T, C)
                spatial, channels = sample_shape
            else:  # vector (C,) or map (C, H, W)
                channels, spatial = sample_shape[0], math.prod(sample_shape[1:])
            idx = None
            if spatial > self.positions:
                idx = torch.randperm(spatial, generator=gen)[: self.positions].sort().values
            feats = channels * min(spatial, self.positions)
            bucket = torch.randint(self.dim, (feats,), generator=gen)
            sign = torch.randint(0, 2, (feats,), generator=gen).float() * 2 - 1
            self._plans[sample_shape] = (idx, bucket, sign, feats <= self.dim)
        return self._plans[sample_shape]

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.name in self.keep:
            t = out.detach().float()
            x = t.transpose(1, 2) if t.dim() == 3 else t  # tokens -> [N, C, T]
            x = x.flatten(2) if x.dim() > 2 else x.unsqueeze(-1)
            idx, bucket, sign, small = self._plan(tuple(t.shape[1:]))
            if idx is not None:
                x = x[:, :, idx]
            x = x.flatten(1)
            if not small:
                x = torch.zeros(x.shape[0], self.dim).index_add_(1, bucket, x * sign)
            self.sketches[n.name].append(x)
        return out


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    """Unit-norm, double-centred linear Gram matrix, flattened."""
    x = x.double()
    x = x - x.mean(0, keepdim=True)
    k = x @ x.T
    norm = k.norm()
    return (k / norm if norm > 0 else k).flatten()


def cka_weights(
    graph_a: Graph,
    graph_b: Graph,
    pairs: Iterable[Pair],
    batches: Iterable[torch.Tensor],
    *,
    max_samples: int = 256,
    positions: int = 64,
    sketch_dim: int = 512,
    seed: int = 0,
    floor: float = 1e-6,
) -> dict[Pair, float]:
    """Linear CKA of every pair on the same inputs (floored at `floor` so weights stay > 0)."""
    pairs = list(pairs)
    sk_a = _Sketcher(graph_a, positions, sketch_dim, seed)
    sk_b = _Sketcher(graph_b, positions, sketch_dim, seed)
    seen = 0
    with torch.no_grad():
        for x in batches:
            x = x[: max_samples - seen]
            sk_a.run(x)
            sk_b.run(x)
            seen += x.shape[0]
            if seen >= max_samples:
                break
    if seen < 2:
        raise DataError("CKA needs at least two samples")
    used_a = sorted({a for a, _ in pairs})
    used_b = sorted({b for _, b in pairs})
    gram_a = torch.stack([_centred_gram(torch.cat(sk_a.sketches[a])) for a in used_a])
    gram_b = torch.stack([_centred_gram(torch.cat(sk_b.sketches[b])) for b in used_b])
    scores = (gram_a @ gram_b.T).clamp(0.0, 1.0)
    row = {a: i for i, a in enumerate(used_a)}
    col = {b: j for j, b in enumerate(used_b)}
    return {(a, b): max(float(scores[row[a], col[b]]), floor) for a, b in pairs}
