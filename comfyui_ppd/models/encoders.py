"""Semantic front ends: image (B,3,H,W) in [0,1], H and W multiples of 16 -> tokens (B, H/16*W/16, C).

Both resize the image by 7/8 so the 14-px ViT patch grid equals the DiT's 16-px grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import InputError
from .dinov2 import DinoVisionTransformer, ViTConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def encoder_input_size(height: int, width: int, patch: int = 14) -> tuple[int, int]:
    """ViT input size for a PPD image: ((H//16)*14, (W//16)*14)."""
    return (height // 16) * patch, (width // 16) * patch


def _check_image(image: Tensor) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise InputError(f"semantic encoder: expected an RGB batch (B,3,H,W), got shape {tuple(image.shape)}; "
                         "convert the image to 3 channels first.")
    if image.shape[-2] % 16 or image.shape[-1] % 16:
        raise InputError(f"semantic encoder: height and width must be multiples of 16, got "
                         f"{tuple(image.shape[-2:])}; resize with comfyui_ppd.imaging.resize_keep_aspect.")


class SemanticEncoder(nn.Module):
    """Common interface: `kind`, `semantic_dim`, `backbone_input(image)`, `forward(image)`."""

    kind: str
    semantic_dim: int

    def forward(self, image: Tensor) -> Tensor:
        _check_image(image)
        return self.encode(self.backbone_input(image), image.shape[-2] // 16, image.shape[-1] // 16)


class DepthAnythingV2Encoder(SemanticEncoder):
    """Depth Anything v2: ImageNet normalisation, bicubic resize, final-norm patch tokens of the ViT."""

    kind = "da2"

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.pretrained = DinoVisionTransformer(config)
        self.semantic_dim = config.embed_dim

    def backbone_input(self, image: Tensor) -> Tensor:
        """Normalise, then bicubic (A=-0.75, align_corners=False, no antialias) to ((H//16)*14, (W//16)*14)."""
        x = image.float()
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = F.interpolate((x - mean) / std, size=encoder_input_size(*x.shape[-2:], self.pretrained.config.patch_size),
                          mode="bicubic", align_corners=False)
        return x.to(self.pretrained.patch_embed.proj.weight.dtype)

    def encode(self, x: Tensor, grid_h: int, grid_w: int) -> Tensor:
        last = len(self.pretrained.blocks) - 1
        return self.pretrained.tokens(x, [last])[0][:, 1:]


class MoGe2Encoder(SemanticEncoder):
    """MoGe-2: antialiased bilinear resize, normalise, sum of 1x1 projections of chosen block outputs."""

    kind = "moge2"

    def __init__(self, config: ViTConfig, intermediate_layers: list[int], dim_out: int) -> None:
        super().__init__()
        self.backbone = DinoVisionTransformer(config)
        self.intermediate_layers = list(intermediate_layers)
        self.output_projections = nn.ModuleList(
            nn.Conv2d(config.embed_dim, dim_out, 1) for _ in self.intermediate_layers)
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.semantic_dim = dim_out

    def backbone_input(self, image: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Bilinear antialiased resize of the [0,1] image first (to `size`, default the PPD grid), then normalisation."""
        size = size or encoder_input_size(*image.shape[-2:], self.backbone.config.patch_size)
        x = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.image_mean.float()) / self.image_std.float()
        return x.to(self.backbone.patch_embed.proj.weight.dtype)

    def encode(self, x: Tensor, grid_h: int, grid_w: int) -> Tensor:
        return rearrange(self.feature_map(x, grid_h, grid_w)[0], "b c h w -> b (h w) c")

    def feature_map(self, x: Tensor, grid_h: int, grid_w: int) -> tuple[Tensor, Tensor]:
        """(B, dim_out, h, w) sum of the projected layers, and the last listed layer's class token (B, D)."""
        layers = self.backbone.tokens(x, self.intermediate_layers)
        total = 0
        for tokens, proj in zip(layers, self.output_projections):
            grid = rearrange(tokens[:, 1:], "b (h w) c -> b c h w", h=grid_h, w=grid_w)
            total = total + proj(grid)
        return total, layers[-1][:, 0]
