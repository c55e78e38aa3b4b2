"""Streaming task metrics: ``update(logits, target)`` per batch, then ``compute()``.

Counts are accumulated exactly (int64, float64), so results do not depend on batching
beyond float rounding of the per-sample values.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError

PRIMARY_METRIC = {"classification": "accuracy", "segmentation": "miou"}
ECE_BINS = 15


class Metric(Protocol):
    def reset(self) -> None: ...
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None: ...
    def compute(self) -> dict[str, float]: ...


class ClassificationMetric:
    """Accuracy, top-5 accuracy (top-k, k = min(5, classes)), mean cross-entropy and ECE.

    ECE uses 15 equal-width confidence bins (lo, hi] and weighs each bin's
    |accuracy - mean confidence| by its share of the samples.
    """

    def __init__(self, num_classes: int, bins: int = ECE_BINS) -> None:
        self.num_classes, self.bins, self.k = num_classes, bins, min(5, num_classes)
        self.reset()

    def reset(self) -> None:
        self.n = self.correct = self.correct_k = 0
        self.ce_sum = 0.0
        self.bin_count = torch.zeros(self.bins, dtype=torch.int64)
        self.bin_correct = torch.zeros(self.bins, dtype=torch.int64)
        self.bin_conf = torch.zeros(self.bins, dtype=torch.float64)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits, target = logits.detach().double().cpu(), target.detach().long().cpu()
        if logits.ndim != 2 or logits.shape[0] != target.shape[0]:
            raise DataError(
                f"logits {tuple(logits.shape)} do not fit targets {tuple(target.shape)}"
            )
        probs = logits.softmax(1)
        conf, pred = probs.max(1)
        hit = pred == target
        self.n += len(target)
        self.correct += int(hit.sum())
        topk = logits.topk(self.k, dim=1).indices
        self.correct_k += int((topk == target[:, None]).any(1).sum())
        self.ce_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        b = (torch.ceil(conf * self.bins).long() - 1).clamp(0, self.bins - 1)
        self.bin_count += torch.bincount(b, minlength=self.bins)
        self.bin_correct += torch.bincount(b, weights=hit.double(), minlength=self.bins).long()
        self.bin_conf += torch.bincount(b, weights=conf, minlength=self.bins)

    def compute(self) -> dict[str, float]:
        n = max(self.n, 1)
        gap = (self.bin_correct.double() - self.bin_conf).abs()  # |acc_b - conf_b| * n_b
        return {
            "accuracy": self.correct / n,
            "top5_accuracy": self.correct_k / n,
            "cross_entropy": self.ce_sum / n,
            "ece": float(gap.sum() / n),
            "n": float(self.n),
        }


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


def make_metric(task: str, num_classes: int, ignore_index: int = 255) -> Metric:
    """A fresh accumulator for `task` ("classification" or "segmentation")."""
    if task == "classification":
        return ClassificationMetric(num_classes)
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
