"""Tiny random PPVD models (video DiT + Pi3 semantic path) in the official key layouts, for fast tests."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from comfyui_ppd.encoders.pi3 import Pi3Config, Pi3Semantics
from comfyui_ppd.families.ppvd.dit import VideoDiT, VideoDiTConfig
from comfyui_ppd.nn.dinov2 import ViTConfig

PROCESS_SIZE = (32, 32)          # the smallest size the video DiT takes (fine grid 4x4, pooled 1x1)
DIT = VideoDiTConfig(hidden_size=16, depth=8, num_heads=2, mlp_hidden=32, semantic_dim=32, temporal_depth=2,
                     pos_grid=(2, 2))
PI3 = Pi3Config(encoder=ViTConfig(embed_dim=16, depth=1, num_heads=1, mlp_hidden=32, num_register_tokens=4,
                                  interpolate_offset=0.0, interpolate_antialias=True, mask_token=False),
                width=16, depth=2, num_heads=1, mlp_hidden=32, register_tokens=5)


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (the official init zeroes adaLN and the final layer, which would hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name == "pos_embed":
                continue
            noise = torch.randn(p.shape, generator=gen)
            owner = name.rsplit(".", 2)[-2] if "." in name else ""
            if "norm" in owner and name.endswith(".weight"):
                p.copy_(1 + 0.1 * noise)
            elif name.endswith("gamma"):
                p.copy_(0.5 + 0.1 * noise)
            else:
                p.copy_(0.05 * noise)
    return module.eval().requires_grad_(False)


def tiny_video_dit(seed: int = 0) -> VideoDiT:
    return _randomise(VideoDiT(DIT), seed)


def tiny_pi3(seed: int = 1) -> Pi3Semantics:
    return _randomise(Pi3Semantics(PI3), seed)


def write_tiny_ppvd(folder: Path) -> dict[str, Path]:
    """ppvd.pth (keys `dit_video.*`, as the release names them) and pi3.safetensors (with an ignored point head)."""
    folder.mkdir(parents=True, exist_ok=True)
    ppvd, pi3 = folder / "ppvd.pth", folder / "pi3.safetensors"
    torch.save({"dit_video." + k: v for k, v in tiny_video_dit().state_dict().items()}, ppvd)
    tensors = {k: v.contiguous() for k, v in tiny_pi3().state_dict().items()}
    tensors["point_head.proj.weight"] = torch.zeros(4, 16)                   # ignored by the semantic path
    save_file(tensors, str(pi3))
    return {"ppvd": ppvd, "pi3": pi3}
