"""Opt-in fast path for PPD with ppd_moge.pth: one MoGe-2 backbone pass feeds both the DiT and the geometry.

Not the official result: the geometry comes from PPD's token grid (H/16 x W/16 of the preprocessed image,
48x64 = 3072 tokens at 768x1024) instead of MoGe's own (~3600 tokens, 51x69 for 4:3), and from the image
PPD already resized. Measured: PPD's semantics plus official MoGe-2 cost 7.13 TFLOP per 768x1024 image at full
size, the shared pass 3.64 (MoGe's own 3.38 TFLOP backbone pass saved, heads on the smaller grid; FlopCounterMode
on `meta`); on the tiny
fixture model its depth differs from the official default by a median 19-22 % (that random model is very
resolution-sensitive; the real model's difference could not be measured here) and by 1-4 % from the
official result at the same grid (the double resize). Hence opt-in, never the default.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from ...errors import InputError
from .model import MoGe2Model, metric_geometry


@torch.inference_mode()
def semantics_and_geometry(model: MoGe2Model, image: Tensor, size: tuple[int, int] | None = None, *,
                           fov_x: float | None = None, force_projection: bool = True,
                           apply_mask: bool = True) -> tuple[Tensor, dict]:
    """PPD's preprocessed image (B,3,H,W), sides multiples of 16 -> (semantic tokens (B, H/16*W/16, C) for the
    DiT, exactly `model.encoder(image)`; MoGe-2 geometry at `size` (default (H,W)) from the same backbone pass)."""
    if image.ndim != 4 or image.shape[1] != 3 or image.shape[-2] % 16 or image.shape[-1] % 16:
        raise InputError(f"shared pass: expected PPD's preprocessed RGB batch (B,3,H,W) with sides multiples of "
                         f"16, got {tuple(image.shape)}; run PPDPipeline.preprocess first.")
    gh, gw = image.shape[-2] // 16, image.shape[-1] // 16
    x = model.encoder.backbone_input(image.to(model.encoder.image_mean.device))    # (B,3,14gh,14gw)
    features, cls = model.encoder.feature_map(x, gh, gw)
    fwd = model.decode(features, cls, size or (image.shape[-2], image.shape[-1]))
    geometry = metric_geometry(fwd["points"], fwd["mask"], fwd["normal"], fwd["metric_scale"], fov_x=fov_x,
                               force_projection=force_projection, apply_mask=apply_mask)
    return rearrange(features, "b c h w -> b (h w) c"), geometry
