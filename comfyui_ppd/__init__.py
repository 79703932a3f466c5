"""Pixel-Perfect Depth engine: checkpoint-exact PPD in plain PyTorch, usable without ComfyUI.

    dit = load_dit("ppd.pth"); enc = load_semantic_encoder("depth_anything_v2_vitl.pth")
    depth = PPDPipeline(dit, enc)(image)          # (B,1,h,w) normalised log-depth, larger = farther
"""
from __future__ import annotations

from typing import cast

import torch

from . import registry
from .checkpoints import Source
from .encoders.base import ENCODER_EXPECTED, ENCODER_FIX, SemanticEncoder
from .errors import CheckpointError, InputError, PPDError
from .families.moge2 import EXPECTED as GEOMETRY_EXPECTED
from .families.moge2 import FIX as GEOMETRY_FIX
from .families.moge2 import MoGe2Model, align_to_metric
from .families.ppd import EXPECTED as DIT_EXPECTED
from .families.ppd import FIX as DIT_FIX
from .families.ppd.dit import PPDDiT
from .families.ppd.pipeline import DepthResult, PPDPipeline, Prepared
from .sampling import sampling_timesteps

__all__ = ["load_dit", "load_semantic_encoder", "sampling_timesteps", "PPDPipeline", "Prepared",
           "DepthResult", "PPDError", "CheckpointError", "InputError", "load_geometry_model", "align_to_metric"]
__version__ = "0.1.0"


def load_dit(source: Source, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> PPDDiT:
    """Load a PPD DiT (ppd.pth, ppd_moge.pth, a converted .safetensors, or a state dict), strictly.

    Call `dit(x, semantics, timestep)` with x = cat[latent, image - 0.5] -> velocity (B,1,H,W).
    """
    return cast(PPDDiT, registry.load(source, ("ppd",), DIT_EXPECTED, DIT_FIX, device=device, dtype=dtype))


def load_semantic_encoder(source: Source, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                          num_heads: int | None = None) -> SemanticEncoder:
    """Load a Depth Anything v2 or MoGe-2 semantic encoder (kind detected from the keys), strictly.

    `encoder(image)` with image (B,3,H,W) in [0,1], sides multiples of 16 -> (B, H/16*W/16, C).
    `num_heads` overrides the head count (not stored in checkpoints; released models use 64-dim heads).
    """
    return cast(SemanticEncoder, registry.load(source, ("da2", "moge2"), ENCODER_EXPECTED, ENCODER_FIX,
                                               device=device, dtype=dtype, num_heads=num_heads))


def load_geometry_model(source: Source, *, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> MoGe2Model:
    """Load a full MoGe-2 model (model.pt or .safetensors with `model_config`), strictly, for metric geometry.

    `model.infer(image)` with image (3,H,W) or (B,3,H,W) in [0,1] -> points, depth, mask, intrinsics, normal.
    """
    return cast(MoGe2Model, registry.load(source, ("moge2_geometry",), GEOMETRY_EXPECTED, GEOMETRY_FIX,
                                          device=device, dtype=dtype))
