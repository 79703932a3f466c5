"""The semantic-encoder interface: image (B,3,H,W) in [0,1] -> tokens (B, gh*gw, C) on the DiT's coarse grid.

The ViT sees the image resized to (gh * patch, gw * patch), so its patch grid equals the DiT's token grid.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_TOKEN_PX = 16   # pixels per output token when no grid is given: PPD's coarse grid (2 x DiT patch 8)


def encoder_input_size(grid_h: int, grid_w: int, patch: int) -> tuple[int, int]:
    """ViT input size for a (grid_h, grid_w) token grid: one `patch`-px ViT patch per token."""
    return grid_h * patch, grid_w * patch


class SemanticEncoder(nn.Module):
    """Common interface: `kind`, `semantic_dim`, `patch_size`, `backbone_input(image, grid)`, `forward`."""

    kind: str
    semantic_dim: int

    @property
    def patch_size(self) -> int:
        raise NotImplementedError

    def backbone_input(self, image: Tensor, token_px: int = DEFAULT_TOKEN_PX) -> Tensor:
        """The normalised, resized ViT input (B,3,gh*patch,gw*patch) for a `token_px` token grid."""
        raise NotImplementedError

    def encode(self, x: Tensor, grid_h: int, grid_w: int) -> Tensor:
        raise NotImplementedError

    def forward(self, image: Tensor, token_px: int = DEFAULT_TOKEN_PX) -> Tensor:
        """(B,3,H,W) in [0,1], H and W multiples of `token_px` -> (B, H/token_px * W/token_px, C)."""
        return self.encode(self.backbone_input(image, token_px), *token_grid(image, token_px))


def token_grid(image: Tensor, token_px: int) -> tuple[int, int]:
    """The (rows, cols) token grid of an RGB batch whose sides are multiples of `token_px`."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise InputError(f"semantic encoder: expected an RGB batch (B,3,H,W), got shape {tuple(image.shape)}; "
                         "convert the image to 3 channels first.")
    if image.shape[-2] % token_px or image.shape[-1] % token_px:
        raise InputError(f"semantic encoder: height and width must be multiples of {token_px}, got "
                         f"{tuple(image.shape[-2:])}; resize with comfyui_ppd.imaging.resize_keep_aspect.")
    return image.shape[-2] // token_px, image.shape[-1] // token_px


VIT_ANCHOR = "patch_embed.proj.weight"
ENCODER_EXPECTED = "a semantic encoder (depth_anything_v2_vitl.pth or MoGe-2 model.pt)"
ENCODER_FIX = "Pick the semantic-encoder file for the encoder input."
