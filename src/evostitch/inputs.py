"""What a user's data must satisfy before any work: its spec completed from the parents'
preprocessing, its inputs, task and classes checked against them, sample input batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from .data import (
    check_input_shape,
    dataset_info,
    format_spec,
    load_dataset,
    parse_spec,
    skipped,
)
from .errors import DataError
from .files import absolute
from .supernet import Supernet, side_names


def _say(progress: bool):
    console = Console(stderr=True, highlight=False)
    return console.print if progress else (lambda *_, **__: None)


def input_batches(
    data: str | None, shape: Sequence[int], n: int = 32, batch: int = 16, progress: bool = True
) -> list[torch.Tensor]:
    """`n` inputs in batches: from a dataset's training split, else random (with a note)."""
    if data is None:
        _say(progress)("[yellow]no data given: using random inputs[/yellow]")
        gen = torch.Generator().manual_seed(0)
        return [torch.randn(batch, *shape, generator=gen) for _ in range(n // batch)]
    dataset = load_dataset(data, "train")
    images = torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])
    if tuple(images.shape[1:]) != tuple(shape):
        raise DataError(
            f"{data} gives inputs of shape {tuple(images.shape[1:])}, not {tuple(shape)}"
        )
    return list(images.split(batch))


def check_data(net: Supernet, data: str) -> None:
    """DataError unless `data`'s inputs, task and classes fit the supernetwork's parents."""
    info = dataset_info(data)
    check_input_shape(data, net.input_shape)
    if info.task != net.task:
        raise DataError(f"{data} is a {info.task} dataset, the parents do {net.task}")
    graph = net.graphs["a"]
    classes = graph[graph.output].shape[1]
    if classes != info.num_classes:
        raise DataError(
            f"{data} has {info.num_classes} classes, the parents output {classes}: "
            "give them a head for this dataset (e.g. ?num_classes=...)"
        )


def check_images(data: str, splits: Sequence[str], progress: bool = True) -> None:
    """Decode every image of `data`'s `splits` once, before any work (`evostitch.data.
    readable`): a file that does not decode is left out of its split, said in one line
    per split, so that no evaluation or training step fails on it."""
    say = _say(progress)
    for split in splits:
        bad = skipped(load_dataset(data, split))
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            images = "image" if len(bad) == 1 else "images"
            say(
                f"[yellow]skipped {len(bad)} unreadable {images} of the {split} split: "
                f"{escape(shown)}[/yellow]",
                soft_wrap=True,
            )


def resolve_data(
    data: str | None, parents: Sequence[Any], input_shape: Sequence[int], progress: bool = True
) -> str | None:
    """The dataset spec a supernetwork records: its folder absolute (a later search may
    run elsewhere); an image folder completed with the parents' own preprocessing
    (resize, mean, std, interpolation of their pretrained weights) and the input side,
    unless the spec sets them; parents that disagree get the first known one's (parent
    A's when it has one), said in one line."""
    from .models import preprocessing

    if data is None:
        return None
    kind, path, opts = parse_spec(data)
    if path:
        path = str(absolute(path))
    if kind != "imagefolder":
        return format_spec(kind, path, opts)
    opts.setdefault("size", str(input_shape[-1]))
    if not {"resize", "mean", "std", "interpolation"} & opts.keys():
        sides = [s.upper() for s in side_names(len(parents))]
        own = {side: preprocessing(spec) for side, spec in zip(sides, parents, strict=True)}
        known = {side: p for side, p in own.items() if p is not None}
        if known:
            first, chosen = next(iter(known.items()))
            opts = {**chosen.options(int(opts["size"])), **opts}
            if any(p != chosen for p in known.values()):
                ways = "; ".join(f"{side}: {p.describe()}" for side, p in known.items())
                _say(progress)(
                    f"[yellow]the parents preprocess differently ({ways}): using {first}'s; "
                    "set resize/mean/std/interpolation in the data spec to choose[/yellow]"
                )
    return format_spec(kind, path, opts)
