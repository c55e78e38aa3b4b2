"""Linkage learning for GOMEA: normalised mutual information and a UPGMA linkage tree,
and the compact form a checkpoint writes a linkage tree in (`pack_fos`)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform
from scipy.special import xlogy


@cache
def _blas_controller() -> Any:
    try:  # installed with scikit-learn; optional here
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def prepare() -> None:
    """Do the one-off set-up now (threadpoolctl scans the loaded libraries: ~15 ms with
    torch loaded), not when a running search learns its first tree."""
    _blas_controller()


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """The matrices here are small: waking BLAS threads (on a busy machine) cost up to
    100x the product itself, so run it on one thread."""
    controller = _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def normalised_mutual_information(x: np.ndarray, cardinalities: Sequence[int]) -> np.ndarray:
    """(l, l) matrix of MI(i, j) / H(i, j) over the rows of `x` (n samples, l variables).

    1 for variables that determine each other, 0 for independent ones and wherever
    the joint entropy is 0 (constant variables); the diagonal is 1 unless constant.
    Only the variables that vary are computed: near convergence (a kernel GOMEA
    neighbourhood) that is often one or two of hundreds. Joint frequencies come from
    one product of one-hot columns, one per (variable, value) that occurs; `owner`
    sums their p log p terms per pair of variables. A joint frequency is a count / n,
    so its p log p is looked up in a table of n + 1 values.
    """
    n, length = x.shape
    nmi = np.zeros((length, length))
    varying = np.flatnonzero((x != x[:1]).any(axis=0))
    if len(varying) <= 1:  # no pair varies: MI(i, i) / H(i) = 1 where H(i) > 0
        nmi[varying, varying] = 1.0
        return nmi
    cards = np.asarray(cardinalities, dtype=np.int64)[varying]
    offsets = np.concatenate([[0], np.cumsum(cards)[:-1]])
    values = x[:, varying] + offsets
    occurs = np.zeros(int(offsets[-1] + cards[-1]), dtype=bool)
    occurs[values] = True
    used = np.flatnonzero(occurs)  # what np.unique(values) gives, without sorting
    column = np.cumsum(occurs) - 1
    onehot = np.zeros((n, len(used)))
    np.put_along_axis(onehot, column[values], 1.0, axis=1)
    owner = np.zeros((len(used), len(varying)))
    owner[np.arange(len(used)), np.searchsorted(offsets, used, side="right") - 1] = 1.0
    frequencies = np.arange(n + 1) / n
    plogp = xlogy(frequencies, frequencies)
    with _one_blas_thread():
        counts = (onehot.T @ onehot).astype(np.int64)  # exact: sums of ones
        h_joint = -(owner.T @ plogp[counts] @ owner)
    h = np.diag(h_joint)
    mi = h[:, None] + h[None, :] - h_joint
    with np.errstate(divide="ignore", invalid="ignore"):
        part = np.where(h_joint > 1e-12, mi / h_joint, 0.0)
    nmi[np.ix_(varying, varying)] = np.clip(part, 0.0, 1.0)
    return nmi


def linkage_tree(
    x: np.ndarray,
    cardinalities: Sequence[int],
    rng: np.random.Generator | None = None,
    *,
    order: np.ndarray | None = None,
) -> list[list[int]]:
    """Linkage-tree FOS: every cluster of an average-linkage (UPGMA) hierarchical
    clustering of the variables on distance 1 - NMI, the singletons included and the
    root (all variables) left out. Ties are broken by a variable `order` (a permutation;
    default: drawn from `rng`). A subset lists its variables in the tree's order, not
    sorted (order does not matter to mixing, and sorting ~2l lists cost more than the
    clustering)."""
    length = x.shape[1]
    if length == 1:
        return [[0]]
    if order is None:
        if rng is None:
            raise ValueError("linkage_tree needs rng or order to break ties")
        order = rng.permutation(length)
    perm = np.asarray(order)
    nmi = normalised_mutual_information(x[:, perm], [cardinalities[i] for i in perm])
    return tree_from_nmi(nmi, perm)


def tree_from_nmi(nmi: np.ndarray, order: np.ndarray) -> list[list[int]]:
    """The linkage tree (see `linkage_tree`) of an NMI matrix whose row and column i
    are variable `order[i]`. It depends on `nmi` only through `nmi_key(nmi)`."""
    perm = np.asarray(order)
    if len(perm) == 1:
        return [[int(perm[0])]]
    dist = 1.0 - nmi
    np.fill_diagonal(dist, 0.0)
    merges = linkage(squareform(dist, checks=False), method="average")
    clusters: list[list[int]] = [[v] for v in perm.tolist()]
    for a, b in merges[:, :2].astype(np.int64).tolist():
        clusters.append(clusters[a] + clusters[b])
    return clusters[:-1]


def nmi_key(nmi: np.ndarray) -> tuple[tuple[int, ...], bytes]:
    """All of an NMI matrix that its linkage tree depends on (the diagonal is not): the
    rows linked to another (a nonzero entry off the diagonal) and their block. Near
    convergence most neighbourhoods vary in one variable or in unlinked ones, so their
    trees are one tree, whatever the rows."""
    candidates = np.flatnonzero(nmi.any(axis=0))  # varying variables (nonzero diagonal)
    block = nmi[np.ix_(candidates, candidates)]
    np.fill_diagonal(block, 0.0)
    linked = block.any(axis=0)
    return tuple(candidates[linked].tolist()), block[np.ix_(linked, linked)].tobytes()


def pack_fos(fos: list[list[int]]) -> Any:
    """A FOS for a checkpoint. Every subset of a linkage tree is a run of one variable
    order (the root's two children, each listed in tree order, one after the other), so
    it is written as that order and a [start, size] per subset: ~1/10 of the numbers of
    the lists (a job's chain-like tree over 113 variables holds ~6,400). Any other FOS
    is written as it is."""
    length = sum(len(s) == 1 for s in fos)
    if length < 2 or len(fos) != 2 * length - 2:
        return fos
    first = max(fos, key=len)
    inside = set(first)
    second = next((s for s in fos if len(s) == length - len(first) and s[0] not in inside), [])
    order = [*first, *second]
    where = {v: i for i, v in enumerate(order)}
    spans = []
    for subset in fos:
        start = where.get(subset[0], -1) if subset else -1
        if start < 0 or order[start : start + len(subset)] != list(subset):
            return fos
        spans.append([start, len(subset)])
    return {"order": order, "spans": spans}


def unpack_fos(data: Any) -> list[list[int]]:
    """The FOS `pack_fos` wrote."""
    if isinstance(data, dict):
        order = [int(v) for v in data["order"]]
        return [order[start : start + size] for start, size in data["spans"]]
    return [[int(v) for v in subset] for subset in data]
