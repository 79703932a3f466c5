"""The steps the CLI and the ComfyUI nodes share: load a pipeline, predict, save depth, make a cloud, score edges.

Plain tensors in and out ((B,C,H,W) images, (h,w) depth maps, file paths); callers convert their own formats.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
from torch import Tensor

from . import geometry, imaging, metrics, registry
from .checkpoints import Source
from .encoders.base import ENCODER_EXPECTED, ENCODER_FIX, SemanticEncoder
from .families.ppd import EXPECTED as DIT_EXPECTED
from .families.ppd import FIX as DIT_FIX
from .families.ppd.dit import PPDDiT
from .families.ppd.pipeline import DepthResult, PPDPipeline, Prepared
from .families.ppvd import VideoDepthPipeline, load_pi3, load_video_dit
from .io import images
from .runtime import Precision

ProgressCallback = Callable[[int, int], None]
DEPTH_FILES = ("png16", "color", "npy", "exr")


def load_pipeline(dit: Source, encoder: Source, precision: Precision, *, device: torch.device | str = "cpu",
                  area: int = imaging.DEFAULT_AREA, compile: bool | str = False) -> PPDPipeline:
    """The image DiT and its semantic encoder loaded in the policy's weight dtype, run under its autocast; the
    video model's files are refused with their advice (use the video nodes)."""
    w = precision.weights
    return PPDPipeline(cast(PPDDiT, registry.load(dit, ("ppd",), DIT_EXPECTED, DIT_FIX, device=device, dtype=w)),
                       cast(SemanticEncoder, registry.load(encoder, ("da2", "moge2"), ENCODER_EXPECTED, ENCODER_FIX,
                                                           device=device, dtype=w)),
                       area=area, autocast=precision.autocast, compile=compile)


def predict_depth(pipe: PPDPipeline, image: Tensor | Prepared, *, steps: int = 4, seed: int = 0,
                  ensemble_size: int = 1, area: int | None = None, long_side: int | None = None,
                  progress: ProgressCallback | None = None) -> DepthResult:
    """Depth for an RGB batch (B,3,H,W) in [0,1], or for one already resized and encoded (`Prepared`)."""
    prepared = image if isinstance(image, Prepared) else pipe.prepare(image, area=area, long_side=long_side)
    return pipe.predict(prepared, steps=steps, seed=seed, ensemble_size=ensemble_size, callback=progress)


def save_depth(depth: Tensor, files: dict[str, str | os.PathLike], *, size: tuple[int, int] | None = None,
               near_white: bool = True, overwrite: bool = False) -> dict[str, Path]:
    """Write one PPD depth map (h,w) as any of png16 (grey, normalised), color (spectral PNG), npy, exr.

    `size` (H, W) resizes first (bilinear), e.g. back to the input size; png16 is near = white unless
    `near_white` is False (then far = white, a z-depth look).
    """
    unknown = set(files) - set(DEPTH_FILES)
    if unknown:
        raise ValueError(f"unknown depth file kinds {sorted(unknown)}; choose from {DEPTH_FILES}")
    d = depth.reshape(1, 1, *depth.shape[-2:]).float().cpu()
    if size is not None and tuple(size) != tuple(d.shape[-2:]):
        d = imaging.resize_depth(d, size)
    out: dict[str, Path] = {}
    if "png16" in files:
        _, grey = imaging.render_depth(d, "controlnet" if near_white else "depth")
        out["png16"] = images.write_png16(files["png16"], grey[0, 0].numpy(), overwrite=overwrite)
    if "color" in files:
        rgb, _ = imaging.render_depth(d, "colormap", "spectral")
        out["color"] = images.write_png8_rgb(files["color"], rgb[0].permute(1, 2, 0).numpy(), overwrite=overwrite)
    if "npy" in files:
        out["npy"] = images.write_npy(files["npy"], d[0, 0].numpy(), overwrite=overwrite)
    if "exr" in files:
        out["exr"] = images.write_exr(files["exr"], d[0, 0].numpy(), overwrite=overwrite)
    return out


def depth_to_cloud(depth: Tensor, kind: str = "ppd", *, near: float = 1.0, far: float = 10.0,
                   intrinsics: Tensor | None = None, fov_deg: float = 60.0, colors: Tensor | None = None,
                   reference: Tensor | None = None, reference_mask: Tensor | None = None,
                   mask: Tensor | None = None, stride: int = 1, discontinuity_threshold: float = 0.0,
                   ) -> tuple[geometry.PointCloud, Tensor, Tensor]:
    """A depth map (h,w) of `kind` -> (cloud, metric depth (h,w), intrinsics (3,3)) on its own grid.

    Metric scale from a reference depth when given, else PPD's near/far range; the camera is `intrinsics`,
    else a centred pinhole with horizontal `fov_deg`. `colors` (h',w',3) in [0,1], resized to the grid.
    """
    metric = geometry.metric_depth(depth, kind, near=near, far=far, reference=reference,
                                   reference_mask=reference_mask, mask=mask)
    K = geometry.camera_intrinsics(*metric.shape, fov_deg=fov_deg) if intrinsics is None else intrinsics
    cloud = geometry.depth_to_point_cloud(metric, K, colors, mask=mask, stride=stride,
                                          discontinuity_threshold=discontinuity_threshold)
    return cloud, metric, K


def evaluate_edges(depth: Tensor, kind: str, focal_px: float, *, near: float = 1.0, far: float = 10.0,
                   gt: Tensor | None = None, background: Tensor | None = None) -> tuple[dict, Tensor]:
    """Flying pixels of a depth map (h,w) (and, with metric ground truth `gt` on the same grid, edge errors);
    returns (numbers, heat map (h,w,3)) with flying pixels red over `background` or the depth."""
    metric = geometry.metric_depth(depth, kind, near=near, far=far)
    result = dict(metrics.flying_pixel_ratio(metric, focal_px))
    if gt is not None:
        result.update(metrics.edge_point_metrics(depth, gt, focal_px, kind=kind))
    heat = metrics.flying_heatmap(result["flying_mask"], metric if background is None else background)
    return result, heat


# --- video (PPVD) --------------------------------------------------------------------------------------
def load_video_pipeline(dit: Source, encoder: Source, precision: Precision, *, device: torch.device | str = "cpu",
                        process_size: tuple[int, int] = (512, 512)) -> VideoDepthPipeline:
    """The video DiT (ppvd.pth) and Pi3 (pi3.safetensors) in the policy's weight dtype, run under its autocast;
    image-model files are refused with their advice (use the image nodes)."""
    w = precision.weights
    return VideoDepthPipeline(load_video_dit(dit, device, w), load_pi3(encoder, device, w),
                              process_size=process_size, autocast=precision.autocast)
