"""A small Vision Transformer classifier (`demo:vit_like`), traceable by torch.fx.

Patches of `patch_size` pixels are embedded by a strided convolution, a learned class
token and learned position embeddings are added, then pre-norm encoder blocks, a final
LayerNorm and a linear head on the class token. Every block input and output is a token
tensor [N, T, C] with T = 1 + (image_size / patch_size)^2.

Written for stitching: no operation depends on the batch size (the class token takes a
padded slot instead of a batch-wide `expand`), and the attention is plain tensor ops, so
the traced graph holds the token tensors, the patch embedding's feature map and the
attention internals, nothing opaque.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError


class Attention(nn.Module):
    """Multi-head self-attention: one linear for q, k and v, scaled dot products, a
    projection back to the width."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (width // heads) ** -0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [N, T, 3C] -> [3, N, heads, T, C / heads]
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).flatten(2))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTLike(nn.Module):
    """Vision Transformer classifier for square images of `image_size` pixels."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 32,
        patch_size: int = 4,
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        if image_size < 1 or patch_size < 1 or image_size % patch_size:
            raise ModelError(
                f"vit_like: image_size {image_size} must be a multiple of patch_size {patch_size}"
            )
        if width % heads:
            raise ModelError(f"vit_like: width {width} must be a multiple of heads {heads}")
        self.patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, width, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.patches, width) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(width, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(x).permute(0, 2, 3, 1).flatten(1, 2)  # [N, P, C]
        # prepend an empty slot for the class token, then add it with the positions
        embed = F.pad(self.cls_token, (0, 0, 0, self.patches)) + self.pos_embed  # [1, T, C]
        tokens = F.pad(patches, (0, 0, 1, 0)) + embed
        tokens = self.norm(self.blocks(tokens))
        return self.head(tokens[:, 0])
