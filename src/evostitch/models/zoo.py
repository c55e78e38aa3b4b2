"""Small demo architectures (`demo:NAME` specs): three classifiers and two segmenters.

All are torch.fx traceable. The CNNs have three resolution stages and differ in
architecture, so that stitching them is not trivial; `vit_like` (in `vit.py`) is a small
Vision Transformer whose blocks pass tokens [N, T, C], for stitching CNNs with
transformers. `evostitch.demo.parents` trains and caches them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .vit import ViTLike


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
    "vit_like": ViTLike,
}


def build_demo_model(
    name: str, in_channels: int = 1, num_classes: int | None = None, **options: Any
) -> nn.Module:
    """An untrained demo model by registry name (see DEMO_MODELS); `num_classes` defaults
    to 10 for the classifiers and 2 for the segmenters. `options` go to the model's
    constructor (e.g. `image_size`, `patch_size` of `vit_like`)."""
    if name not in DEMO_MODELS:
        raise ModelError(f"unknown demo model {name!r}: use {', '.join(DEMO_MODELS)}")
    builder = DEMO_MODELS[name]
    known = set(inspect.signature(builder).parameters) - {"in_channels", "num_classes"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ModelError(
            f"demo model {name!r} has no option {', '.join(unknown)}"
            + (f" (options: {', '.join(sorted(known))})" if known else "")
        )
    extra = {} if num_classes is None else {"num_classes": num_classes}
    return builder(in_channels=in_channels, **extra, **options)
