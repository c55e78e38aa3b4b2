"""Stitching layers: small trainable maps from one parent's tensor to the other's.

- feature map -> feature map: a 1x1 convolution; if the spatial sizes differ by an
  integer factor r, average pooling by r first (downsampling) or bilinear
  interpolation after (upsampling);
- vector -> vector: a linear layer;
- tokens -> tokens: a linear layer on the channel dimension.

Initialisation: when input and output channels agree, the identity (a stitch starts
as a pass-through, the natural guess between layers of equal width); otherwise
PyTorch's default (Kaiming-uniform) initialisation. Biases start at zero.
`rows` and `set_linear` let stitch training start from a least-squares fit instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SupernetError
from ..graph import MAP, TOKENS, VECTOR, Node
from ..matching.similarity import size_ratio


class Stitch(nn.Module):
    """Maps a tensor shaped like `src` onto the shape of `dst`."""

    def __init__(self, src: Node, dst: Node) -> None:
        super().__init__()
        if src.kind != dst.kind:
            raise SupernetError(f"cannot stitch a {src.kind} onto a {dst.kind}")
        ratio = size_ratio(src, dst)
        if ratio is None:
            raise SupernetError(f"cannot stitch size {src.spatial} onto {dst.spatial}")
        self.kind = src.kind
        self.down = ratio if ratio > 1 else 1
        self.out_size = tuple(dst.spatial) if ratio < -1 else None
        cin, cout = src.channels, dst.channels
        self.layer = nn.Conv2d(cin, cout, 1) if src.kind == MAP else nn.Linear(cin, cout)
        with torch.no_grad():
            self.layer.bias.zero_()
            if cin == cout:
                eye = torch.eye(cout)
                self.layer.weight.copy_(eye.view_as(self.layer.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == MAP:
            if self.down > 1:
                x = F.avg_pool2d(x, self.down)
            x = self.layer(x)
            if self.out_size is not None:
                x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
            return x
        if self.kind in (VECTOR, TOKENS):
            return self.layer(x)
        raise SupernetError(f"unknown stitch kind {self.kind}")

    def rows(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and target rows, [n, cin] and [n, cout], of the linear map inside.

        A least-squares fit of `layer` to these minimises the stitch's MSE (exactly when
        it does not upsample; upsampling stitches are fitted at the source's size).
        """
        if self.kind != MAP:
            return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        if self.down > 1:
            x = F.avg_pool2d(x, self.down)
        if y.shape[2:] != x.shape[2:]:
            y = F.adaptive_avg_pool2d(y, x.shape[2:])
        return _channels_last(x), _channels_last(y)

    def set_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set the map to `x @ weight.T + bias` (weight [cout, cin])."""
        with torch.no_grad():
            self.layer.weight.copy_(weight.view_as(self.layer.weight))
            self.layer.bias.copy_(bias)

    def extra_repr(self) -> str:
        return f"down={self.down}, out_size={self.out_size}"


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
