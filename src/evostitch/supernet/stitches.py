"""Stitching layers: small trainable maps from one parent's tensor to the other's.

- feature map -> feature map: a 1x1 convolution; if the spatial sizes differ by an
  integer factor r, average pooling by r first (downsampling) or bilinear
  interpolation after (upsampling);
- vector -> vector: a linear layer;
- tokens -> tokens: a linear layer on the channel dimension;
- feature map <-> tokens (a CNN and a ViT): the tokens' patches are laid out as the
  map's positions (`Node.grid`), then as map -> map. Prefix tokens of the source (a
  class token) are dropped; those of the target are a second linear map (`prefix`) of
  the source's mean over positions.

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
        ratio = size_ratio(src, dst)
        if ratio is None:
            raise SupernetError(
                f"cannot stitch a {src.kind} of shape {src.shape[1:]} onto a {dst.kind} "
                f"of shape {dst.shape[1:]}"
            )
        self.kind = src.kind if src.kind == dst.kind else f"{src.kind}->{dst.kind}"
        # token <-> map stitches work on grids: the source's patches as a map
        from_tokens = src.kind == TOKENS and dst.kind == MAP
        self.src_prefix = src.prefix if from_tokens else 0
        self.src_grid = src.grid if from_tokens else None
        self.to_tokens = src.kind == MAP and dst.kind == TOKENS
        grid = dst.grid if src.kind != dst.kind else dst.spatial
        self.grid = tuple(grid)
        self.down = ratio if ratio > 1 else 1
        self.out_size = tuple(grid) if ratio < -1 else None
        cin, cout = src.channels, dst.channels
        spatial = src.kind == MAP or dst.kind == MAP
        self.layer = nn.Conv2d(cin, cout, 1) if spatial else nn.Linear(cin, cout)
        n_prefix = dst.prefix if self.to_tokens else 0
        self.prefix = nn.Linear(cin, n_prefix * cout) if n_prefix else None
        self.n_prefix = n_prefix
        with torch.no_grad():
            for layer in (self.layer, self.prefix):
                if layer is not None:
                    layer.bias.zero_()
            if cin == cout:
                eye = torch.eye(cout)
                self.layer.weight.copy_(eye.view_as(self.layer.weight))
                if self.prefix is not None:
                    self.prefix.weight.copy_(eye.repeat(n_prefix, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in (VECTOR, TOKENS):
            return self.layer(x)
        if self.kind not in (MAP, f"{TOKENS}->{MAP}", f"{MAP}->{TOKENS}"):
            raise SupernetError(f"unknown stitch kind {self.kind}")
        x = self._as_map(x)
        y = self.layer(F.avg_pool2d(x, self.down) if self.down > 1 else x)
        if self.out_size is not None:
            y = F.interpolate(y, size=self.out_size, mode="bilinear", align_corners=False)
        if not self.to_tokens:
            return y
        tokens = y.flatten(2).transpose(1, 2)
        if self.prefix is None:
            return tokens
        head = self.prefix(x.mean((2, 3))).view(x.shape[0], self.n_prefix, -1)
        return torch.cat([head, tokens], 1)

    def _as_map(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens [N, k + g*g, C] -> their patches as a map [N, C, g, g]; maps unchanged."""
        if x.dim() == 4:
            return x
        patches = x[:, self.src_prefix :]
        return patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.src_grid)

    def rows(self, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Input and target rows, [n, cin] and [n, cout], of each linear map inside
        (`layer`, then `prefix` if any).

        A least-squares fit of each to its rows minimises the stitch's MSE (exactly when
        it does not upsample; upsampling stitches are fitted at the source's size).
        """
        if self.kind in (VECTOR, TOKENS):
            return [(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]))]
        x = self._as_map(x)
        pooled = F.avg_pool2d(x, self.down) if self.down > 1 else x
        target = y
        if self.to_tokens:
            patches = y[:, self.n_prefix :].transpose(1, 2)
            target = patches.reshape(y.shape[0], y.shape[2], *self.grid)
        if target.shape[2:] != pooled.shape[2:]:
            target = F.adaptive_avg_pool2d(target, pooled.shape[2:])
        rows = [(_channels_last(pooled), _channels_last(target))]
        if self.prefix is not None:
            rows.append((x.mean((2, 3)), y[:, : self.n_prefix].reshape(y.shape[0], -1)))
        return rows

    def set_linear(self, weight: torch.Tensor, bias: torch.Tensor, index: int = 0) -> None:
        """Set linear map `index` (0: `layer`, 1: `prefix`) to `x @ weight.T + bias`
        (weight [cout, cin])."""
        layer = (self.layer, self.prefix)[index]
        with torch.no_grad():
            layer.weight.copy_(weight.view_as(layer.weight))
            layer.bias.copy_(bias)

    def extra_repr(self) -> str:
        return f"down={self.down}, out_size={self.out_size}"


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
