"""MoGe-2: DINOv2 encoder (shared with PPD's semantic encoder) -> conv neck -> points / normal / mask heads,
plus an MLP on the class token for the metric scale. `infer` adds MoGe's camera recovery.

Image (B,3,H,W) in [0,1] -> token grid h x w from the token budget -> backbone at (14h, 14w) ->
features (B,C,h,w) + uv -> neck: 5 levels (h..16h) -> each head's last level (B,k,16h,16w) -> resized to (H,W).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...encoders.moge2 import MoGe2Encoder
from ...errors import InputError
from .camera import (
    focal_from_fov_x,
    intrinsics_from_focal,
    normalized_view_plane_uv,
    recover_focal_shift,
    unproject_centres,
)


@dataclass(frozen=True)
class ConvStackConfig:
    """One neck or head: per level input width, block width, residual block count, output width (or None)."""

    dim_in: tuple[int, ...]
    dim_res_blocks: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    dim_out: tuple[int | None, ...]
    resamplers: tuple[str, ...]              # "conv_transpose" or "bilinear", between consecutive levels


class ResidualConvBlock(nn.Module):
    """y = x + conv(relu(conv(relu(x)))); 3x3 replicate-padded convs; keys layers.2 / layers.5 (norms are none)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        conv = lambda: nn.Conv2d(dim, dim, 3, padding=1, padding_mode="replicate")  # noqa: E731
        self.layers = nn.Sequential(nn.Identity(), nn.ReLU(), conv(), nn.Identity(), nn.ReLU(), conv())

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class Upsample2x(nn.Module):
    """x2 bilinear (align_corners=False), no parameters."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def resampler(kind: str, dim_in: int, dim_out: int) -> nn.Sequential:
    """x2 upsampling between levels: (ConvTranspose 2x2 s2 | bilinear) then a 3x3 replicate conv."""
    if kind == "conv_transpose":
        return nn.Sequential(nn.ConvTranspose2d(dim_in, dim_out, 2, stride=2),
                             nn.Conv2d(dim_out, dim_out, 3, padding=1, padding_mode="replicate"))
    return nn.Sequential(Upsample2x(), nn.Conv2d(dim_in, dim_out, 3, padding=1, padding_mode="replicate"))


class ConvStack(nn.Module):
    """Coarse-to-fine: x_i = resample(x_{i-1}) + in_conv_i(in_i) -> residual blocks -> out_conv_i; 5 outputs."""

    def __init__(self, c: ConvStackConfig) -> None:
        super().__init__()
        n = len(c.dim_in)
        self.input_blocks = nn.ModuleList(nn.Conv2d(c.dim_in[i], c.dim_res_blocks[i], 1) for i in range(n))
        self.res_blocks = nn.ModuleList(
            nn.Sequential(*(ResidualConvBlock(c.dim_res_blocks[i]) for _ in range(c.num_res_blocks[i])))
            for i in range(n))
        self.output_blocks = nn.ModuleList(
            nn.Conv2d(c.dim_res_blocks[i], out, 1) if (out := c.dim_out[i]) else nn.Identity() for i in range(n))
        self.resamplers = nn.ModuleList(resampler(c.resamplers[i], c.dim_res_blocks[i], c.dim_res_blocks[i + 1])
                                        for i in range(n - 1))

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        outputs, x = [], None
        for i, level_in in enumerate(inputs):
            f = self.input_blocks[i](level_in)
            x = f if x is None else self.resamplers[i - 1](x) + f
            x = self.res_blocks[i](x)
            outputs.append(self.output_blocks[i](x))
        return outputs


class ScaleHead(nn.Sequential):
    """Linear-ReLU-...-Linear on the class token -> log metric scale (B,1); keys .0, .2, .4."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers += [nn.Linear(dims[i], dims[i + 1])] + ([nn.ReLU()] if i < len(dims) - 2 else [])
        super().__init__(*layers)


@dataclass(frozen=True)
class MoGe2Config:
    neck: ConvStackConfig
    points_head: ConvStackConfig
    mask_head: ConvStackConfig
    normal_head: ConvStackConfig | None
    scale_head: tuple[int, ...]
    num_tokens_range: tuple[int, int] = (1200, 3600)


def remap_exp(raw: Tensor) -> Tensor:
    """(..., 3) raw (x, y, log z) -> (x·z, y·z, z) with z = exp(log z)."""
    xy, log_z = raw.split([2, 1], dim=-1)
    z = log_z.exp()
    return torch.cat([xy * z, z], dim=-1)


def token_grid(height: int, width: int, num_tokens: int) -> tuple[int, int]:
    """MoGe's processing grid, in exactly the official float64 expression (60x140 @ 525 -> 14x35, not 15x35)."""
    aspect = width / height
    return int((num_tokens / aspect) ** 0.5), int((num_tokens * aspect) ** 0.5)


class MoGe2Model(nn.Module):
    """The full MoGe-2 network; `forward` gives the raw maps, `infer` the metric geometry."""

    label = ""                                   # the file it was loaded from, for messages

    def __init__(self, encoder: MoGe2Encoder, config: MoGe2Config) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.neck = ConvStack(config.neck)
        self.points_head = ConvStack(config.points_head)
        self.mask_head = ConvStack(config.mask_head)
        self.normal_head = ConvStack(config.normal_head) if config.normal_head else None
        self.scale_head = ScaleHead(config.scale_head)

    @property
    def has_normal(self) -> bool:
        return self.normal_head is not None

    def num_tokens(self, resolution_level: float = 9, num_tokens: int | None = None) -> int:
        """Token budget: explicit, or interpolated over num_tokens_range by level 0..9 (not clamped, as official)."""
        if num_tokens is not None:
            return int(num_tokens)
        lo, hi = self.config.num_tokens_range
        return int(lo + (resolution_level / 9) * (hi - lo))

    def forward(self, image: Tensor, num_tokens: int) -> dict[str, Tensor]:
        """(B,3,H,W) in [0,1] -> points (B,H,W,3) affine, normal (B,H,W,3), mask prob (B,H,W), metric_scale (B,)."""
        height, width = image.shape[-2:]
        gh, gw = token_grid(height, width, num_tokens)
        if gh < 1 or gw < 1:
            raise InputError(f"MoGe-2: {num_tokens} tokens give an empty {gh}x{gw} grid for a {height}x{width} "
                             "image; use more tokens (resolution_level 0..9 gives 1200..3600).")
        p = self.encoder.backbone.config.patch_size
        x = self.encoder.backbone_input(image, size=(p * gh, p * gw))
        return self.decode(*self.encoder.feature_map(x, gh, gw), (height, width))

    def decode(self, features: Tensor, cls: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
        """Encoder features (B,C,h,w) and class token (B,D) -> the maps of `forward` at `size` (H,W)."""
        b, (height, width) = features.shape[0], size
        gh, gw = features.shape[-2:]
        dtype, dev = features.dtype, features.device
        uv = [normalized_view_plane_uv(gw << i, gh << i, width / height, dtype, dev).permute(2, 0, 1)
              .expand(b, -1, -1, -1) for i in range(len(self.neck.input_blocks))]  # (B,2,gh*2^i,gw*2^i)
        neck = self.neck([torch.cat([features, uv[0]], dim=1)] + uv[1:])
        heads = {"points": self.points_head, "mask": self.mask_head, "normal": self.normal_head}
        raw = {k: F.interpolate(head(neck)[-1].float(), (height, width), mode="bilinear", align_corners=False,
                                antialias=False) for k, head in heads.items() if head is not None}
        out = {"points": remap_exp(raw["points"].permute(0, 2, 3, 1)), "mask": raw["mask"][:, 0].sigmoid(),
               "metric_scale": self.scale_head(cls).float().squeeze(1).exp(),
               "normal": F.normalize(raw["normal"].permute(0, 2, 3, 1), dim=-1) if "normal" in raw else None}
        return out

    @torch.inference_mode()
    def infer(self, image: Tensor, *, resolution_level: float = 9, num_tokens: int | None = None,
              fov_x: float | None = None, force_projection: bool = True, apply_mask: bool = True) -> dict:
        """Metric geometry of RGB (3,H,W) or (B,3,H,W) in [0,1], as the official MoGe-2 `infer` (float32 post).

        Returns points (B,H,W,3) metric OpenCV frame, depth (B,H,W), mask (B,H,W) bool, intrinsics (B,3,3)
        normalised by width/height (cx = cy = 0.5), normal (B,H,W,3) or None when the model has no normal
        head, focal / shift (B,), metric_scale (B,). Invalid pixels hold +inf (points, depth), 0 (normal).
        """
        x = _check_image(image)
        fwd = self(x.to(self.encoder.image_mean.device), self.num_tokens(resolution_level, num_tokens))
        return metric_geometry(fwd["points"], fwd["mask"], fwd["normal"], fwd["metric_scale"], fov_x=fov_x,
                               force_projection=force_projection, apply_mask=apply_mask)


def metric_geometry(points: Tensor, mask_prob: Tensor, normal: Tensor | None, metric_scale: Tensor, *,
                    fov_x: float | None = None, force_projection: bool = True, apply_mask: bool = True) -> dict:
    """MoGe's post-processing (float32): affine map (B,H,W,3) + mask prob + scale -> camera and metric maps."""
    points, mask_prob, metric_scale = points.float(), mask_prob.float(), metric_scale.float()
    b, height, width, _ = points.shape
    aspect = width / height
    mask = mask_prob > 0.5                                                        # strict: 0.5 is invalid
    if fov_x is None:
        focal, shift = recover_focal_shift(points, mask)
    else:
        if not (isinstance(fov_x, (int, float)) and 0 < fov_x < 180):
            raise InputError(f"fov_x {fov_x!r} must be a horizontal field of view in degrees, 0 < fov_x < 180.")
        focal, shift = recover_focal_shift(points, mask, focal_from_fov_x(fov_x, aspect, b, points.device))
    intrinsics = intrinsics_from_focal(focal, aspect)
    if not torch.isfinite(intrinsics).all():
        raise InputError(f"MoGe-2 recovered a non-finite camera (focal {focal.tolist()}): give fov_x, or check "
                         "the image.")
    points = points.clone()
    points[..., 2] += shift[:, None, None]
    mask &= points[..., 2] > 0                                                    # in front, after the shift
    empty = [i for i in range(b) if not mask[i].any()]
    if empty:
        raise InputError(f"MoGe-2 found no valid pixel in image(s) {empty} of the batch (mask probability <= 0.5 "
                         "or behind the camera everywhere), so there is no metric depth or camera: check that "
                         "the image is a photo (not blank or a flat colour), or give the camera with fov_x.")
    depth = points[..., 2].clone()
    if force_projection:
        points = unproject_centres(depth, intrinsics)
    points = points * metric_scale[:, None, None, None]
    depth = depth * metric_scale[:, None, None]
    if apply_mask:
        points = torch.where(mask[..., None], points, math.inf)
        depth = torch.where(mask, depth, math.inf)
        normal = torch.where(mask[..., None], normal, 0.0) if normal is not None else None
    return {"points": points, "depth": depth, "mask": mask, "intrinsics": intrinsics, "normal": normal,
            "focal": focal, "shift": shift, "metric_scale": metric_scale}


def _check_image(image: Tensor) -> Tensor:
    """(3,H,W) or (B,3,H,W) float in [0,1] -> (B,3,H,W)."""
    if not isinstance(image, Tensor) or image.ndim not in (3, 4) or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise InputError(f"MoGe-2 infer: expected an RGB tensor (3,H,W) or (B,3,H,W) in [0,1], got {shape}; "
                         "for a ComfyUI IMAGE (B,H,W,3) use image.permute(0, 3, 1, 2).")
    x = image if image.ndim == 4 else image[None]
    if not x.is_floating_point():
        raise InputError(f"MoGe-2 infer: the image is {x.dtype}; pass floats in [0,1] (uint8 / 255).")
    if not torch.isfinite(x).all():
        raise InputError("MoGe-2 infer: the image has NaN/inf values; fix the node that produced it.")
    return x
