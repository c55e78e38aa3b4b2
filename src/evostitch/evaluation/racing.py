"""Racing evaluation: an offspring is scored on nested, seeded chunks of the split and
stops as soon as a confidence bound shows it cannot matter.

The split is put in a seeded order, one per batch of offspring raced together (seeded by
their canonical genotypes); chunk k holds the images up to 64, 128, 256, ... (from a
quarter of the split when it has under 256 images, at least 16) and the last one the
rest, so after each chunk an offspring has been scored on a uniform random subset of n
of the N images (nested: every chunk extends the last), and the offspring of a batch
share their computation on each chunk (`SharedEvaluator`). One order for every
offspring of a search would make their errors move together: when its first images
happen to be hard, every good offspring is underestimated at once (measured: 3 bound
violations among 41 stopped offspring with one order, benchmarks/time_to_front.py).

After each chunk but the last, an upper bound U on the metric *of the whole split* is
computed at level alpha = (1 - confidence) / looks (Bonferroni over the looks, so an
offspring is stopped wrongly with probability at most 1 - confidence). The offspring
stops when U shows that it cannot enter the front it was handed (a front point dominates
every metric <= U at its MACs) or cannot reach the steering floor (U < floor). An
offspring that is not stopped has seen every image: its metric is the full split's,
exact (the same counts as `Evaluator`; see `metric_of`).

Bounds:
- accuracy: exact, for the finite split: the number K of correct images among N is
  bounded by inverting the hypergeometric law of the k correct among n seen (the exact
  finite-population version of the Clopper-Pearson bound, which it tightens: no
  replacement, and exact when n = N);
- mean IoU: a seeded bootstrap over images: the unseen N - n images are drawn, with
  replacement, from the n seen ones (their per-image confusion counts), added to the
  seen counts, and U is the (1 - alpha) quantile of the resulting mIoU. The unseen are
  drawn from a Polya urn (weights from a flat Dirichlet), not at fixed weights 1/n, which
  ignored the uncertainty of the seen images' mean (bound exceeded by 14-30% of stopped
  offspring on nuclei, benchmarks/time_to_front.py --problem segmentation).

`race_context` (evolution layer) builds what the evaluator is handed:
`{"front": [[objectives], ...], "floor": float | None, "metric_index": int}`.
References (the parents and ensembles) are never raced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .metrics import SegmentationMetric

DEFAULT_CONFIDENCE = 0.99
FIRST_CHUNK = 64
MIN_FIRST_CHUNK = 16
BOOTSTRAP = 4000  # resamples of the mIoU bootstrap


def first_chunk(n_total: int) -> int:
    """The first chunk: 64 images, or a quarter of a smaller split (at least 16), so that a
    split of a few dozen images (the reference searched VOC on 64) is raced too."""
    return max(MIN_FIRST_CHUNK, min(FIRST_CHUNK, n_total // 4))


def boundaries(n_total: int, first: int | None = None) -> list[int]:
    """Images seen after each chunk: first, 2 first, 4 first, ... then n_total
    (`first` defaults to `first_chunk`)."""
    out, n = [], first or first_chunk(n_total)
    while n < n_total:
        out.append(n)
        n *= 2
    return out + [n_total]


def look_alpha(confidence: float, n_total: int, first: int | None = None) -> float:
    """The level of each look: (1 - confidence) over the looks before the last chunk."""
    return (1.0 - confidence) / max(1, len(boundaries(n_total, first)) - 1)


def accuracy_upper(correct: int, seen: int, total: int, alpha: float) -> float:
    """Upper confidence bound (level 1 - alpha) on the accuracy over all `total` images
    when `correct` of a uniform random `seen` of them are right (hypergeometric, exact)."""
    from scipy.stats import hypergeom

    if seen >= total:
        return correct / total
    k_all = np.arange(correct, correct + total - seen + 1)  # possible correct in the split
    # P(X <= correct | K) falls as K grows: the bound is the largest K not rejected
    p = hypergeom.cdf(correct, total, k_all, seen)
    kept = k_all[p > alpha]
    return float(kept.max() if len(kept) else correct) / total


def miou_of(confusion: np.ndarray) -> float:
    """Mean IoU of a (classes x classes) confusion matrix, as `SegmentationMetric` does."""
    metric = SegmentationMetric(confusion.shape[0])
    metric.confusion = torch.as_tensor(confusion, dtype=torch.int64)
    return metric.compute()["miou"]


def miou_upper(per_image: np.ndarray, total: int, alpha: float, seed: int = 0) -> float:
    """Upper bound (level ~1 - alpha, bootstrap) on the mIoU over all `total` images from
    the per-image confusion counts (n x classes^2) of n seen ones."""
    n, c2 = per_image.shape
    classes = int(round(c2**0.5))
    seen = per_image.sum(0)
    if n >= total:
        return miou_of(seen.reshape(classes, classes))
    rng = np.random.default_rng(seed)
    # the unseen images from a Polya urn over the seen ones: random weights carry the
    # uncertainty of the seen images' own mean (fixed weights 1/n left it out: the bound
    # was too narrow by ~sqrt(n / N), exceeded for 14-30% of stopped offspring on nuclei)
    weights = rng.dirichlet(np.ones(n), size=BOOTSTRAP)
    counts = rng.multinomial(total - n, weights)  # (B, n): one draw per row of weights
    cm = (seen[None] + counts @ per_image).reshape(-1, classes, classes).astype(float)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    union = cm.sum(1) + cm.sum(2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
    values = np.nanmean(iou, axis=1)
    return float(np.quantile(values, 1.0 - alpha, method="higher"))


def dominated_for_sure(front: Sequence[Sequence[float]], best: Sequence[float], mi: int) -> bool:
    """Whether a front point dominates every objective vector that equals `best` except
    for a worse (larger) objective `mi`: it is no worse anywhere than `best`, and strictly
    better on another objective or on `mi` (a tie at `best` itself is not dominated)."""
    for p in front:
        pairs = list(zip(p, best, strict=True))
        if all(a <= b for a, b in pairs) and (
            p[mi] < best[mi] or any(a < b for i, (a, b) in enumerate(pairs) if i != mi)
        ):
            return True
    return False


def should_stop(upper: float, objectives: Sequence[float], context: dict[str, Any]) -> bool:
    """Stop when the metric's upper bound `upper` cannot reach the floor or enter the
    front at these (other) objectives; objective `metric_index` holds -metric."""
    floor = context.get("floor")
    if floor is not None and upper < floor:
        return True
    mi = int(context.get("metric_index", 0))
    best = list(objectives)
    best[mi] = -upper
    return dominated_for_sure(context.get("front") or [], best, mi)


class PerImage:
    """Per-image statistics of one offspring: right or not (classification), or the
    flattened confusion counts (segmentation); `compute()` gives them as an array."""

    def __init__(self, task: str, num_classes: int, ignore_index: int = 255) -> None:
        self.task, self.c, self.ignore = task, num_classes, ignore_index
        self.rows: list[np.ndarray] = []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = logits.detach().argmax(1).cpu(), target.detach().long().cpu()
        if self.task == "classification":
            self.rows.append((pred == target).numpy().astype(np.int64))
            return
        c, b = self.c, len(target)
        keep = target != self.ignore
        image = torch.arange(b)[:, None, None].expand_as(target)
        index = image[keep] * c * c + target[keep] * c + pred[keep]
        self.rows.append(torch.bincount(index, minlength=b * c * c).reshape(b, c * c).numpy())

    def compute(self) -> dict[str, Any]:
        return {"per_image": np.concatenate(self.rows) if self.rows else np.zeros(0, np.int64)}


@dataclass(frozen=True)
class Outcome:
    """What a race gives one offspring: objectives on the `images` it saw, and the upper
    bound on its metric when it was stopped early (None: it saw the whole split)."""

    objectives: tuple[float, ...]
    images: int | None = None
    bound: float | None = None


class RacingEvaluator:
    """Wraps an `Evaluator`: called, or through `evaluate_many`, it scores in full as
    before; `race_many(genotypes, context)` races them (module docstring), together
    through the evaluator's `SharedEvaluator`, chunk by chunk, the stopped ones leaving."""

    races = True

    def __init__(
        self,
        evaluator: Any,
        confidence: float = DEFAULT_CONFIDENCE,
        *,
        seed: int = 0,
        first: int | None = None,
    ) -> None:
        if not 0.5 <= confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
        self.evaluator, self.confidence, self.seed, self.first = evaluator, confidence, seed, first
        self.net = evaluator.net
        self._split: tuple[torch.Tensor, torch.Tensor] | None = None
        self._ends: list[int] = []
        self._exempt = {tuple(self.net.canonical(g)) for g in self.net.reference_genotypes}

    def __call__(self, genotype: Sequence[int]) -> tuple[float, float]:
        return self.evaluator(genotype)

    def evaluate_many(self, genotypes: Sequence[Sequence[int]]) -> list[tuple[float, float]]:
        return self.evaluator.evaluate_many(genotypes)

    @property
    def total(self) -> int:
        self._load()
        return self._ends[-1]

    def _load(self) -> None:
        """The split in memory (once)."""
        if self._split is None:
            xs, ys = zip(*self.evaluator.data, strict=True)
            self._split = torch.cat(xs), torch.cat(ys)
            self._ends = boundaries(len(self._split[0]), self.first)

    def chunks(self, genotypes: Sequence[Sequence[int]]) -> list[list[tuple[torch.Tensor, ...]]]:
        """The nested chunks (lists of batches) in the order seeded by these genotypes."""
        self._load()
        assert self._split is not None
        key = repr(sorted(tuple(self.net.canonical(g)) for g in genotypes)).encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") ^ self.seed
        x, y = self._split
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        size, start, out = self.evaluator.batch_size, 0, []
        for end in self._ends:
            part = order[start:end]
            out.append(
                [(x[part[i : i + size]], y[part[i : i + size]]) for i in range(0, len(part), size)]
            )
            start = end
        return out

    def metric_of(self, per_image: np.ndarray) -> float:
        """The task metric from per-image statistics (exactly the `Evaluator`'s counts)."""
        if self.net.task == "classification":
            return int(per_image.sum()) / max(len(per_image), 1)
        c = self.evaluator.num_classes
        return miou_of(per_image.sum(0).reshape(c, c))

    def upper(self, per_image: np.ndarray, alpha: float) -> float:
        total, seen = self.total, len(per_image)
        if self.net.task == "classification":
            return accuracy_upper(int(per_image.sum()), seen, total, alpha)
        digest = hashlib.sha256(per_image.tobytes()).digest()  # seeded by what was seen
        return miou_upper(per_image, total, alpha, int.from_bytes(digest[:8], "little"))

    def race_many(
        self, genotypes: Sequence[Sequence[int]], context: dict[str, Any] | None
    ) -> list[Outcome]:
        """Race the genotypes against `context` (None: score them in full)."""
        if context is None:
            return [Outcome(tuple(o)) for o in self.evaluate_many(genotypes)]
        chunks = self.chunks(genotypes)
        task, classes = self.net.task, self.evaluator.num_classes
        macs = [float(self.net.cost(g)["macs"]) for g in genotypes]
        stats: list[list[np.ndarray]] = [[] for _ in genotypes]
        done: dict[int, Outcome] = {}
        alive = list(range(len(genotypes)))
        alpha = look_alpha(self.confidence, self.total, self.first)
        shared = self.evaluator.shared
        for chunk, end in zip(chunks, self._ends, strict=True):
            scores = shared.metrics(
                [genotypes[j] for j in alive], data=chunk, make=lambda: PerImage(task, classes)
            )
            for j, score in zip(alive, scores, strict=True):
                stats[j].append(score["per_image"])
            if end == self.total:
                break
            for j in list(alive):
                if tuple(self.net.canonical(genotypes[j])) in self._exempt:
                    continue
                seen = np.concatenate(stats[j])
                upper = self.upper(seen, alpha)
                if should_stop(upper, (-upper, macs[j]), context):
                    done[j] = Outcome((-self.metric_of(seen), macs[j]), len(seen), upper)
                    alive.remove(j)
            if not alive:
                break
        for j in alive:  # every image seen: the full split's metric
            done[j] = Outcome((-self.metric_of(np.concatenate(stats[j])), macs[j]), self.total)
        return [done[j] for j in range(len(genotypes))]
