"""A user's own folder of images, as they run it: PNGs in class subfolders, relative
paths, stitch -> search (no --data) -> report -> export; the parents' preprocessing; data
that does not fit the parents refused in one line before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evostitch.api import resolve_data

pytestmark = pytest.mark.usefixtures("one_thread")
A = "demo:resnet_like?in_channels=3&num_classes=3"
B = "demo:mobilenet_like?in_channels=3&num_classes=3"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """my photos/{red,green,blue}/*.png: 20 noisy 20x24 images per class."""
    root = tmp_path_factory.mktemp("user") / "my photos"
    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 120, (20, 24, 3))
            pixels[..., c] += 120
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evostitch.cli", *args], cwd=cwd, capture_output=True, text=True
    )


def test_imagefolder_stitch_search_report_export(photos):
    work = photos.parent
    shape = ["--input-shape", "3,16,16"]
    done = cli(work, "stitch", "--a", A, "--b", B, *shape, "--data", "imagefolder:my photos",
               "--out", "sn")  # fmt: skip
    assert done.returncode == 0, done.stderr
    recorded = json.loads((work / "sn" / "supernet.json").read_text())["data"]
    assert recorded.startswith(f"imagefolder:{photos}?") and "size=16" in recorded
    steps = [
        ("search", "sn", "--out", "run", "--budget", "8", "--population", "4", "--algorithm", "rs"),
        ("report", "run"),
        ("export", "run", "--solution", "parent-b", "--out", "exported"),
    ]
    for args in steps:
        done = cli(work, *args)
        assert done.returncode == 0, f"{args}: {done.stderr}"
    assert (work / "run" / "report.html").is_file()
    assert (work / "exported" / "offspring.py").is_file()


@pytest.mark.parametrize(
    "spec, shape, says",
    [
        ("imagefolder:my photos?size=20", "3,16,16", "gives inputs of shape (3, 20, 20)"),
        ("mnist5k", "3,16,16", "gives inputs of shape (1, 28, 28)"),
        ("imagefolder:my photos", "3,16,16", "3 classes, the parents output 10"),
    ],
)
def test_data_that_does_not_fit_is_refused_in_one_line(photos, spec, shape, says):
    b = B if "classes" not in says else "demo:mobilenet_like?in_channels=3"
    a = A if "classes" not in says else "demo:resnet_like?in_channels=3"
    done = cli(photos.parent, "stitch", "--a", a, "--b", b, "--input-shape", shape,
               "--data", spec, "--out", "refused")  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert not (photos.parent / "refused").exists()


def test_parents_preprocessing_fills_the_folder_spec(photos, capsys):
    tv = "torchvision:resnet18?weights=IMAGENET1K_V1"  # its transforms: no download needed
    spec = resolve_data(f"imagefolder:{photos}", [tv, "torchvision:resnet18"], (3, 112, 112))
    assert "size=112" in spec and "resize=128" in spec  # 256/224 of the crop
    assert "mean=0.485,0.456,0.406" in spec and "interpolation=bilinear" in spec
    timm = "timm:vit_tiny_patch16_224?pretrained=true"  # mean/std 0.5, bicubic
    mixed = resolve_data(f"imagefolder:{photos}", [tv, timm], (3, 224, 224), progress=True)
    assert "mean=0.485" in mixed and "parents preprocess differently" in capsys.readouterr().err
    three = resolve_data(f"imagefolder:{photos}", ["demo:resnet_like", timm, tv], (3, 224, 224))
    assert "mean=0.5,0.5,0.5" in three and "interpolation=bicubic" in three  # B's: A has none
    assert "C: " in capsys.readouterr().err  # B and C disagree, A says nothing: still told
    own = resolve_data(f"imagefolder:{photos}?mean=0.5,0.5,0.5", [tv, timm], (3, 64, 64))
    assert "resize" not in own and own.endswith("mean=0.5,0.5,0.5&size=64")
