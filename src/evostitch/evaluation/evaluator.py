"""Evaluate offspring of a supernetwork on a dataset split, deterministically.

One at a time (`metrics`, `objectives`), or a population at once (`metrics_many`,
`objectives_many`) with `SharedEvaluator`, which computes what offspring share once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..data import ArrayDataset, batches, unwrap
from ..devices import autocast, check_amp, resolve_device
from ..supernet import Supernet
from .metrics import make_metric, primary_metric
from .shared import DEFAULT_SHARED_BYTES, SharedEvaluator

DEFAULT_CACHE = 1 << 30  # bytes: a decoded split up to this size is kept between evaluations


class Evaluator:
    """Scores genotypes on one split, streaming it in batches.

    Nothing is read before the first evaluation (a search driver whose workers evaluate
    never loads the split). A split already in memory (`ArrayDataset`) is sliced; another
    is decoded by a DataLoader with `workers` processes, and kept decoded when it fits in
    `cache_bytes` (evaluation is the search's inner loop), else streamed again each time.
    Metrics are those of the task (accuracy, top-5, cross-entropy, ECE / mean IoU, pixel
    accuracy). Calling it gives `objectives`; `evaluate_many` (= `objectives_many`) lets
    backends evaluate the genotypes they hold at once, keeping at most `budget_bytes` of
    shared values. `amp` ("bf16", "fp16") evaluates under torch.autocast in that precision.
    """

    def __init__(
        self,
        net: Supernet,
        dataset: Dataset | DataLoader,
        num_classes: int,
        *,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        budget_bytes: int | None = DEFAULT_SHARED_BYTES,
        amp: str | None = None,
        workers: int | None = None,
        cache_bytes: int = DEFAULT_CACHE,
    ) -> None:
        dataset, own_workers = unwrap(dataset, "evaluation")
        workers = own_workers if workers is None else workers
        self.net, self.dataset = net, dataset
        self.device = resolve_device(device)
        self.amp = check_amp(amp)
        self.batch_size, self.workers, self.cache_bytes = batch_size, workers, cache_bytes
        self.num_classes = num_classes
        self.metric_name = primary_metric(net.task)
        self.budget_bytes = budget_bytes
        self._batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._shared: SharedEvaluator | None = None

    @property
    def data(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The split's (inputs, targets) batches, re-iterable (opened on first use)."""
        if self._batches is None:
            self.net.to(self.device).eval()
            keep = not isinstance(self.dataset, ArrayDataset) and self._fits_cache()
            stream = batches(
                self.dataset,
                self.batch_size,
                workers=self.workers,
                pin_memory=self.device.type == "cuda",
                persistent=not keep,
            )
            self._batches = list(stream) if keep else stream
        return self._batches

    def _fits_cache(self) -> bool:
        x, y = self.dataset[0]
        per_sample = torch.as_tensor(x).nbytes + torch.as_tensor(y).nbytes
        return per_sample * len(self.dataset) <= self.cache_bytes

    def metrics(self, genotype: Sequence[int]) -> dict[str, float]:
        """All metrics of the offspring plus its MACs and parameters."""
        metric = make_metric(self.net.task, self.num_classes)
        data = self.data
        with torch.no_grad(), autocast(self.device, self.amp):
            for x, y in data:
                x = x.to(self.device, non_blocking=True)
                metric.update(self.net(x, genotype), y.to(self.device, non_blocking=True))
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
                self.data,
                self.num_classes,
                batch_size=self.batch_size,
                budget_bytes=self.budget_bytes,
                device=self.device,
                amp=self.amp,
            )
        return self._shared

    def metrics_many(
        self, genotypes: Sequence[Sequence[int]], *, calibrate: bool = False
    ) -> list[dict[str, Any]]:
        """`metrics` of each genotype, computing what they share only once; `calibrate`
        adds each one's cross-entropy and ECE per temperature ("by_temperature")."""
        return self.shared.metrics(genotypes, calibrate=calibrate)

    def objectives_many(self, genotypes: Sequence[Sequence[int]]) -> list[tuple[float, float]]:
        """`objectives` of each genotype, computing what they share only once."""
        return [(-m[self.metric_name], m["macs"]) for m in self.metrics_many(genotypes)]

    evaluate_many = objectives_many  # what backends look for
