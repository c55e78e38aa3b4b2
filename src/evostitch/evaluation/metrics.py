"""Streaming task metrics: ``update(logits, target)`` per batch, then ``compute()``.

Counts are accumulated exactly (int64, float64), so results do not depend on batching
beyond float rounding of the per-sample values.

Temperature scaling (Guo et al. 2017) divides a classifier's logits by one T > 0 fitted
to minimise the cross-entropy (NLL) on validation data. A classification metric built
with `temperatures` also accumulates, per temperature of that grid, the cross-entropy and
the ECE bins of the scaled logits, in the same pass and without keeping any logits:
`temperature_curves()` gives them, `fit_temperature` picks the grid temperature with the
least NLL, and the same curves of another split give its values at that temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError

PRIMARY_METRIC = {"classification": "accuracy", "segmentation": "miou"}
ECE_BINS = 15
# log-spaced, steps of 2^(1/16) (4.4%) from 1/4 to 16; T = 1 is on it (k = 0)
TEMPERATURES = tuple(2.0 ** (k / 16) for k in range(-32, 65))
_CHUNK = 1 << 22  # scaled logits (float64 elements) held at once per update


class Metric(Protocol):
    def reset(self) -> None: ...
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None: ...
    def compute(self) -> dict[str, float]: ...


def _scaled_stats(
    logits: torch.Tensor, target: torch.Tensor, temperatures: Sequence[float], bins: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per temperature t (g of them) for logits / t: the summed cross-entropy (g,) and the
    ECE bins' sample counts, hits and summed confidences (g, bins), on the CPU.

    Computed where the logits are (float64), with sums rather than atomic adds, so the
    result is deterministic on a GPU too. The plain metric is this at t = 1 (dividing by
    1.0 is exact): the same code, so a curve's value at T = 1 is the uncalibrated one.
    """
    t = torch.tensor(temperatures, dtype=torch.float64, device=logits.device)
    z = logits[None] / t[:, None, None]  # (g, n, classes)
    logp = z.log_softmax(-1)
    top, pred = logp.max(-1)
    hit = (pred == target).double()  # the same for every t > 0: the argmax does not move
    ce = -logp.gather(-1, target.expand(len(t), -1)[..., None])[..., 0].sum(-1)
    conf = top.exp()
    b = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    in_bin = F.one_hot(b, bins).double()  # (g, n, bins)
    count = in_bin.sum(1).long()
    correct = (in_bin * hit[..., None]).sum(1).long()
    summed = (in_bin * conf[..., None]).sum(1)
    return ce.cpu(), count.cpu(), correct.cpu(), summed.cpu()


def _ece(count: torch.Tensor, correct: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """ECE from bins (last dimension): sum over bins of |hits - summed confidence| / n."""
    n = count.sum(-1).clamp(min=1)
    return (correct.double() - conf).abs().sum(-1) / n  # |acc_b - conf_b| * n_b / n


class ClassificationMetric:
    """Accuracy, top-5 accuracy (top-k, k = min(5, classes)), mean cross-entropy and ECE.

    ECE uses 15 equal-width confidence bins (lo, hi] and weighs each bin's
    |accuracy - mean confidence| by its share of the samples.

    With `temperatures` (e.g. `TEMPERATURES`) it also accumulates the cross-entropy and
    ECE of logits / T for every T of that grid (`temperature_curves`), for temperature
    scaling. A temperature changes confidences, never the argmax: accuracy and top-5 are
    the same at every T, so only ECE and cross-entropy have curves.
    """

    def __init__(
        self, num_classes: int, bins: int = ECE_BINS, temperatures: Sequence[float] | None = None
    ) -> None:
        self.num_classes, self.bins, self.k = num_classes, bins, min(5, num_classes)
        if temperatures is not None and (not temperatures or min(temperatures) <= 0):
            raise DataError("temperatures must be a non-empty list of positive numbers")
        self.temperatures = None if temperatures is None else [float(t) for t in temperatures]
        self.reset()

    def reset(self) -> None:
        self.n = self.correct = self.correct_k = 0
        self.ce_sum = 0.0
        self.bin_count = torch.zeros(self.bins, dtype=torch.int64)
        self.bin_correct = torch.zeros(self.bins, dtype=torch.int64)
        self.bin_conf = torch.zeros(self.bins, dtype=torch.float64)
        g = 0 if self.temperatures is None else len(self.temperatures)
        self.t_ce = torch.zeros(g, dtype=torch.float64)
        self.t_count = torch.zeros(g, self.bins, dtype=torch.int64)
        self.t_correct = torch.zeros(g, self.bins, dtype=torch.int64)
        self.t_conf = torch.zeros(g, self.bins, dtype=torch.float64)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits, target = logits.detach().double(), target.detach().long().to(logits.device)
        if logits.ndim != 2 or logits.shape[0] != target.shape[0]:
            raise DataError(
                f"logits {tuple(logits.shape)} do not fit targets {tuple(target.shape)}"
            )
        ce, count, correct, conf = _scaled_stats(logits, target, [1.0], self.bins)
        self.n += len(target)
        self.correct += int(correct.sum())
        topk = logits.topk(self.k, dim=1).indices
        self.correct_k += int((topk == target[:, None]).any(1).sum())
        self.ce_sum += float(ce[0])
        self.bin_count += count[0]
        self.bin_correct += correct[0]
        self.bin_conf += conf[0]
        if self.temperatures is not None:
            step = max(1, _CHUNK // max(logits.numel(), 1))
            for i in range(0, len(self.temperatures), step):
                part = slice(i, i + step)
                stats = _scaled_stats(logits, target, self.temperatures[part], self.bins)
                for total, value in zip(
                    (self.t_ce, self.t_count, self.t_correct, self.t_conf), stats, strict=True
                ):
                    total[part] += value

    def compute(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {
            "accuracy": self.correct / n,
            "top5_accuracy": self.correct_k / n,
            "cross_entropy": self.ce_sum / n,
            "ece": float(_ece(self.bin_count, self.bin_correct, self.bin_conf)),
            "n": float(self.n),
        }

    def temperature_curves(self) -> dict[str, list[float]]:
        """Cross-entropy and ECE of logits / T for each T of the grid (lists in its order)."""
        if self.temperatures is None:
            raise DataError("this metric was built without temperatures")
        return {
            "temperature": list(self.temperatures),
            "cross_entropy": (self.t_ce / max(self.n, 1)).tolist(),
            "ece": _ece(self.t_count, self.t_correct, self.t_conf).tolist(),
        }


def fit_temperature(curves: dict[str, list[float]]) -> int:
    """Index of the grid temperature with the least cross-entropy (NLL) on the split the
    curves came from (the first one on a tie): temperature scaling fitted on that split.

    NLL is convex in 1/T, so the fitted T is one of the two grid points around the best T
    in the grid's range: within one step (a factor 2^(1/16) for `TEMPERATURES`)."""
    ce = curves["cross_entropy"]
    return min(range(len(ce)), key=ce.__getitem__)


class SegmentationMetric:
    """Mean IoU over classes present (union > 0) and pixel accuracy, from a confusion
    matrix of all pixels whose target is not `ignore_index`."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        target = target.detach().long().cpu()
        if logits.ndim != 4 or logits.shape[2:] != target.shape[1:]:
            raise DataError(f"logits {tuple(logits.shape)} do not fit masks {tuple(target.shape)}")
        pred = logits.detach().argmax(1).cpu()
        keep = target != self.ignore_index
        t, p = target[keep], pred[keep]
        if len(t) and (t.min() < 0 or t.max() >= self.num_classes):
            raise DataError(f"mask value out of range 0..{self.num_classes - 1}")
        c = self.num_classes
        self.confusion += torch.bincount(t * c + p, minlength=c * c).reshape(c, c)

    def compute(self) -> dict[str, float]:
        cm = self.confusion.double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        present = union > 0
        total = cm.sum()
        return {
            "miou": float((tp[present] / union[present]).mean()) if present.any() else 0.0,
            "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
            "n": float(total),
        }


def make_metric(
    task: str, num_classes: int, ignore_index: int = 255, *, calibrate: bool = False
) -> Metric:
    """A fresh accumulator for `task` ("classification" or "segmentation"); `calibrate`
    (classifiers only): also over the grid `TEMPERATURES`, for temperature scaling."""
    if task == "classification":
        return ClassificationMetric(num_classes, temperatures=TEMPERATURES if calibrate else None)
    if calibrate:
        raise DataError(f"temperature scaling applies to classifiers, not to {task}")
    if task == "segmentation":
        return SegmentationMetric(num_classes, ignore_index)
    raise DataError(f"unknown task {task!r}: use classification or segmentation")


def primary_metric(task: str) -> str:
    """Name of the metric the search maximises for `task`."""
    if task not in PRIMARY_METRIC:
        raise DataError(f"unknown task {task!r}: use classification or segmentation")
    return PRIMARY_METRIC[task]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    metric: Metric,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Run `model` (in eval mode) over `dataset` and return `metric.compute()`."""
    metric.reset()
    model.eval()
    for x, y in DataLoader(dataset, batch_size=batch_size):
        out = model(x.to(device))
        metric.update(out["out"] if isinstance(out, dict) else out, y)
    return metric.compute()
