"""Evaluate offspring of a supernetwork on a dataset split, deterministically.

One at a time (`metrics`, `objectives`), or a population at once (`metrics_many`,
`objectives_many`) with `SharedEvaluator`, which computes what offspring share once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ..devices import autocast, check_amp, resolve_device
from ..errors import DataError
from ..supernet import Supernet
from .metrics import make_metric, primary_metric
from .shared import DEFAULT_BUDGET, SharedEvaluator


class Evaluator:
    """Holds one split in memory and scores genotypes on it.

    The split is loaded once (evaluation is the search's inner loop); metrics are those
    of the task (accuracy, top-5, cross-entropy, ECE / mean IoU, pixel accuracy).
    Calling it gives `objectives`; `evaluate_many` (= `objectives_many`) lets backends
    evaluate the genotypes they hold at once, keeping at most `budget_bytes` of shared
    values. `amp` ("bf16", "fp16") evaluates under torch.autocast in that precision.
    """

    def __init__(
        self,
        net: Supernet,
        dataset: Dataset,
        num_classes: int,
        *,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        budget_bytes: int | None = DEFAULT_BUDGET,
        amp: str | None = None,
    ) -> None:
        if len(dataset) == 0:
            raise DataError("cannot evaluate on an empty split")
        self.net = net
        self.device = resolve_device(device)
        self.amp = check_amp(amp)
        net.to(self.device).eval()
        items = [dataset[i] for i in range(len(dataset))]
        self.x = torch.stack([x for x, _ in items])
        self.y = torch.stack([torch.as_tensor(y) for _, y in items])
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.metric_name = primary_metric(net.task)
        self.budget_bytes = budget_bytes
        self._shared: SharedEvaluator | None = None

    def metrics(self, genotype: Sequence[int]) -> dict[str, float]:
        """All metrics of the offspring plus its MACs and parameters."""
        metric = make_metric(self.net.task, self.num_classes)
        with torch.no_grad(), autocast(self.device, self.amp):
            for start in range(0, len(self.x), self.batch_size):
                x = self.x[start : start + self.batch_size].to(self.device)
                y = self.y[start : start + self.batch_size].to(self.device)
                metric.update(self.net(x, genotype), y)
        return {**metric.compute(), **self.net.cost(genotype)}

    def objectives(self, genotype: Sequence[int]) -> tuple[float, float]:
        """(-metric, MACs): both minimised, as the search expects."""
        m = self.metrics(genotype)
        return (-m[self.metric_name], m["macs"])

    def __call__(self, genotype: Sequence[int]) -> tuple[float, float]:
        return self.objectives(genotype)

    @property
    def shared(self) -> SharedEvaluator:
        """The population evaluator over the same split (built on first use)."""
        if self._shared is None:
            self._shared = SharedEvaluator(
                self.net,
                self.x,
                self.y,
                self.num_classes,
                batch_size=self.batch_size,
                budget_bytes=self.budget_bytes,
                device=self.device,
                amp=self.amp,
            )
        return self._shared

    def metrics_many(self, genotypes: Sequence[Sequence[int]]) -> list[dict[str, float]]:
        """`metrics` of each genotype, computing what they share only once."""
        return self.shared.metrics(genotypes)

    def objectives_many(self, genotypes: Sequence[Sequence[int]]) -> list[tuple[float, float]]:
        """`objectives` of each genotype, computing what they share only once."""
        return [(-m[self.metric_name], m["macs"]) for m in self.metrics_many(genotypes)]

    evaluate_many = objectives_many  # what backends look for
