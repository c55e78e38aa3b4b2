"""Order and reachability of the DAGs, shared by the exact solvers.

`topological_order` fixes the node numbering (a deterministic topological order);
`Reach` is the transitive closure of A + B as packed uint64 bit rows (one row per node),
in which two nodes can be merged: "does adding (a, b) close a cycle?" is then two bit
tests (a reaches b, or b reaches a, in the graph merged so far).
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np

from ..errors import MatchingError

_BIT = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))


def topological_order(dag: nx.DiGraph, name: str) -> list:
    position = {v: i for i, v in enumerate(dag.nodes)}
    try:
        return list(nx.lexicographical_topological_sort(dag, key=position.__getitem__))
    except nx.NetworkXUnfeasible as exc:
        raise MatchingError(f"{name} is not acyclic") from exc


class Reach:
    """Transitive closure of a DAG as packed bit rows; nodes can be merged in pairs."""

    def __init__(self, bits: np.ndarray, n: int) -> None:
        self.bits = bits  # (n, words) uint64; bit v of row u: u reaches v (u != v)
        self.n = n

    @classmethod
    def of(cls, graphs: Sequence[tuple[nx.DiGraph, list, dict, int]], n: int) -> Reach:
        bits = np.zeros((n, max(1, (n + 63) // 64)), dtype=np.uint64)
        for dag, order, index, offset in graphs:
            for v in reversed(order):
                row = bits[index[v] + offset]
                for s in dag.successors(v):
                    j = index[s] + offset
                    row |= bits[j]
                    row[j >> 6] |= _BIT[j & 63]
        return cls(bits, n)

    def copy(self) -> Reach:
        return Reach(self.bits.copy(), self.n)

    def reaches(self, u: int, v: int) -> bool:
        return bool(self.bits[u, v >> 6] & _BIT[v & 63])

    def reaches_many(self, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
        return (self.bits[us, vs >> 6] & _BIT[vs & 63]) != 0

    def connected(self, u: int, v: int) -> bool:
        return self.reaches(u, v) or self.reaches(v, u)

    def merge(self, u: int, v: int) -> None:
        """Merge u and v (which must not reach each other) into one node."""
        bits = self.bits
        anc = ((bits[:, u >> 6] & _BIT[u & 63]) | (bits[:, v >> 6] & _BIT[v & 63])) != 0
        desc = bits[u] | bits[v]
        row = desc.copy()
        row[u >> 6] |= _BIT[u & 63]
        row[v >> 6] |= _BIT[v & 63]
        bits[anc] |= row
        bits[u] = desc
        bits[v] = desc

    def unpack(self, rows: np.ndarray) -> np.ndarray:
        packed = np.ascontiguousarray(rows).astype("<u8", copy=False).view(np.uint8)
        return np.unpackbits(packed, axis=1, count=self.n, bitorder="little").astype(bool)
