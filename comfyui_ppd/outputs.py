"""What any depth becomes, whatever family made it: depth files, point clouds (and which metric scale wins),
edge scores, outlier removal. Plain tensors in and out ((h,w) depth maps, file paths)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from . import depth3d, imaging, metrics
from .errors import InputError
from .families.moge2 import window_outlier_filter
from .io import images

DEPTH_FILES = ("png16", "color", "npy", "exr")


def scale_source(kind: str, *, reference: bool, moge2: bool, moge: bool = False) -> str:
    """Which metric scale a point cloud takes (the nodes and the CLI decide alike): a given `reference` depth
    wins; else PPD log-depth with this pack's MoGe-2 geometry is fitted to it in log(1 + d) (the official
    alignment, "log_fit"); else the depth of any MoGe geometry (`moge2`, or core MoGe's `moge`) is a robust
    reference ("geometry"); else PPD's near/far range ("near_far")."""
    if reference:
        return "reference"
    if moge2 and kind == "ppd":
        return "log_fit"
    return "geometry" if moge2 or moge else "near_far"


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
