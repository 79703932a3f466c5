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

from . import depth3d, imaging, metrics
from .checkpoints import Source
from .encoders.base import ENCODER_EXPECTED, ENCODER_FIX, SemanticEncoder
from .errors import InputError
from .families.moge2 import MoGe2Model, align_to_metric, metric_point_cloud, window_outlier_filter
from .families.ppd import EXPECTED as DIT_EXPECTED
from .families.ppd import FIX as DIT_FIX
from .families.ppd.dit import PPDDiT
from .families.ppd.pipeline import DepthResult, PPDPipeline, Prepared
from .io import images
from .loaders import load, load_geometry_model
from .registry import in_slots
from .runtime import Precision

ProgressCallback = Callable[[int, int], None]
DEPTH_FILES = ("png16", "color", "npy", "exr")


def load_pipeline(dit: Source, encoder: Source, precision: Precision, *, device: torch.device | str = "cpu",
                  area: int = imaging.DEFAULT_AREA, compile: bool | str = False) -> PPDPipeline:
    """The image DiT and its semantic encoder loaded in the policy's weight dtype, run under its autocast; the
    video model's files are refused with their advice (use the video nodes)."""
    w = precision.weights
    return PPDPipeline(cast(PPDDiT, load(dit, in_slots("dit"), DIT_EXPECTED, DIT_FIX, device=device, dtype=w)),
                       cast(SemanticEncoder, load(encoder, in_slots("encoder"), ENCODER_EXPECTED, ENCODER_FIX,
                                                  device=device, dtype=w)),
                       area=area, autocast=precision.autocast, compile=compile)


def predict_depth(pipe: PPDPipeline, image: Tensor | Prepared, *, steps: int = 4, seed: int = 0,
                  ensemble_size: int = 1, area: int | None = None, long_side: int | None = None,
                  progress: ProgressCallback | None = None) -> DepthResult:
    """Depth for an RGB batch (B,3,H,W) in [0,1], or for one already resized and encoded (`Prepared`)."""
    prepared = image if isinstance(image, Prepared) else pipe.prepare(image, area=area, long_side=long_side)
    return pipe.predict(prepared, steps=steps, seed=seed, ensemble_size=ensemble_size, callback=progress)


def save_depth(depth: Tensor, files: dict[str, str | os.PathLike], *, size: tuple[int, int] | None = None,
               near_white: bool = True, overwrite: bool = False, png_compress_level: int | None = None
               ) -> dict[str, Path]:
    """Write one PPD depth map (h,w) as any of png16 (grey, normalised), color (spectral PNG), npy, exr.

    `size` (H, W) resizes first (bilinear), e.g. back to the input size; png16 is near = white unless
    `near_white` is False (then far = white, a z-depth look); `png_compress_level` 0-9 (None: PIL's 6).
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
        out["png16"] = images.write_png16(files["png16"], grey[0, 0].numpy(), overwrite=overwrite,
                                           compress_level=png_compress_level)
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
                   drop_invalid: bool = False) -> tuple[depth3d.PointCloud, Tensor, Tensor]:
    """A depth map (h,w) of `kind` -> (cloud, metric depth (h,w), intrinsics (3,3)) on its own grid.

    Metric scale from a reference depth when given, else PPD's near/far range; the camera is `intrinsics`,
    else a centred pinhole with horizontal `fov_deg`. `colors` (h',w',3) in [0,1], resized to the grid.
    `drop_invalid`: pixels that map to a depth <= 0 or infinite are left out (NaN in the metric depth)
    instead of refusing the image.
    """
    convert = depth3d.metric_depth_dropping if drop_invalid else depth3d.metric_depth
    converted = convert(depth, kind, near=near, far=far, reference=reference, reference_mask=reference_mask,
                        mask=mask)
    if isinstance(converted, tuple):
        metric, mask, _ = converted                                   # the keep-mask drops the invalid pixels
    else:
        metric = converted
    K = depth3d.camera_intrinsics(*metric.shape, fov_deg=fov_deg) if intrinsics is None else intrinsics
    cloud = depth3d.depth_to_point_cloud(metric, K, colors, mask=mask, stride=stride,
                                          discontinuity_threshold=discontinuity_threshold)
    return cloud, metric, K


def evaluate_edges(depth: Tensor, kind: str, focal_px: float, *, near: float = 1.0, far: float = 10.0,
                   gt: Tensor | None = None, background: Tensor | None = None,
                   drop_invalid: bool = False) -> tuple[dict, Tensor]:
    """Flying pixels of a depth map (h,w) (and, with metric ground truth `gt` on the same grid, edge errors);
    returns (numbers, heat map (h,w,3)) with flying pixels red over `background` or the depth.
    `drop_invalid`: pixels mapping to a depth <= 0 or infinite are left out (counted in numbers["dropped"])."""
    if drop_invalid:
        metric, keep, dropped = depth3d.metric_depth_dropping(depth, kind, near=near, far=far)
    else:
        metric, keep, dropped = depth3d.metric_depth(depth, kind, near=near, far=far), None, 0
    result = dict(metrics.flying_pixel_ratio(metric, focal_px, mask=keep))
    result["dropped"] = dropped
    if gt is not None:
        result.update(metrics.edge_point_metrics(depth, gt, focal_px, kind=kind))
    if background is None:      # dropped pixels shown as the farthest kept depth
        background = metric if keep is None else metric.nan_to_num(nan=float(metric[keep].max()))
    heat = metrics.flying_heatmap(result["flying_mask"], background)
    return result, heat


# --- MoGe-2 geometry: metric depth, camera, normals; the metric point cloud --------------------------------
# Normal-map colourings of unit normals n in the OpenCV camera frame (x right, y down, z forward): the sign
# each axis gets before rgb = (s * n + 1) / 2. A surface facing the camera (n = (0, 0, -1)) is (0.5, 0.5, 1).
NORMAL_CONVENTIONS = {
    "ControlNet NormalBae (R left, G up, B toward camera)": (-1.0, -1.0, -1.0),
    "OpenGL (R right, G up, B toward camera)": (1.0, -1.0, -1.0),
}


def load_geometry(source: Source, *, device: torch.device | str = "cpu") -> MoGe2Model:
    """The complete MoGe-2 model (float32, as the official default on the CPU) for metric geometry."""
    return load_geometry_model(source, device=device)


def save_normals(normal: Tensor, path: str | os.PathLike, *, convention: str = next(iter(NORMAL_CONVENTIONS)),
                 overwrite: bool = False) -> Path:
    """One normal map (H,W,3) as an 8-bit RGB PNG in `convention` (NormalBae by default)."""
    return images.write_png8_rgb(path, normal_image(normal.cpu(), convention).numpy(), overwrite=overwrite)


def estimate_geometry(model: MoGe2Model, image: Tensor, *, resolution_level: float = 9, fov_x: float | None = None,
                      apply_mask: bool = True) -> dict:
    """MoGe-2 on an RGB batch (B,3,H,W) in [0,1]: `model.infer` outputs on the CPU (depth +inf where invalid)."""
    if not (isinstance(resolution_level, (int, float)) and 0 <= resolution_level <= 9):
        raise InputError(f"resolution_level {resolution_level!r} must be between 0 (fastest, 1200 tokens) and 9 "
                         "(finest, 3600 tokens).")
    out = model.infer(image, resolution_level=resolution_level, fov_x=fov_x, apply_mask=apply_mask)
    return {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in out.items()}


def normal_image(normal: Tensor, convention: str = next(iter(NORMAL_CONVENTIONS))) -> Tensor:
    """Unit normals (B,H,W,3), OpenCV frame, 0 where invalid -> a normal-map image (B,H,W,3) in [0,1]."""
    if convention not in NORMAL_CONVENTIONS:
        raise InputError(f"unknown normal convention {convention!r}; choose one of {list(NORMAL_CONVENTIONS)}.")
    sign = normal.new_tensor(NORMAL_CONVENTIONS[convention])
    return ((normal * sign + 1) / 2).clamp(0, 1)


def geometry_reference(depth: Tensor, mask: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """MoGe-2 metric depth and mask (H,W) resized nearest to `size` (the PPD depth's grid); align_to_metric
    leaves out the masked pixels whose depth is not finite and positive."""
    d = torch.as_tensor(depth).float().reshape(1, 1, *depth.shape[-2:])
    m = torch.as_tensor(mask).float().reshape(1, 1, *mask.shape[-2:])
    if tuple(d.shape[-2:]) != tuple(size):
        d, m = imaging.resize_depth(d, size, "nearest"), imaging.resize_depth(m, size, "nearest")
    return d[0, 0], m[0, 0] > 0.5


def metric_geometry_cloud(ppd_depth: Tensor, reference: Tensor, reference_mask: Tensor, intrinsics: Tensor, *,
                          colors: Tensor | None = None, mask: Tensor | None = None, stride: int = 1,
                          discontinuity_threshold: float = 0.0, camera: Tensor | None = None
                          ) -> tuple[depth3d.PointCloud, Tensor, Tensor]:
    """PPD log-depth (h,w) -> metres by `align_to_metric` against a MoGe-2 depth (any size), unprojected with
    MoGe's normalised intrinsics (3,3) (or the pixel K `camera`) at pixel centres; only pixels valid in MoGe's
    mask (and `mask`). Returns (cloud, metric depth (h,w), pixel intrinsics (3,3)) like `depth_to_cloud`.
    """
    size = (ppd_depth.shape[-2], ppd_depth.shape[-1])
    ref, valid = geometry_reference(reference, reference_mask, size)
    metric = align_to_metric(ppd_depth, ref, valid)
    K = camera_from_geometry(intrinsics, *size) if camera is None else camera
    if mask is not None:
        keep = imaging.resize_depth(mask.float().reshape(1, 1, *mask.shape[-2:]), size, "nearest")[0, 0]
        valid = valid & (keep > 0.5)
        if not valid.any():
            raise InputError("the mask and MoGe-2's valid pixels do not overlap: no point is left; check the mask.")
    cloud = depth3d.depth_to_point_cloud(metric, K, colors, mask=valid, stride=stride,
                                          discontinuity_threshold=discontinuity_threshold)
    return cloud, metric, K


def camera_from_geometry(intrinsics: Tensor, height: int, width: int) -> Tensor:
    """MoGe's normalised intrinsics (3,3) -> float64 pixel K of a height x width grid; non-finite -> InputError."""
    K = torch.as_tensor(intrinsics)
    if K.shape != (3, 3) or not torch.isfinite(K).all() or not (K[0, 0] > 0 and K[1, 1] > 0):
        raise InputError(f"the camera intrinsics are not usable (a finite (3,3) matrix with focal lengths > 0 is "
                         f"needed), got {K.tolist() if K.numel() <= 9 else tuple(K.shape)}: re-run MoGe-2, or set "
                         "the camera by field of view instead.")
    return depth3d.pixel_intrinsics(K, height, width, (height, width))


def remove_outliers(cloud: depth3d.PointCloud, metric: Tensor, intrinsics: Tensor, *, neighbours: int = 20,
                    std_ratio: float = 3.0, window: int = 9) -> depth3d.PointCloud:
    """The statistical outlier filter (Open3D's rule, neighbours from a window x window image patch) on a cloud."""
    valid = torch.zeros(cloud.height, cloud.width, dtype=torch.bool)
    rows, cols = cloud.pixels[:, 0], cloud.pixels[:, 1]
    valid[rows, cols] = True
    keep = window_outlier_filter(depth3d.depth_to_points(metric.cpu().double(), intrinsics), valid,
                                 neighbours, std_ratio, window)[rows, cols]
    if not keep.any():
        raise InputError("the outlier filter removed every point: switch it off for this image.")
    return depth3d.PointCloud(cloud.points[keep], cloud.colors[keep], cloud.pixels[keep], cloud.height, cloud.width)


def official_metric_cloud(ppd_depth: Tensor, image: Tensor, geometry_out: dict, *, outlier_filter: str = "window"
                          ) -> depth3d.PointCloud:
    """run_point_cloud.py for one image: PPD depth (h,w) resized bilinear to the image (3,H,W), aligned to MoGe-2's
    metric depth in log(1 + d), unprojected at integer pixel indices with MoGe's K, outlier-filtered."""
    height, width = image.shape[-2:]
    pred = imaging.resize_depth(ppd_depth.reshape(1, 1, *ppd_depth.shape[-2:]).float().cpu(), (height, width))[0, 0]
    pts, colors, pixels = metric_point_cloud(pred, geometry_out["depth"][0], geometry_out["mask"][0],
                                             geometry_out["intrinsics"][0], image.permute(1, 2, 0).cpu(),
                                             outlier_filter=outlier_filter)
    if pts.shape[0] == 0:
        raise InputError("no points are left after MoGe-2's mask and the outlier filter.")
    assert colors is not None
    return depth3d.PointCloud(pts.float(), colors, pixels, int(height), int(width))
