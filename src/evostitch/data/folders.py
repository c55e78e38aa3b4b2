"""Datasets read from folders: imagefolder and VOC (their spec options and splits in
`evostitch.data`), unreadable images left out of their split after it is drawn."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from evostitch.errors import DataError

from . import IMAGENET_MEAN, IMAGENET_STD, RATIOS, SPLITS, _check_opts, _int_opt, _stratified
from .readable import SKIPPED, read_rgb, unreadable


def _folder_classes(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"image folder has no class subfolders: {root}")
    return classes


def _imagefolder_root(path: Path) -> Path:
    return path / "train" if (path / "train").is_dir() else path


INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


def _floats(opts: dict[str, str], key: str, default: tuple[float, ...]) -> tuple[float, ...]:
    if key not in opts:
        return default
    try:
        values = tuple(float(v) for v in opts[key].split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or (key == "std" and min(values) <= 0):
        raise DataError(f"dataset option {key} must be three numbers R,G,B, got {opts[key]!r}")
    return values


def _folder_transform(opts: dict[str, str]) -> dict:
    """An image folder's preprocessing from its spec options (size, resize, mean, std,
    interpolation)."""
    _check_opts(opts, {"size", "resize", "mean", "std", "interpolation"})
    size = _int_opt(opts, "size", 224, check=False)
    interpolation = opts.get("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        raise DataError(f"dataset option interpolation must be one of {', '.join(INTERPOLATIONS)}")
    return {
        "size": size,
        "resize": _int_opt(opts, "resize", size, check=False),
        "mean": _floats(opts, "mean", IMAGENET_MEAN),
        "std": _floats(opts, "std", IMAGENET_STD),
        "interpolation": interpolation,
    }


def _imagefolder_split(path: Path, split: str, how: dict, seed: int) -> Dataset:
    from torchvision import datasets

    tf = _folder_tf(how)

    def folder(root: Path) -> datasets.ImageFolder:
        try:
            ds = datasets.ImageFolder(str(root), transform=tf, loader=read_rgb)
        except (FileNotFoundError, RuntimeError) as e:
            raise DataError(f"unusable image folder {root}: {e}".splitlines()[0]) from None
        if ds.classes != _folder_classes(_imagefolder_root(path)):
            raise DataError(f"class subfolders of {root} differ from those of train/")
        return ds

    if (path / "train").is_dir():
        if split == "train" or (split == "test" and (path / "test").is_dir()):
            ds = folder(path / split)
            return _readable_part(ds, range(len(ds)), split, path)
        val = folder(path / "val")
        halves = _stratified(np.array(val.targets), (0.5, 0.5), seed)
        return _readable_part(val, halves[int(split == "test")].tolist(), split, path)
    full = folder(path)
    parts = _stratified(np.array(full.targets), RATIOS, seed)
    return _readable_part(full, parts[SPLITS.index(split)].tolist(), split, path)


def _folder_tf(how: dict):
    from torchvision import transforms

    mode = transforms.InterpolationMode(how["interpolation"])
    return transforms.Compose(
        [
            transforms.Resize(how["resize"], interpolation=mode),
            transforms.CenterCrop(how["size"]),
            transforms.ToTensor(),
            transforms.Normalize(how["mean"], how["std"]),
        ]
    )


def _readable_part(ds, indices: Sequence[int], split: str, path: Path) -> Dataset:
    """The samples of `ds` at `indices` whose image decodes; the split is drawn before
    the check, so a bad file changes no other sample's split. The files left out are
    listed in the result's `unreadable` (`skipped`)."""
    from torch.utils.data import Subset

    bad = set(unreadable([ds.samples[i][0] for i in indices]))
    keep = [i for i in indices if ds.samples[i][0] not in bad]
    if not keep:
        raise DataError(f"no readable image in the {split} split of {path}")
    part = Subset(ds, keep)
    setattr(part, SKIPPED, sorted(bad))
    return part


def _voc_root(path: Path) -> Path:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        if not (path / sub).is_dir():
            raise DataError(f"not a Pascal VOC folder (no {sub}/): {path}")
    return path


def _voc_ids(root: Path, name: str) -> list[str]:
    f = root / "ImageSets" / "Segmentation" / f"{name}.txt"
    if not f.is_file():
        raise DataError(f"Pascal VOC split list not found: {f}")
    ids = [line.split()[0] for line in f.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"Pascal VOC split list is empty: {f}")
    return ids


class VOCSegmentation(Dataset):
    """Pascal VOC images with class masks, resized to size x size."""

    def __init__(self, root: Path, ids: list[str], size: int) -> None:
        self.root, self.ids, self.size = root, ids, size

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        name = self.ids[i]
        image = Image.open(self.root / "JPEGImages" / f"{name}.jpg").convert("RGB")
        mask = Image.open(self.root / "SegmentationClass" / f"{name}.png")
        image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        mask = mask.resize((self.size, self.size), Image.Resampling.NEAREST)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        x = (x - mean[:, None, None]) / std[:, None, None]
        return x, torch.from_numpy(np.array(mask, dtype=np.int64))


def _voc_split(root: Path, split: str, size: int, seed: int) -> Dataset:
    lists = root / "ImageSets" / "Segmentation"
    if split == "train" or (split == "test" and (lists / "test.txt").is_file()):
        ids = _voc_ids(root, split)
    else:
        val = _voc_ids(root, "val")
        perm = np.random.default_rng(seed).permutation(len(val))
        half = perm[: len(val) // 2] if split == "val" else perm[len(val) // 2 :]
        ids = [val[i] for i in sorted(half)]
    return _readable_voc(root, ids, split, size)


def _readable_voc(root: Path, ids: list[str], split: str, size: int) -> VOCSegmentation:
    """The VOC samples of `ids` whose image and mask both decode; the rest are listed in
    the result's `unreadable` (as `_readable_part`)."""
    files = {
        name: (
            str(root / "JPEGImages" / f"{name}.jpg"),
            str(root / "SegmentationClass" / f"{name}.png"),
        )
        for name in ids
    }
    bad = set(unreadable([f for pair in files.values() for f in pair]))
    keep = [name for name in ids if not bad & set(files[name])]
    if not keep:
        raise DataError(f"no readable image in the {split} split of {root}")
    part = VOCSegmentation(root, keep, size)
    setattr(part, SKIPPED, sorted(bad))
    return part
