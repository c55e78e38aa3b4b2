import numpy as np
import pytest
import torch
from PIL import Image

from evostitch.data import NUCLEI_BANDS, dataset_info, load_dataset
from evostitch.errors import EvostitchError


def _origins(spec: str, seed: int = 0) -> dict[str, set[int]]:
    return {
        s: set(load_dataset(spec, s, seed=seed).origin.tolist()) for s in ("train", "val", "test")
    }


@pytest.mark.parametrize("spec, total", [("digits", 1797), ("mnist5k", 5000)])
def test_bundled_splits_are_disjoint_complete_and_deterministic(spec, total):
    parts = _origins(spec)
    assert sum(map(len, parts.values())) == total
    assert set().union(*parts.values()) == set(range(total))
    assert not parts["train"] & parts["val"] and not parts["val"] & parts["test"]
    assert _origins(spec) == parts
    assert _origins(spec, seed=1)["val"] != parts["val"]
    a, b = load_dataset(spec, "val"), load_dataset(spec, "val")
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)


def test_mnist5k_shapes_and_balance():
    info = dataset_info("mnist5k")
    assert (info.task, info.num_classes, info.input_shape) == ("classification", 10, (1, 28, 28))
    train = load_dataset("mnist5k", "train")
    x, y = train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(train) == 3500 and torch.bincount(train.targets).tolist() == [350] * 10
    assert abs(float(train.images.mean())) < 0.1 and abs(float(train.images.std()) - 1) < 0.1


def test_nuclei_bands_are_disjoint():
    pytest.importorskip("stardist")
    info = dataset_info("nuclei")
    assert (info.task, info.num_classes, info.input_shape) == ("segmentation", 2, (1, 64, 64))
    for split, (top, bottom) in NUCLEI_BANDS.items():
        ds = load_dataset("nuclei", split)
        rows = ds.origin[:, 0]
        assert int(rows.min()) >= top and int(rows.max()) + 64 <= bottom
        assert ds.images.shape[1:] == (1, 64, 64) and ds.targets.shape[1:] == (64, 64)
        assert set(ds.targets.unique().tolist()) == {0, 1}
    assert len(load_dataset("nuclei", "train")) == 4 * 9 * 15  # flips x rows x columns
    assert load_dataset("nuclei?crop=32", "val").images.shape[1:] == (1, 32, 32)


def _write_images(folder, n, color):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (20 + i, 12), color).save(folder / f"{i}.png")


def test_imagefolder_single_folder_split(tmp_path):
    _write_images(tmp_path / "cat", 20, (255, 0, 0))
    _write_images(tmp_path / "dog", 20, (0, 0, 255))
    spec = f"imagefolder:{tmp_path}?size=16"
    info = dataset_info(spec)
    assert (info.num_classes, info.input_shape) == (2, (3, 16, 16))
    parts = {s: load_dataset(spec, s) for s in ("train", "val", "test")}
    idx = {s: set(d.indices) for s, d in parts.items()}
    assert [len(idx[s]) for s in ("train", "val", "test")] == [28, 6, 6]
    assert not (idx["train"] & idx["val"]) and not (idx["val"] & idx["test"])
    x, y = parts["val"][0]
    assert x.shape == (3, 16, 16) and y in (0, 1)


def test_imagefolder_train_val_layout_halves_val(tmp_path):
    for split, n in (("train", 4), ("val", 6)):
        _write_images(tmp_path / split / "a", n, (0, 255, 0))
        _write_images(tmp_path / split / "b", n, (9, 9, 9))
    spec = f"imagefolder:{tmp_path}?size=8"
    assert len(load_dataset(spec, "train")) == 8
    val, test = load_dataset(spec, "val"), load_dataset(spec, "test")
    assert len(val) == len(test) == 6 and not set(val.indices) & set(test.indices)
    _write_images(tmp_path / "val" / "c", 2, (1, 2, 3))
    with pytest.raises(EvostitchError, match="differ from those of train"):
        load_dataset(spec, "val")


def test_voc_layout(tmp_path):
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / sub).mkdir(parents=True)
    names = [f"2007_{i:06d}" for i in range(6)]
    for i, name in enumerate(names):
        Image.new("RGB", (30, 20), (i * 40, 0, 0)).save(tmp_path / "JPEGImages" / f"{name}.jpg")
        mask = np.full((20, 30), i + 1, dtype=np.uint8)
        mask[:6] = 255
        Image.fromarray(mask, mode="L").convert("P").save(
            tmp_path / "SegmentationClass" / f"{name}.png"
        )
    lists = tmp_path / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (lists / "val.txt").write_text("\n".join(names[2:]) + "\n")
    spec = f"voc:{tmp_path}?size=10"
    info = dataset_info(spec)
    assert (info.task, info.num_classes, info.ignore_index) == ("segmentation", 21, 255)
    val, test = load_dataset(spec, "val"), load_dataset(spec, "test")
    assert len(load_dataset(spec, "train")) == 2 and len(val) == len(test) == 2
    assert not set(val.ids) & set(test.ids)
    x, y = val[0]
    assert x.shape == (3, 10, 10) and y.shape == (10, 10) and y.dtype == torch.int64
    assert set(y.unique().tolist()) == {255, int(names.index(val.ids[0])) + 1}


@pytest.mark.parametrize(
    "spec, split, words",
    [
        ("cifar", "train", "unknown dataset spec"),
        ("digits", "holdout", "unknown split"),
        ("digits?crop=3", "train", "unknown dataset option"),
        ("nuclei?crop=abc", "train", "not an integer"),
        ("imagefolder:/no/such/folder", "train", "not found"),
        ("imagefolder", "train", "needs a path"),
        ("voc:/no/such/folder", "train", "not found"),
    ],
)
def test_errors_are_one_line(spec, split, words):
    with pytest.raises(EvostitchError, match=words) as err:
        load_dataset(spec, split)
    assert "\n" not in str(err.value)


def test_empty_folders_are_errors(tmp_path):
    with pytest.raises(EvostitchError, match="no class subfolders"):
        load_dataset(f"imagefolder:{tmp_path}", "train")
    (tmp_path / "cat").mkdir()
    with pytest.raises(EvostitchError, match="unusable image folder"):
        load_dataset(f"imagefolder:{tmp_path}", "train")
    with pytest.raises(EvostitchError, match="not a Pascal VOC folder"):
        load_dataset(f"voc:{tmp_path}", "val")
