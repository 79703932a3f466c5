"""Pixel-Perfect Depth engine: checkpoint-exact PPD in plain PyTorch, usable without ComfyUI.

    dit = load_dit("ppd.pth"); enc = load_semantic_encoder("depth_anything_v2_vitl.pth")
    depth = PPDPipeline(dit, enc)(image)          # (B,1,h,w) normalised log-depth, larger = farther
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoints import Source, build_dit, dit_part, encoder_part, load_strict, read_checkpoint
from .errors import CheckpointError, InputError, PPDError
from .families.ppvd import VideoDepthPipeline
from .models.dit import PPDDiT
from .models.encoders import SemanticEncoder
from .pipeline import DepthResult, PPDPipeline, Prepared
from .sampling import sampling_timesteps

__all__ = ["load_dit", "load_semantic_encoder", "sampling_timesteps", "PPDPipeline", "Prepared",
           "DepthResult", "VideoDepthPipeline", "PPDError", "CheckpointError", "InputError"]
__version__ = "0.1.0"


def _semantics_kind(metadata: dict, source: Source) -> tuple[str | None, str]:
    """Which semantics a DiT was trained with: our converter's metadata, else a guess from the file name."""
    if metadata.get("ppd.semantics") in ("da2", "moge2"):
        return metadata["ppd.semantics"], "metadata"
    if isinstance(source, (str, Path)):
        name = Path(source).name.lower()
        return ("moge2" if "moge" in name else "da2" if name.startswith("ppd") else None), "file name"
    return None, ""


def load_dit(source: Source, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> PPDDiT:
    """Load a PPD DiT (ppd.pth, ppd_moge.pth, a converted .safetensors, or a state dict), strictly.

    Call `dit(x, semantics, timestep)` with x = cat[latent, image - 0.5] -> velocity (B,1,H,W).
    """
    ckpt = read_checkpoint(source)
    dit = build_dit(dit_part(ckpt), ckpt.label, device, dtype)
    dit.semantics_kind, dit.semantics_kind_source = _semantics_kind(ckpt.metadata, source)
    return dit


def load_semantic_encoder(source: Source, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                          num_heads: int | None = None) -> SemanticEncoder:
    """Load a Depth Anything v2 or MoGe-2 semantic encoder (kind detected from the keys), strictly.

    `encoder(image)` with image (B,3,H,W) in [0,1], sides multiples of 16 -> (B, H/16*W/16, C).
    `num_heads` overrides the head count (not stored in checkpoints; released models use 64-dim heads).
    """
    ckpt = read_checkpoint(source)
    if num_heads is None and "ppd.num_heads" in ckpt.metadata:
        num_heads = int(ckpt.metadata["ppd.num_heads"])
    module, sd = encoder_part(ckpt, num_heads)
    what = "a complete Depth Anything v2 encoder" if module.kind == "da2" else "a complete MoGe-2 encoder"
    return load_strict(module, sd, ckpt.label, what, device, dtype)
