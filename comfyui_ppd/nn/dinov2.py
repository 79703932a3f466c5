"""One DINOv2 ViT, shared by the Depth Anything v2 and MoGe-2 semantic encoders and Pi3 (with register tokens)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..checkpoints import count_blocks
from ..errors import CheckpointError
from .layers import Mlp


@dataclass(frozen=True)
class ViTConfig:
    """DINOv2 sizes; the head count is not stored in checkpoints (released models use 64-dim heads)."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    patch_size: int = 14
    mlp_hidden: int = 4096
    pos_grid: int = 37           # the stored positional embedding covers pos_grid x pos_grid patches
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    num_register_tokens: int = 0  # DINOv2-reg: tokens inserted after the class token, without positions
    mask_token: bool = True       # Pi3 deletes the (inference-unused) mask token


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch, added to the residual in one pass."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, branch: Tensor, residual: Tensor) -> Tensor:
        return torch.addcmul(residual, self.gamma, branch)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:                      # (B,3,H,W) -> (B, H/14*W/14, D)
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads).unbind(0)
        return self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)"))


class Block(nn.Module):
    """x += ls1(attn(norm1(x), *extra)); x += ls2(mlp(norm2(x))); `attn` defaults to plain self-attention
    (Pi3's decoder passes an attention that takes RoPE tables as `extra`)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, attn: nn.Module | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads) if attn is None else attn
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden, gelu="none")
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor, *extra: object) -> Tensor:
        x = self.ls1(self.attn(self.norm1(x), *extra), x)
        return self.ls2(self.mlp(self.norm2(x)), x)


class DinoVisionTransformer(nn.Module):
    """DINOv2 backbone; `tokens(x, layers)` returns final-norm tokens (class token first) of chosen blocks."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.patch_embed = PatchEmbed(c.embed_dim, c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.pos_grid ** 2, c.embed_dim))
        if c.mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, c.embed_dim))    # unused at inference
        if c.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, c.num_register_tokens, c.embed_dim))
        self.blocks = nn.ModuleList(Block(c.embed_dim, c.num_heads, c.mlp_hidden) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.embed_dim, eps=1e-6)

    def interpolate_pos_encoding(self, h0: int, w0: int) -> Tensor:
        """(1, 1+h0*w0, D) positional embedding for an h0 x w0 patch grid, resized as DINOv2 does.

        Bicubic in float32 with scale factors (h0+0.1)/M and (w0+0.1)/M (not an output size): the
        offset shifts the sampling grid, so an output-size resize would differ (by ~0.5 on real data).
        With offset 0 (the register models) the output size (h0, w0) is given instead, with antialias.
        """
        m = self.config.pos_grid
        pos = self.pos_embed
        if h0 == w0 == m:
            return pos
        off = self.config.interpolate_offset
        grid = rearrange(pos[:, 1:].float(), "1 (h w) d -> 1 d h w", h=m, w=m)
        antialias = self.config.interpolate_antialias
        if off:
            grid = F.interpolate(grid, scale_factor=((h0 + off) / m, (w0 + off) / m), mode="bicubic",
                                 align_corners=False, antialias=antialias)
        else:
            grid = F.interpolate(grid, size=(h0, w0), mode="bicubic", align_corners=False, antialias=antialias)
        patch = rearrange(grid, "1 d h w -> 1 (h w) d")
        return torch.cat([pos[:, :1].float(), patch], dim=1).to(pos.dtype)

    def embed(self, x: Tensor) -> Tensor:
        """(B,3,H,W) normalised image -> (B, 1+R+N, D) tokens: class token, R registers, patches.

        Positions are added before the registers are inserted, so the registers get none."""
        b, _, h, w = x.shape
        p = self.config.patch_size
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(h // p, w // p).to(tokens.dtype)
        if self.config.num_register_tokens:
            registers = self.register_tokens.expand(b, -1, -1).to(tokens.dtype)
            tokens = torch.cat([tokens[:, :1], registers, tokens[:, 1:]], dim=1)
        return tokens

    def tokens(self, x: Tensor, layers: list[int]) -> list[Tensor]:
        """Final-LayerNorm tokens (B, 1+R+N, D) after each block index in `layers` (0-based)."""
        x = self.embed(x)
        wanted, out = set(layers), {}
        for i, block in enumerate(self.blocks[: max(layers) + 1]):
            x = block(x)
            if i in wanted:
                out[i] = self.norm(x)
        return [out[i] for i in layers]


def vit_config(sd: Mapping[str, Tensor], num_heads: int | None, label: str) -> ViTConfig:
    """DINOv2 sizes from the shapes of a backbone state dict; heads default to embed_dim / 64 (every release)."""
    try:
        dim, _, patch, _ = sd["patch_embed.proj.weight"].shape
        tokens = sd["pos_embed"].shape[1] - 1
        grid = int(round(tokens ** 0.5))
        if any(k.startswith("register_tokens") for k in sd):
            raise CheckpointError(label, "a DINOv2 backbone without register tokens",
                                  "register tokens", "DINOv2-reg backbones are not used by PPD.")
        heads = num_heads or max(1, dim // 64)
        if dim % heads or grid * grid != tokens:
            raise ValueError(f"{dim} channels / {heads} heads, {tokens} position tokens")
        return ViTConfig(embed_dim=dim, depth=count_blocks(sd), num_heads=heads, patch_size=patch,
                         mlp_hidden=sd["blocks.0.mlp.fc1.weight"].shape[0], pos_grid=grid)
    except (KeyError, ValueError) as e:
        raise CheckpointError(label, "a DINOv2 ViT backbone", f"inconsistent or missing tensors ({e})",
                              "The file is incomplete or from another model; download it again.") from e
