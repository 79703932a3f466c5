"""Tiny random checkpoints in the official key layouts (ppd.pth, depth_anything_v2_vitl.pth, MoGe-2 model.pt)."""
from __future__ import annotations

from pathlib import Path

import torch

from comfyui_ppd.encoders import DepthAnythingV2Encoder, MoGe2Encoder
from comfyui_ppd.families.ppd.dit import DiTConfig, PPDDiT
from comfyui_ppd.nn.dinov2 import ViTConfig

# 64-wide ViTs get one 64-dim head by default, like the released models' head size.
TINY_VIT = ViTConfig(embed_dim=64, depth=2, num_heads=1, patch_size=14, mlp_hidden=128, pos_grid=37)


def _randomise(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = module.state_dict()
    for k, v in sd.items():
        if v.is_floating_point() and "image_" not in k:
            scale = 1.0 if k.endswith(("norm.weight", "norm1.weight", "norm2.weight", "gamma")) else 0.0
            sd[k] = scale + 0.05 * torch.randn(v.shape, generator=gen)
    return sd


def tiny_dit_state_dict(semantic_dim: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """A 2-block DiT with the official `dit.` key layout."""
    dit = PPDDiT(DiTConfig(hidden_size=32, depth=2, num_heads=2, patch_size=8, mlp_hidden=64,
                           semantic_dim=semantic_dim))
    return {"dit." + k: v for k, v in _randomise(dit, seed).items()}


def tiny_da2_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    """`pretrained.*` backbone plus dummy `depth_head.*` tensors, as in depth_anything_v2_vitl.pth."""
    sd = _randomise(DepthAnythingV2Encoder(TINY_VIT), seed)            # keys are already pretrained.*
    sd["depth_head.projects.0.weight"] = torch.zeros(8, 64, 1, 1)
    sd["depth_head.scratch.output_conv2.2.bias"] = torch.zeros(1)
    return sd


def tiny_moge_checkpoint(seed: int = 2) -> dict:
    """{"model_config": ..., "model": {"encoder.*", "neck.*", ...}} like MoGe-2's model.pt."""
    enc = MoGe2Encoder(TINY_VIT, [0, 1], 64)
    model = {"encoder." + k: v for k, v in _randomise(enc, seed).items()}
    model["neck.0.weight"] = torch.zeros(4, 4)
    config = {"encoder": {"backbone": "dinov2_tiny14", "intermediate_layers": [0, 1], "dim_out": 64}}
    return {"model_config": config, "model": model}


def tiny_moge2_full_checkpoint(seed: int = 3, normal_head: bool = True) -> dict:
    """{"model_config": ..., "model": ...} of a complete tiny MoGe-2 (encoder, neck, points / normal / mask heads,
    scale head) in model.pt's layout: random, with a few weights set so the point map is a plausible camera
    frustum (z ~ exp(0.7)), most pixels are valid and the metric scale is ~e (as the fixture's tiny model)."""
    from comfyui_ppd.families.moge2.model import ConvStackConfig, MoGe2Config, MoGe2Model

    def stack(dim_in: tuple, out: int | None, blocks: tuple) -> ConvStackConfig:
        return ConvStackConfig(dim_in, (32, 16, 16, 8, 8), blocks, (None,) * 4 + (out,),
                               ("conv_transpose",) * 3 + ("bilinear",))
    head = (32, 16, 16, 8, 8)
    config = MoGe2Config(neck=stack((66, 2, 2, 2, 2), None, (0, 1, 1, 1, 0)),
                         points_head=stack(head, 3, (0, 1, 1, 1, 0)), mask_head=stack(head, 1, (0, 1, 1, 1, 0)),
                         normal_head=stack(head, 3, (0, 1, 1, 1, 0)) if normal_head else None,
                         scale_head=(64, 32, 1))
    sd = plausible_moge2(_randomise(MoGe2Model(MoGe2Encoder(TINY_VIT, [0, 1], 64), config), seed))
    model_config = {"encoder": {"backbone": "dinov2_tiny14", "intermediate_layers": [0, 1], "dim_out": 64},
                    "remap_output": "exp", "num_tokens_range": [96, 256]}  # few tokens: fast
    return {"model_config": model_config, "model": sd}


def plausible_moge2(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Set a few weights of a random tiny MoGe-2 (neck and heads: the same keys in model.pt's and core's layouts)
    so the point map is a plausible camera frustum, most pixels are valid and the metric scale is ~e."""
    eye = torch.eye(2)
    sd["neck.input_blocks.4.weight"][0:2, 0:2, 0, 0] = 20 * eye          # neck carries the view-plane uv
    sd["points_head.input_blocks.4.weight"][0:2, 0:2, 0, 0] = eye
    sd["points_head.output_blocks.4.weight"] *= 0.2
    sd["points_head.output_blocks.4.weight"][0:2, 0:2, 0, 0] += 0.1 * eye   # x, y follow u, v (focal ~ 1)
    sd["points_head.output_blocks.4.bias"][2] += 0.7                         # log z ~ 0.7
    sd["mask_head.output_blocks.4.bias"] += 3.0                              # nearly every pixel valid
    sd["scale_head.2.bias"] += 1.0                                           # metric scale ~ e
    return sd


def write_tiny_models(folder: Path) -> dict[str, Path]:
    """Write ppd.pth, depth_anything_v2_vitl.pth and moge2_vitl_normal.pt (tiny, random) into `folder`; the
    MoGe-2 file is complete (encoder, neck, heads), so it serves as semantic encoder and as geometry model."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"dit": folder / "ppd.pth", "da2": folder / "depth_anything_v2_vitl.pth",
             "moge": folder / "moge2_vitl_normal.pt"}
    torch.save(tiny_dit_state_dict(), paths["dit"])
    torch.save(tiny_da2_state_dict(), paths["da2"])
    torch.save(tiny_moge2_full_checkpoint(), paths["moge"])
    return paths
