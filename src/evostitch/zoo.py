"""Small demo parents: two classifiers and two segmenters, their training and cache.

All four are torch.fx traceable, have three resolution stages and differ in
architecture, so that stitching them is not trivial. Trained weights are cached as
safetensors in ``~/.cache/evostitch/parents`` (or ``$EVOSTITCH_CACHE/parents``), next
to a JSON file with the test metrics and a hash of architecture and training config;
a cache whose hash differs is retrained.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from evostitch.data import DatasetInfo, dataset_info, load_dataset
from evostitch.errors import EvostitchError
from evostitch.metrics import evaluate, make_metric

ZOO_VERSION = 1  # bump when training changes in a way the config hash cannot see


def conv_bn(
    cin: int,
    cout: int,
    k: int = 3,
    stride: int = 1,
    *,
    groups: int = 1,
    dilation: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ activation), 'same' padding."""
    pad = dilation * (k - 1) // 2
    layers = [
        nn.Conv2d(cin, cout, k, stride, pad, dilation, groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return nn.Sequential(*layers, *([act(inplace=True)] if act else []))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs plus a (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, act=None)
        same = stride == 1 and cin == cout
        self.shortcut = nn.Identity() if same else conv_bn(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNetLike(nn.Module):
    """Residual classifier, stages of 16/32/64 channels at full, 1/2 and 1/4 resolution."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = conv_bn(in_channels, w1)
        self.layer1 = nn.Sequential(BasicBlock(w1, w1), BasicBlock(w1, w1))
        self.layer2 = nn.Sequential(BasicBlock(w1, w2, 2), BasicBlock(w2, w2))
        self.layer3 = nn.Sequential(BasicBlock(w2, w3, 2), BasicBlock(w3, w3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear project (+ residual)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        hidden = cin * expand
        self.block = nn.Sequential(
            conv_bn(cin, hidden, 1, act=nn.ReLU6),
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, cout, 1, act=None),
        )
        self.residual = stride == 1 and cin == cout  # fixed at build time: fx-safe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetLike(nn.Module):
    """Depthwise-separable classifier, stages of 24/32/48 channels, 1x1 head of 128."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, 16, act=nn.ReLU6)
        self.stage1 = nn.Sequential(InvertedResidual(16, 16, 1, 1), InvertedResidual(16, 24, 1, 2))
        self.stage2 = nn.Sequential(InvertedResidual(24, 32, 2, 2), InvertedResidual(32, 32))
        self.stage3 = nn.Sequential(InvertedResidual(32, 48, 2), InvertedResidual(48, 48))
        self.head = conv_bn(48, 128, 1, act=nn.ReLU6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stage3(self.stage2(self.stage1(self.stem(x)))))
        return self.classifier(torch.flatten(self.pool(x), 1))


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, cout), conv_bn(cout, cout))


class UNetLike(nn.Module):
    """Tiny U-Net: 16/32/64 channels at 1, 1/2, 1/4 resolution, skip connections.
    Input height and width must be multiples of 4."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.enc1, self.enc2, self.mid = (
            double_conv(in_channels, 16),
            double_conv(16, 32),
            double_conv(32, 64),
        )
        self.pool = nn.MaxPool2d(2)
        self.up2, self.dec2 = nn.ConvTranspose2d(64, 32, 2, 2), double_conv(64, 32)
        self.up1, self.dec1 = nn.ConvTranspose2d(32, 16, 2, 2), double_conv(32, 16)
        self.head = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


class FCNLike(nn.Module):
    """DeepLab-style encoder to 1/4 resolution, dilated context branches, bilinear
    upsampling of the logits back to the input size."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, 16)
        self.down1 = nn.Sequential(conv_bn(16, 32, stride=2), conv_bn(32, 32))
        self.down2 = nn.Sequential(conv_bn(32, 64, stride=2), conv_bn(64, 64, dilation=2))
        self.branches = nn.ModuleList(
            [conv_bn(64, 24, 1), conv_bn(64, 24, dilation=2), conv_bn(64, 24, dilation=4)]
        )
        self.project = conv_bn(72, 48, 1)
        self.classifier = nn.Conv2d(48, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.down2(self.down1(self.stem(x)))
        f = self.project(torch.cat([b(f) for b in self.branches], 1))
        logits = self.classifier(f)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


DEMO_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet_like": ResNetLike,
    "mobilenet_like": MobileNetLike,
    "unet_like": UNetLike,
    "fcn_like": FCNLike,
}
DEMO_PARENTS = {
    "classification": ("mnist5k", ("resnet_like", "mobilenet_like")),
    "segmentation": ("nuclei", ("unet_like", "fcn_like")),
}
# Training defaults per model: epochs, batch size, peak learning rate.
TRAIN_DEFAULTS = {
    "resnet_like": {"epochs": 4, "batch_size": 64, "lr": 3e-3},
    "mobilenet_like": {"epochs": 4, "batch_size": 64, "lr": 3e-3},
    "unet_like": {"epochs": 4, "batch_size": 16, "lr": 3e-3},
    "fcn_like": {"epochs": 4, "batch_size": 16, "lr": 3e-3},
}


def build_demo_model(name: str, in_channels: int = 1, num_classes: int | None = None) -> nn.Module:
    """An untrained demo model by registry name (see DEMO_MODELS); `num_classes` defaults
    to 10 for the classifiers and 2 for the segmenters."""
    if name not in DEMO_MODELS:
        raise EvostitchError(f"unknown demo model {name!r}: use {', '.join(DEMO_MODELS)}")
    extra = {} if num_classes is None else {"num_classes": num_classes}
    return DEMO_MODELS[name](in_channels=in_channels, **extra)


def fit(
    model: nn.Module,
    train_set: Dataset,
    info: DatasetInfo,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[float]:
    """Adam with a cosine learning-rate decay for `steps` batches; returns the losses."""
    from rich.progress import Progress

    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    ignore = info.ignore_index if info.ignore_index is not None else -100
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        generator=gen,
        drop_last=len(train_set) > batch_size,
    )
    losses: list[float] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"training {type(model).__name__}", total=steps)
        while len(losses) < steps:
            for x, y in loader:
                loss = F.cross_entropy(model(x.to(device)), y.to(device), ignore_index=ignore)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.update(
                    task, advance=1, description=f"{type(model).__name__} loss {losses[-1]:.3f}"
                )
                if len(losses) == steps:
                    break
    return losses


def _plan(
    name: str, dataset_spec: str, epochs: int | None, steps: int | None, seed: int
) -> dict[str, Any]:
    """Everything that determines a trained parent (its hash names the cache entry)."""
    defaults = TRAIN_DEFAULTS.get(name, {"epochs": 2, "batch_size": 32, "lr": 1e-3})
    if steps is None:
        n = len(load_dataset(dataset_spec, "train", seed=seed))
        steps = (epochs or defaults["epochs"]) * max(1, n // defaults["batch_size"])
    info = dataset_info(dataset_spec)
    model = build_demo_model(name, info.input_shape[0], info.num_classes)
    return {
        "zoo_version": ZOO_VERSION,
        "name": name,
        "dataset": dataset_spec,
        "seed": seed,
        "steps": steps,
        "batch_size": defaults["batch_size"],
        "lr": defaults["lr"],
        "architecture": repr(model),
        "torch": torch.__version__.split("+")[0],
    }


def _build_seeded(name: str, info: DatasetInfo, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_demo_model(name, info.input_shape[0], info.num_classes)


def train_parent(
    name: str,
    dataset_spec: str,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[nn.Module, dict[str, float]]:
    """Train demo model `name` on the train split; returns it (eval mode) and its test
    metrics plus ``train_seconds``. `steps` overrides `epochs`."""
    plan = _plan(name, dataset_spec, epochs, steps, seed)
    info = dataset_info(dataset_spec)
    model = _build_seeded(name, info, seed)
    start = time.perf_counter()
    fit(
        model,
        load_dataset(dataset_spec, "train", seed=seed),
        info,
        steps=plan["steps"],
        batch_size=plan["batch_size"],
        lr=plan["lr"],
        seed=seed,
        device=device,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    metric = make_metric(info.task, info.num_classes, info.ignore_index or 255)
    test = evaluate(model, load_dataset(dataset_spec, "test", seed=seed), metric, device=device)
    return model.eval(), {**test, "train_seconds": seconds}


def cache_dir_default() -> Path:
    """``$EVOSTITCH_CACHE/parents``, else ``~/.cache/evostitch/parents``."""
    root = os.environ.get("EVOSTITCH_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "evostitch") / "parents"


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_or_train_parent(
    name: str,
    dataset_spec: str,
    *,
    cache_dir: str | Path | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[nn.Module, dict[str, float]]:
    """A trained demo parent from the cache, trained and cached first if missing or stale."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    plan = _plan(name, dataset_spec, epochs, steps, seed)
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir).expanduser() if cache_dir else cache_dir_default()
    stem = f"{name}-{re.sub(r'[^A-Za-z0-9._-]+', '_', dataset_spec)[-60:]}-s{seed}"
    weights, meta = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    info = dataset_info(dataset_spec)
    try:
        record = json.loads(meta.read_text())
        if record["hash"] == digest:
            model = _build_seeded(name, info, seed)
            with safe_open(str(weights), framework="pt") as f:
                if (f.metadata() or {}).get("hash") != digest:
                    raise ValueError("weights do not match their JSON record")
                model.load_state_dict({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
            return model.to(device).eval(), record["metrics"]
    except (OSError, ValueError, KeyError, RuntimeError):
        pass  # missing, stale or damaged: retrain
    model, metrics = train_parent(
        name, dataset_spec, steps=plan["steps"], seed=seed, device=device, progress=progress
    )
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(weights, lambda p: save_file(state, p, metadata={"hash": digest}))
    record = {"hash": digest, "metrics": metrics, "config": plan}
    _atomic_write(meta, lambda p: Path(p).write_text(json.dumps(record, indent=1)))
    return model, metrics


def get_demo_parents(
    task: str,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    steps: int | None = None,
) -> tuple[nn.Module, nn.Module, dict]:
    """The two trained demo parents for `task` ("classification" on mnist5k or
    "segmentation" on nuclei) and an info dict with dataset and test metrics.
    `steps` overrides the training length (tests train for a few steps)."""
    if task not in DEMO_PARENTS:
        raise EvostitchError(f"no demo parents for task {task!r}: use {', '.join(DEMO_PARENTS)}")
    spec, names = DEMO_PARENTS[task]
    models, metrics = [], {}
    for name in names:
        model, metrics[name] = load_or_train_parent(
            name, spec, cache_dir=cache_dir, steps=steps, device=device, progress=progress
        )
        models.append(model)
    if progress:
        from rich.console import Console

        key = "accuracy" if task == "classification" else "miou"
        Console(stderr=True, soft_wrap=True).print(
            f"demo parents on {spec} (test {key}): "
            + ", ".join(f"{n} {metrics[n][key]:.4f}" for n in names)
        )
    info = {
        "task": task,
        "dataset": spec,
        "dataset_info": dataset_info(spec),
        "names": names,
        "metrics": metrics,
    }
    return models[0], models[1], info
