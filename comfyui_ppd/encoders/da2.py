"""Depth Anything v2 as a semantic encoder: the final-norm patch tokens of its DINOv2 ViT."""
from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoints import Checkpoint, prefixes_of, subdict
from ..family import Family, ModelFile, has_key, single_prefix
from ..nn.dinov2 import DinoVisionTransformer, ViTConfig, vit_config
from .base import (
    DEFAULT_TOKEN_PX,
    ENCODER_EXPECTED,
    ENCODER_FIX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIT_ANCHOR,
    SemanticEncoder,
    encoder_input_size,
    token_grid,
)


class DepthAnythingV2Encoder(SemanticEncoder):
    """Depth Anything v2: ImageNet normalisation, bicubic resize, final-norm patch tokens of the ViT."""

    kind = "da2"

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.pretrained = DinoVisionTransformer(config)
        self.semantic_dim = config.embed_dim

    @property
    def patch_size(self) -> int:
        return self.pretrained.config.patch_size

    def backbone_input(self, image: Tensor, token_px: int = DEFAULT_TOKEN_PX) -> Tensor:
        """Normalise, then bicubic (A=-0.75, align_corners=False, no antialias) to the grid times the patch."""
        x = image.float()
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = F.interpolate((x - mean) / std, size=encoder_input_size(*token_grid(image, token_px), self.patch_size),
                          mode="bicubic", align_corners=False)
        return x.to(self.pretrained.patch_embed.proj.weight.dtype)

    def encode(self, x: Tensor, grid_h: int, grid_w: int) -> Tensor:
        last = len(self.pretrained.blocks) - 1
        return self.pretrained.tokens(x, [last])[0][:, 1:]


FILE = ModelFile("depth_anything_v2_vitl.pth", ("encoder",), "da2",
                 "https://huggingface.co/depth-anything/Depth-Anything-V2-Large/resolve/main/"
                 "depth_anything_v2_vitl.pth",
                 "~1.3 GB",
                 "Depth Anything v2 ViT-L: the semantic encoder for ppd.pth.", defaults=("encoder",))


class DA2Family(Family):
    """A lone DINOv2 backbone without registers (Depth Anything v2's `pretrained.*`, or bare)."""

    name = semantics = "da2"
    slot, label, files = "encoder", "Depth Anything v2", (FILE,)
    title = "a Depth Anything v2 model"
    advice = "It is a semantic encoder: give it to the encoder input (load_semantic_encoder)."

    def detect(self, keys: Collection[str]) -> int:
        vits = prefixes_of(keys, VIT_ANCHOR)
        if len(vits) != 1 or has_key(keys, "register_tokens") or has_key(keys, "output_projections."):
            return 0
        return 2 if has_key(keys, "depth_head.") or vits[0].endswith("pretrained.") else 1

    def part(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        prefix = single_prefix(ckpt, VIT_ANCHOR, "ViT backbones", ENCODER_EXPECTED, ENCODER_FIX)
        return {"pretrained." + k: v for k, v in subdict(ckpt.tensors, prefix).items()}

    def config_from(self, sd: Mapping[str, Tensor], ckpt: Checkpoint, *, num_heads: int | None = None,
                    **options: Any) -> ViTConfig:
        num_heads = num_heads or int(ckpt.metadata.get("ppd.num_heads", 0)) or None   # our converter's note
        return vit_config(subdict(sd, "pretrained."), num_heads, ckpt.label)

    def build(self, config: ViTConfig) -> nn.Module:
        return DepthAnythingV2Encoder(config)

    def export(self, sd: dict[str, Tensor], config: ViTConfig, source_name: str, semantics: str | None
               ) -> tuple[dict[str, Tensor], dict[str, str]]:
        """The loadable keys as they are; the head count (not stored in the weights) as metadata."""
        return sd, {"ppd.semantics": self.semantics, "ppd.num_heads": str(config.num_heads)}
