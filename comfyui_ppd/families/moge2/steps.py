"""MoGe-2's steps the CLI and the nodes share: geometry of an image, normal maps, and the one metric point cloud
of PPD depth aligned to MoGe-2 (in the official convention or at pixel centres)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ... import depth3d, imaging
from ...errors import InputError
from ...io import images
from .metric import OUTLIER_FILTERS, align_to_metric, intrinsics_to_pixels, metric_points
from .model import MoGe2Model

# Normal-map colourings of unit normals n in the OpenCV camera frame (x right, y down, z forward): the sign
# each axis gets before rgb = (s * n + 1) / 2. A surface facing the camera (n = (0, 0, -1)) is (0.5, 0.5, 1).
NORMAL_CONVENTIONS = {
    "ControlNet NormalBae (R left, G up, B toward camera)": (-1.0, -1.0, -1.0),
    "OpenGL (R right, G up, B toward camera)": (1.0, -1.0, -1.0),
}
CONVENTIONS = ("official", "centres")


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


def camera_from_geometry(intrinsics: Tensor, height: int, width: int) -> Tensor:
    """MoGe's normalised intrinsics (3,3) -> float64 pixel K of a height x width grid; non-finite -> InputError."""
    K = torch.as_tensor(intrinsics)
    if K.shape != (3, 3) or not torch.isfinite(K).all() or not (K[0, 0] > 0 and K[1, 1] > 0):
        raise InputError(f"the camera intrinsics are not usable (a finite (3,3) matrix with focal lengths > 0 is "
                         f"needed), got {K.tolist() if K.numel() <= 9 else tuple(K.shape)}: re-run MoGe-2, or set "
                         "the camera by field of view instead.")
    return depth3d.pixel_intrinsics(K, height, width, (height, width))


def metric_cloud(ppd_depth: Tensor, reference: Tensor, reference_mask: Tensor, intrinsics: Tensor, *,
                 convention: str = "centres", colors: Tensor | None = None, mask: Tensor | None = None,
                 stride: int = 1, discontinuity_threshold: float = 0.0, camera: Tensor | None = None,
                 outlier_filter: str = "off") -> tuple[depth3d.PointCloud, Tensor, Tensor]:
    """PPD log-depth (h,w) -> metres by `align_to_metric` against MoGe-2's metric depth, unprojected with MoGe's
    normalised intrinsics (3,3); only pixels valid in MoGe's mask. Returns (cloud, metric depth, pixel K).

    convention "official" (run_point_cloud.py, the CLI): the depth resized bilinear to MoGe's grid, unprojected
    at integer pixel indices (cx = W/2), `colors` (H,W,3) on that grid, `outlier_filter` "window" | "exact" |
    "off". "centres" (the nodes): on PPD's grid (MoGe's outputs resized nearest), at pixel centres (or the pixel
    K `camera`), with `mask`, `stride` and `discontinuity_threshold` as depth_to_point_cloud's.
    """
    if convention == "official":
        if mask is not None or stride != 1 or discontinuity_threshold or camera is not None:
            raise InputError("the official convention takes no mask, stride, discontinuity threshold or camera.")
        height, width = reference.shape[-2:]
        pred = imaging.resize_depth(ppd_depth.reshape(1, 1, *ppd_depth.shape[-2:]).float().cpu(),
                                    (height, width))[0, 0]
        if outlier_filter not in OUTLIER_FILTERS:
            raise InputError(f"outlier_filter {outlier_filter!r}: choose one of {OUTLIER_FILTERS}.")
        metric = align_to_metric(pred, reference, reference_mask)
        pts, colours, pixels = metric_points(metric, reference_mask, intrinsics, colors,
                                             outlier_filter=outlier_filter)
        if pts.shape[0] == 0:
            raise InputError("no points are left after MoGe-2's mask and the outlier filter.")
        assert colours is not None
        cloud = depth3d.PointCloud(pts.float(), colours, pixels, int(height), int(width))
        return cloud, metric, intrinsics_to_pixels(intrinsics, int(height), int(width))
    if convention != "centres":
        raise InputError(f"unknown convention {convention!r}; choose one of {CONVENTIONS}.")
    if outlier_filter != "off":
        raise InputError("at pixel centres the outlier filter is outputs.remove_outliers, applied to the cloud.")
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
