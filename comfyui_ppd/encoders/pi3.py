"""Pi3's semantic path, the prompt of the video DiT: DINOv2-reg ViT, then a decoder that alternates
frame-wise and global attention with 2D RoPE over all frames of a window.

frames (N,3,h,w) in [0,1] -> bilinear resize to (h/16*14, w/16*14) -> ImageNet normalisation -> DINOv2
ViT-L/14 with 4 registers -> patch tokens (N, hw, C) -> [5 register tokens, patches] per frame ->
decoder layers (even: each frame alone; odd: all frames as one sequence) -> cat(second-to-last, last)
without the registers: (N, hw, 2C). The N frames are one sample: each frame's tokens depend on all.
The point, confidence and camera decoders of pi3.safetensors are not built.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoints import Checkpoint, subdict
from ..errors import CheckpointError
from ..families.ppd.dit import Attention
from ..family import KeyFamily, ModelFile, single_prefix
from ..nn.dinov2 import Block, DinoVisionTransformer, ViTConfig
from ..nn.layers import rope_tables_from_positions
from .base import (
    DEFAULT_TOKEN_PX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SemanticEncoder,
    encoder_input_size,
    token_grid,
)

ROPE_BASE = 100.0
ANCHOR = "encoder.register_tokens"
PI3_EXPECTED = "the Pi3 model (pi3.safetensors)"
PI3_FIX = ("Download pi3.safetensors from https://huggingface.co/yyfz233/Pi3 (model.safetensors) for the video "
           "model's encoder input; ppvd.pth goes to the DiT input.")

FILE = ModelFile("pi3.safetensors", ("video_encoder",), "pi3",
                 "https://huggingface.co/yyfz233/Pi3/resolve/main/model.safetensors",
                 "~3.8 GB",
                 "Pi3 (published as model.safetensors; saved under this name so it is recognisable): the "
                 "semantic encoder of the video model ppvd.pth. Only its encoder and decoder are used "
                 "(757,923,840 parameters); the point, confidence and camera heads are skipped.",
                 defaults=("video_encoder",))


@dataclass(frozen=True)
class Pi3Config:
    """Sizes of the semantic path; head counts are not stored for the encoder (64-dim heads by default)."""

    encoder: ViTConfig = field(default_factory=lambda: ViTConfig(
        num_register_tokens=4, interpolate_offset=0.0, interpolate_antialias=True, mask_token=False))
    width: int = 1024
    depth: int = 36
    num_heads: int = 16
    mlp_hidden: int = 4096
    register_tokens: int = 5


class RopeBlock(Block):
    """The DINOv2 block with the DiT's attention (q/k LayerNorm, 2D RoPE): call `block(x, rope)`."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__(dim, num_heads, mlp_hidden, attn=Attention(dim, num_heads))


def decoder_positions(grid_h: int, grid_w: int, registers: int, device: torch.device | str = "cpu") -> Tensor:
    """(registers + gh*gw, 2) int64 (y, x): (0, 0) for the registers, (row + 1, col + 1) for patches, row-major."""
    rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w) + 1
    cols = torch.arange(grid_w, device=device).repeat(grid_h) + 1
    patches = torch.stack([rows, cols], dim=-1)
    return torch.cat([torch.zeros(registers, 2, dtype=patches.dtype, device=device), patches])


class Pi3Semantics(SemanticEncoder):
    """`encoder(frames)`: (N,3,H,W) in [0,1], sides multiples of 16 -> (N, H/16*W/16, 2*width)."""

    kind = "pi3"
    image_mean: Tensor
    image_std: Tensor

    def __init__(self, config: Pi3Config) -> None:
        super().__init__()
        self.config = c = config
        self.register_token = nn.Parameter(torch.zeros(1, 1, c.register_tokens, c.width))
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.encoder = DinoVisionTransformer(c.encoder)
        self.decoder = nn.ModuleList(RopeBlock(c.width, c.num_heads, c.mlp_hidden) for _ in range(c.depth))
        self.semantic_dim = 2 * c.width

    @property
    def patch_size(self) -> int:
        return self.encoder.config.patch_size

    def backbone_input(self, image: Tensor, token_px: int = DEFAULT_TOKEN_PX) -> Tensor:
        """Bilinear resize (no antialias) of the [0,1] frames first, then normalisation by the stored buffers."""
        x = F.interpolate(image.float(), size=encoder_input_size(*token_grid(image, token_px), self.patch_size),
                          mode="bilinear", align_corners=False)
        x = (x - self.image_mean.float()) / self.image_std.float()
        return x.to(self.encoder.patch_embed.proj.weight.dtype)

    def patch_tokens(self, x: Tensor) -> Tensor:
        """Final-norm DINOv2 patch tokens (N, hw, C): class token and registers dropped."""
        last = len(self.encoder.blocks) - 1
        return self.encoder.tokens(x, [last])[0][:, 1 + self.config.encoder.num_register_tokens:]

    def decode(self, tokens: Tensor, grid_h: int, grid_w: int) -> Tensor:
        """Patch tokens (N, hw, C) -> (N, hw, 2C): the last two decoder layers' outputs, registers dropped."""
        n, hw, width = tokens.shape
        r = self.config.register_tokens
        x = torch.cat([self.register_token.expand(n, -1, -1, -1)[:, 0].to(tokens.dtype), tokens], dim=1)
        pos = decoder_positions(grid_h, grid_w, r, tokens.device)[None]              # (1, S, 2)
        head_dim = width // self.config.num_heads
        cos, sin = rope_tables_from_positions(pos, head_dim, ROPE_BASE)               # (1, 1, S, hd)
        frame_rope = (cos.to(x.dtype), sin.to(x.dtype))
        global_rope = tuple(t.repeat(1, 1, n, 1) for t in frame_rope)                # (1, 1, N*S, hd)
        outputs = []
        for i, layer in enumerate(self.decoder):
            if i % 2 == 0:                                   # frame-wise: N sequences of S tokens
                x = layer(x, frame_rope)
            else:                                            # global: one sequence of N*S tokens
                x = layer(x.reshape(1, n * (r + hw), width), global_rope).reshape(n, r + hw, width)
            outputs.append(x)
        return torch.cat(outputs[-2:], dim=-1)[:, r:]

    def encode(self, x: Tensor, grid_h: int, grid_w: int) -> Tensor:
        return self.decode(self.patch_tokens(x), grid_h, grid_w)


# --- reading the architecture from a state dict -------------------------------------------------
PI3_GROUPS = ("register_token", "image_mean", "image_std", "encoder.", "decoder.")


def semantic_part(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The tensors the semantic path uses (the point/conf/camera decoders and heads are left out)."""
    return {k: v for k, v in sd.items() if k in PI3_GROUPS[:3] or k.startswith(PI3_GROUPS[3:])}


def _count(sd: Mapping[str, Tensor], prefix: str) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def config_from(sd: Mapping[str, Tensor], num_heads: int | None = None, label: str = "<state dict>") -> Pi3Config:
    """Sizes from shapes. Encoder heads: `num_heads`, else width // 64 (not stored); decoder heads from q_norm."""
    try:
        dim, _, patch, _ = sd["encoder.patch_embed.proj.weight"].shape
        tokens = sd["encoder.pos_embed"].shape[1] - 1
        grid = round(tokens ** 0.5)
        enc_heads = num_heads or max(1, dim // 64)
        width = sd["decoder.0.attn.qkv.weight"].shape[1]
        head_dim = sd["decoder.0.attn.q_norm.weight"].shape[0]
        if dim % enc_heads or grid * grid != tokens or width % head_dim or width != dim:
            raise ValueError(f"encoder {dim} channels / {enc_heads} heads, {tokens} position tokens, "
                             f"decoder {width} channels with {head_dim}-dim heads")
        encoder = ViTConfig(embed_dim=dim, depth=_count(sd, "encoder.blocks."), num_heads=enc_heads,
                            patch_size=patch, mlp_hidden=sd["encoder.blocks.0.mlp.fc1.weight"].shape[0],
                            pos_grid=grid, interpolate_offset=0.0, interpolate_antialias=True,
                            num_register_tokens=sd["encoder.register_tokens"].shape[1], mask_token=False)
        return Pi3Config(encoder=encoder, width=width, depth=_count(sd, "decoder."), num_heads=width // head_dim,
                         mlp_hidden=sd["decoder.0.mlp.fc1.weight"].shape[0],
                         register_tokens=sd["register_token"].shape[2])
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(label, "the Pi3 model (pi3.safetensors)", f"inconsistent or missing tensors ({e})",
                              "The file is incomplete or from another model; download pi3.safetensors again.") from e


class Pi3Family(KeyFamily):
    """Pi3: a DINOv2 encoder with registers and a decoder with its own register token (the semantic path only)."""

    name = semantics = "pi3"
    slot, label, files, score = "video_encoder", "Pi3", (FILE,), 3
    title = "the Pi3 model (pi3.safetensors, the video model's semantic encoder)"
    advice = ("Pi3 is the semantic encoder of the video model (PPVD); use the video nodes (PPD Load Video "
              "Model).")
    needs = ("register_token", "encoder.register_tokens", "encoder.patch_embed.proj.weight", "decoder.0.")

    def part(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        """The semantic path's tensors; ImageNet `image_mean`/`image_std` filled in when the file leaves them out."""
        prefix = single_prefix(ckpt, ANCHOR, "Pi3 models", PI3_EXPECTED, PI3_FIX, also="register_token")
        sd = semantic_part(subdict(ckpt.tensors, prefix))
        meta = next(iter(sd.values())).device.type == "meta"
        for name, values in (("image_mean", IMAGENET_MEAN), ("image_std", IMAGENET_STD)):
            sd.setdefault(name, torch.tensor(values, device="meta" if meta else "cpu").view(1, 3, 1, 1))
        return sd

    def config_from(self, sd: Mapping[str, Tensor], ckpt: Checkpoint, *, num_heads: int | None = None,
                    **options: Any) -> Pi3Config:
        num_heads = num_heads or int(ckpt.metadata.get("ppd.num_heads", 0)) or None   # our converter's note
        return config_from(sd, num_heads, ckpt.label)

    def build(self, config: Pi3Config) -> nn.Module:
        return Pi3Semantics(config)
