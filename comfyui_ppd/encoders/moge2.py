"""MoGe-2's encoder as a semantic encoder: 1x1 projections of chosen DINOv2 block outputs, summed."""
from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..checkpoints import Checkpoint, prefixes_of, subdict
from ..errors import CheckpointError
from ..family import Family, ModelFile, single_prefix
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


class MoGe2Encoder(SemanticEncoder):
    """MoGe-2: antialiased bilinear resize, normalise, sum of 1x1 projections of chosen block outputs."""

    kind = "moge2"
    image_mean: Tensor
    image_std: Tensor

    def __init__(self, config: ViTConfig, intermediate_layers: list[int], dim_out: int) -> None:
        super().__init__()
        self.backbone = DinoVisionTransformer(config)
        self.intermediate_layers = list(intermediate_layers)
        self.output_projections = nn.ModuleList(
            nn.Conv2d(config.embed_dim, dim_out, 1) for _ in self.intermediate_layers)
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.semantic_dim = dim_out

    @property
    def patch_size(self) -> int:
        return self.backbone.config.patch_size

    def backbone_input(self, image: Tensor, token_px: int = DEFAULT_TOKEN_PX, size: tuple[int, int] | None = None
                       ) -> Tensor:
        """Bilinear antialiased resize of the [0,1] image first (to `size`, default the `token_px` grid's ViT
        input), then normalisation by the stored buffers."""
        size = size or encoder_input_size(*token_grid(image, token_px), self.patch_size)
        x = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.image_mean.float()) / self.image_std.float()
        return x.to(self.backbone.patch_embed.proj.weight.dtype)

    def encode(self, x: Tensor, grid_h: int, grid_w: int) -> Tensor:
        return rearrange(self.feature_map(x, grid_h, grid_w)[0], "b c h w -> b (h w) c")

    def feature_map(self, x: Tensor, grid_h: int, grid_w: int) -> tuple[Tensor, Tensor]:
        """(B, dim_out, h, w) sum of the projected layers, and the last listed layer's class token (B, D)."""
        layers = self.backbone.tokens(x, self.intermediate_layers)
        grids = [rearrange(t[:, 1:], "b (h w) c -> b c h w", h=grid_h, w=grid_w) for t in layers]
        total = self.output_projections[0](grids[0])
        for grid, proj in zip(grids[1:], self.output_projections[1:]):
            total = total + proj(grid)
        return total, layers[-1][:, 0]


def evenly_spaced_layers(depth: int, count: int) -> list[int]:
    """MoGe's layer choice when no config says otherwise: count blocks ending at the last ([5,11,17,23] for 24, 4)."""
    return [(i + 1) * depth // count - 1 for i in range(count)]


FILE = ModelFile("moge2_vitl_normal.pt", ("encoder", "geometry"), "moge2",
                 "https://huggingface.co/Ruicheng/moge-2-vitl-normal/resolve/main/model.pt",
                 "~1.3 GB",
                 "MoGe-2 ViT-L (normal) published as model.pt; saved under this name so it is "
                 "recognisable. The semantic encoder for ppd_moge.pth, and the geometry model (metric "
                 "depth, camera, normals) of the MoGe-2 nodes and `predict --metric`.", defaults=("geometry",))


@dataclass(frozen=True)
class MoGe2EncoderConfig:
    vit: ViTConfig
    intermediate_layers: list[int]
    dim_out: int


class MoGe2EncoderFamily(Family):
    """MoGe-2's encoder (`backbone.*` plus `output_projections.*`), alone or inside a full MoGe-2 model.pt."""

    name = semantics = "moge2"
    slot, label, files = "encoder", "MoGe-2", (FILE,)
    title = "a MoGe-2 encoder"
    advice = "It is a semantic encoder: give it to the encoder input (load_semantic_encoder)."

    def detect(self, keys: Collection[str]) -> int:
        heads = [p[: -len("backbone.")] for p in prefixes_of(keys, VIT_ANCHOR) if p.endswith("backbone.")]
        return 2 if any(h + "output_projections.0.weight" in keys for h in heads) else 0

    def part(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        prefix = single_prefix(ckpt, "backbone." + VIT_ANCHOR, "MoGe-2 encoders", ENCODER_EXPECTED, ENCODER_FIX,
                               also="output_projections.0.weight")
        return subdict(ckpt.tensors, prefix)

    def config_from(self, sd: Mapping[str, Tensor], ckpt: Checkpoint, *, num_heads: int | None = None,
                    **options: Any) -> MoGe2EncoderConfig:
        """ViT sizes from shapes; layers from `model_config.encoder.intermediate_layers`, else evenly spaced."""
        num_heads = num_heads or int(ckpt.metadata.get("ppd.num_heads", 0)) or None   # our converter's note
        cfg = vit_config(subdict(sd, "backbone."), num_heads, ckpt.label)
        n_proj = len({k.split(".")[1] for k in sd if k.startswith("output_projections.")})
        layers = evenly_spaced_layers(cfg.depth, n_proj)
        enc_cfg = (ckpt.metadata.get("model_config") or {}).get("encoder") or {}
        if enc_cfg.get("intermediate_layers") is not None:
            layers = enc_cfg["intermediate_layers"]
            if isinstance(layers, int):                       # MoGe also accepts "the last n blocks"
                layers = list(range(cfg.depth - layers, cfg.depth))
            if len(layers) != n_proj or max(layers) >= cfg.depth:
                raise CheckpointError(ckpt.label, f"{n_proj} intermediate layers below {cfg.depth}",
                                      f"model_config intermediate_layers {layers}", "The file is inconsistent.")
        return MoGe2EncoderConfig(cfg, list(layers), sd["output_projections.0.weight"].shape[0])

    def build(self, config: MoGe2EncoderConfig) -> nn.Module:
        return MoGe2Encoder(config.vit, config.intermediate_layers, config.dim_out)

    def export(self, sd: dict[str, Tensor], config: MoGe2EncoderConfig, source_name: str, semantics: str | None
               ) -> tuple[dict[str, Tensor], dict[str, str]]:
        """Keys under `encoder.` (as in model.pt); head count and layer choice as metadata."""
        layers = {"encoder": {"intermediate_layers": config.intermediate_layers, "dim_out": config.dim_out}}
        return ({"encoder." + k: v for k, v in sd.items()},
                {"ppd.semantics": self.semantics, "ppd.num_heads": str(config.vit.num_heads),
                 "model_config": json.dumps(layers)})
