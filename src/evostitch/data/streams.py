"""Streaming a split: in-memory tensors sliced, any other Dataset through a DataLoader.

Evaluation and stitch training read batches through `batches`, so a split on disk is
never held in memory whole; `subset` draws a seeded fixed-size part of a split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from evostitch.errors import DataError


class ArrayDataset(Dataset):
    """In-memory (images [N,C,H,W] float, targets [N] or [N,H,W] long) pairs.

    `origin` says where each sample came from: its index in the full dataset [N], or
    for crops the (row, column) of their top-left corner [N, 2]. With `size` / `channels`
    the stored images are resized (bilinear) / their one channel repeated as they are
    read, so the enlarged copies never occupy memory all at once.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        origin: torch.Tensor,
        *,
        size: int | None = None,
        channels: int | None = None,
    ) -> None:
        self.images, self.targets, self.origin = images, targets, origin
        self.size, self.channels = size, channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.take(torch.tensor([i]))
        return x[0], y[0]

    def take(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at `index` as one batch (what a DataLoader would collate)."""
        x = self.images[index]
        if self.size is not None and x.shape[-1] != self.size:
            x = torch.nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
        if self.channels is not None and x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1).contiguous()
        return x, self.targets[index]


def subset(dataset: Dataset, n: int | None, *, seed: int = 0) -> Dataset:
    """A seeded, fixed-size subset of `n` samples of `dataset` (all of it when `n` is None
    or not smaller), kept in dataset order: the same `n` and seed give the same samples."""
    if n is None or n >= len(dataset):
        return dataset
    if n < 1:
        raise DataError(f"a subset needs at least one sample, got {n}")
    from torch.utils.data import Subset

    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, pick.sort().values.tolist())


def unwrap(data: Any, use: str) -> tuple[Dataset, int | None]:
    """(dataset, loader workers) of a non-empty map-style Dataset or of a DataLoader over
    one (its batching is ours: seeded for training, in order for evaluation); DataError
    naming `use` ("stitch training", "evaluation") for anything else."""
    from torch.utils.data import DataLoader

    workers = None
    if isinstance(data, DataLoader):
        data, workers = data.dataset, data.num_workers
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise DataError(
            f"{use} needs a map-style dataset of (input, target) pairs (e.g. "
            f"evostitch.data.load_dataset(...)), not a {type(data).__name__}"
        )
    if len(data) == 0:
        raise DataError(f"{use} needs a non-empty dataset")
    return data, workers


def default_workers(dataset: Dataset) -> int:
    """Loader processes for `dataset`: none for tensors already in memory, else up to 8,
    leaving a core to the main process."""
    import os

    if isinstance(dataset, ArrayDataset):
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def batches(
    dataset: Dataset,
    index: int | Iterable[Sequence[int]],
    *,
    workers: int | None = None,
    pin_memory: bool = False,
    persistent: bool = False,
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) batches of `dataset`, streamed: `index` is a batch size (the
    whole dataset in order) or the index lists of the batches, in their order.

    In-memory datasets are sliced directly; others go through a DataLoader with `workers`
    processes (default `default_workers`), so at most a few batches are decoded at once.
    A persistent loader (`persistent=True`, with a batch size) can be iterated many times
    without restarting its workers.
    """
    if isinstance(index, int):
        if index < 1:
            raise DataError(f"batch size must be positive, got {index}")
        index = [range(s, min(s + index, len(dataset))) for s in range(0, len(dataset), index)]
    workers = default_workers(dataset) if workers is None else workers
    if isinstance(dataset, ArrayDataset) and workers == 0:
        return _Sliced(dataset, index)
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_sampler=[list(i) for i in index],
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=persistent and workers > 0,
    )


class _Sliced:
    """Batches of an in-memory dataset, re-iterable."""

    def __init__(self, dataset: ArrayDataset, index: Iterable[Sequence[int]]) -> None:
        self.dataset, self.index = dataset, index

    def __iter__(self):
        for i in self.index:
            if isinstance(i, range) and i.step == 1:
                yield self.dataset.take(slice(i.start, i.stop))
            else:
                yield self.dataset.take(torch.as_tensor(list(i), dtype=torch.long))
