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


def write_tiny_models(folder: Path) -> dict[str, Path]:
    """Write ppd.pth, depth_anything_v2_vitl.pth and moge2_vitl_normal.pt (tiny, random) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"dit": folder / "ppd.pth", "da2": folder / "depth_anything_v2_vitl.pth",
             "moge": folder / "moge2_vitl_normal.pt"}
    torch.save(tiny_dit_state_dict(), paths["dit"])
    torch.save(tiny_da2_state_dict(), paths["da2"])
    torch.save(tiny_moge_checkpoint(), paths["moge"])
    return paths
