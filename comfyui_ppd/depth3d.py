"""Depth maps to metric depth, point clouds and meshes (the PLY / GLB writers are in comfyui_ppd.io.meshes).

Conventions, shared with ``metrics.py``:

* Camera frame: OpenCV, x right, y down, z forward, metres. glTF, Blender and three.js use y up and
  -z forward, which is a 180 degree turn about x: multiply by ``OPENCV_TO_GLTF`` = (1, -1, -1).
  Clouds and meshes stay in the OpenCV frame in memory; the writers (io.meshes) flip to the viewer frame, as the
  official ``run_point_cloud.py`` does before writing its PLY.
* Pixel centres: pixel (row v, column u) covers [u, u+1) x [v, v+1), so its centre is
  (u + 0.5, v + 0.5) and the principal point of a centred camera is (W/2, H/2). With this choice the
  image is symmetric about the principal point, a horizontal FOV spans exactly the W pixels
  (tan(fov/2) = (W/2)/fx), MoGe's normalised intrinsics (cx = 0.5) are the same camera, and rescaling
  intrinsics between resolutions is a plain multiplication. The official code uses integer u with
  cx = W/2, which shifts every point by half a pixel (0.5·z/fx, under 0.1 % of the image width).
* Depth kinds: "ppd" is PPD's normalised log-depth p (≈0 at the near 2 % quantile, ≈1 at the far
  98 % one); "depth" is metric or relative depth (larger = farther); "disparity" is inverse depth
  (larger = nearer). Scale fits happen in each kind's own space: log(1+d), d and 1/d.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .align import fit_affine_robust
from .errors import InputError

KINDS = ("ppd", "depth", "disparity")
OPENCV_TO_GLTF = (1.0, -1.0, -1.0)
MAX_POINTS_BEFORE_WARNING = 10_000_000


# ---------------------------------------------------------------- camera

def focal_from_fov(fov_deg: float, width: int) -> float:
    """Focal length in pixels that makes ``width`` pixels span a horizontal FOV of ``fov_deg``."""
    if not 0.0 < fov_deg < 180.0:
        raise InputError(f"field of view {fov_deg} degrees is impossible for a pinhole camera: "
                         "give a value strictly between 0 and 180 (60 is a typical photo).")
    return (width / 2) / math.tan(math.radians(fov_deg) / 2)


def fov_from_focal(focal_px: float, width: int) -> float:
    """Horizontal FOV in degrees of a focal length in pixels."""
    _check_focal(focal_px)
    return math.degrees(2 * math.atan((width / 2) / focal_px))


def camera_intrinsics(height: int, width: int, *, fov_deg: float = 60.0,
                      focal_px: float | None = None) -> torch.Tensor:
    """(3, 3) float64 pixel intrinsics, square pixels, principal point at the image centre.

    ``focal_px`` wins over ``fov_deg`` (horizontal) when given.
    """
    f = focal_from_fov(fov_deg, width) if focal_px is None else _check_focal(focal_px)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)


def pixel_intrinsics(K: torch.Tensor, height: int, width: int, source_size: tuple[float, float]) -> torch.Tensor:
    """(3, 3) float64 pixel intrinsics for a ``height`` x ``width`` grid from a K of another grid.

    Normalised intrinsics (fx / W, fy / H, cx = cy = 0.5, pixel centres at (u + 0.5) / W, our convention,
    as core MoGe stores them) are scaled by (width, height). A K whose principal point is beyond 2 is
    taken as pixels of the ``source_size`` (H, W) grid and rescaled to the requested grid.
    """
    K = torch.as_tensor(K).detach().to("cpu", torch.float64)
    if K.shape != (3, 3):
        raise InputError(f"intrinsics must be (3, 3), got {tuple(K.shape)}.")
    K = K.clone()
    if K[0, 2].abs() < 2 and K[1, 2].abs() < 2:  # normalised image coordinates
        K[0] *= width
        K[1] *= height
    else:
        src_h, src_w = source_size
        K[0] *= width / src_w
        K[1] *= height / src_h
    K[2] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return K


def _check_focal(focal_px: float) -> float:
    if not (math.isfinite(focal_px) and focal_px > 0):
        raise InputError(f"focal length {focal_px} px must be a positive number: give the focal length "
                         "in pixels of the depth map, or a field of view instead.")
    return float(focal_px)


# ---------------------------------------------------------------- scale

def to_fit_space(depth: torch.Tensor, kind: str) -> torch.Tensor:
    """Metric depth in the space where a ``kind`` prediction is affine: log(1+d), d or 1/d."""
    _check_kind(kind)
    return {"ppd": torch.log1p, "depth": lambda t: t, "disparity": torch.reciprocal}[kind](depth)


def from_fit_space(values: torch.Tensor, kind: str) -> torch.Tensor:
    """Inverse of ``to_fit_space``."""
    _check_kind(kind)
    return {"ppd": torch.expm1, "depth": lambda t: t, "disparity": torch.reciprocal}[kind](values)


def metric_depth(depth: torch.Tensor, kind: str = "ppd", *, near: float = 1.0, far: float = 5.0,
                 reference: torch.Tensor | None = None, reference_mask: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Turn a ``kind`` depth map (H, W) into metric depth (H, W), checked inside ``mask``.

    With ``reference`` (metric depth, any size, resized nearest to the depth grid) the map is fitted
    robustly (``fit_affine_robust``) in the kind's space on pixels valid in both. Without it, "ppd"
    maps p to log(1+d) = log(1+near) + p·(log(1+far) - log(1+near)) (``near``/``far`` are used only
    here), "depth" is taken as is and "disparity" is inverted. NaN / inf pixels inside the mask raise
    (they mean a broken upstream node; mask them out on purpose instead), as do depths <= 0 after
    mapping (``metric_depth_dropping`` drops those instead).
    """
    out, bad, valid, hint = _to_metric(depth, kind, near, far, reference, reference_mask, mask)
    if bad.any():
        raise InputError(f"{int(bad.sum())} of {int(valid.sum())} pixels map to a depth <= 0 or infinite "
                         f"(kind '{kind}'). {hint}")
    return out


MIN_KEPT_FRACTION = 0.01  # metric_depth_dropping refuses when fewer pixels than this share of the valid ones remain


def metric_depth_dropping(depth: torch.Tensor, kind: str = "ppd", *, near: float = 1.0, far: float = 5.0,
                          reference: torch.Tensor | None = None, reference_mask: torch.Tensor | None = None,
                          mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``metric_depth`` that drops pixels mapping to a depth <= 0 or infinite instead of refusing the image.

    Returns (metric (H, W) with NaN at dropped pixels, keep (H, W) bool = mask minus dropped, dropped count).
    Refuses only when fewer than MIN_KEPT_FRACTION of the valid pixels are left.
    """
    out, bad, valid, hint = _to_metric(depth, kind, near, far, reference, reference_mask, mask)
    keep = valid & ~bad
    n_bad, n_valid = int(bad.sum()), int(valid.sum())
    if int(keep.sum()) < max(1.0, MIN_KEPT_FRACTION * n_valid):
        raise InputError(f"{n_bad} of {n_valid} pixels map to a depth <= 0 or infinite (kind '{kind}'), so "
                         f"almost nothing is left. {hint}")
    return torch.where(bad, torch.full_like(out, math.nan), out), keep, n_bad


def _to_metric(depth: torch.Tensor, kind: str, near: float, far: float, reference: torch.Tensor | None,
               reference_mask: torch.Tensor | None, mask: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """(metric depth, bad = valid pixels <= 0 or infinite, valid = the checked mask, fix-it hint)."""
    _check_kind(kind)
    d = _as_map(depth, "depth")
    d = d if d.is_floating_point() else d.float()
    valid = _pixel_mask(mask, d)
    _require_finite(d, valid, "depth")
    if reference is not None:
        out, hint = _align_to_reference(d, kind, reference, reference_mask, valid)
    elif kind == "ppd":
        out, hint = _ppd_range(d, valid, near, far)
    elif kind == "depth":
        out, hint = d, ("depth must be positive in front of the camera: if larger values mean nearer this is "
                        "a disparity map (use kind 'disparity'), otherwise mask out the invalid pixels.")
    else:
        out, hint = d.reciprocal(), ("zero or negative disparity has no finite depth (often sky or an affine-"
                                     "shifted disparity): give a reference depth, or mask those pixels.")
    return out, valid & ~(torch.isfinite(out) & (out > 0)), valid, hint


def _ppd_range(p: torch.Tensor, valid: torch.Tensor, near: float, far: float) -> tuple[torch.Tensor, str]:
    """PPD log-depth mapped onto [near, far] metres, and the fix-it hint for depths <= 0."""
    if not (0 < near < far and math.isfinite(far)):
        raise InputError(f"near {near} m and far {far} m must satisfy 0 < near < far "
                         "(e.g. near 1, far 5 for a room, near 2, far 50 for a street).")
    values = p[valid]
    if values.numel() and float(values.max() - values.min()) < 1e-6:
        raise InputError(f"the PPD depth is constant ({float(values[0]):.4g}) over all pixels, so it "
                         "holds no depth: check that the image is not blank and that the depth node ran; "
                         "for a deliberately flat map use kind 'depth'.")
    ln, lf = math.log1p(near), math.log1p(far)
    p_min = float(values.min()) if values.numel() else 0.0
    need = math.expm1(-p_min * lf / (1 - p_min)) if p_min < 0 else near
    hint = (f"With near {near:g} m and far {far:g} m the nearest pixels (p = {p_min:.3f}) land at or behind "
            f"the camera: raise near above {need:.3g} m, lower far, or mask those pixels.")
    return torch.expm1(ln + p * (lf - ln)), hint


def _align_to_reference(d: torch.Tensor, kind: str, reference: torch.Tensor,
                        reference_mask: torch.Tensor | None, valid: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Robust affine fit of the depth to a metric reference in the kind's space."""
    ref = _resize_nearest(_as_map(reference, "reference depth").float().to(d.device), d.shape)
    usable = valid & torch.isfinite(ref) & (ref > 0)
    if reference_mask is not None:
        usable &= _resize_nearest(_as_map(reference_mask, "reference mask").to(d.device), d.shape).bool()
    x = d[usable]
    if x.numel() < 16:
        raise InputError(f"only {x.numel()} pixels have both a depth and a valid reference depth: check the "
                         "reference mask, or use a near/far range instead of a reference.")
    if float(x.max() - x.min()) < 1e-6:
        raise InputError("the depth is constant where the reference is valid, so no scale can be fitted: "
                         "check that the depth node ran on the same image.")
    a, b = fit_affine_robust(x, to_fit_space(ref[usable].double(), kind))
    hint = (f"The fit to the reference (a = {a:.4g}, b = {b:.4g}) sends these pixels behind the camera: "
            "check that the depth and the reference show the same view and kind, or mask those pixels.")
    return from_fit_space(a * d + b, kind).to(d.dtype), hint


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"unknown depth kind '{kind}': use one of {', '.join(KINDS)}.")


# ---------------------------------------------------------------- unprojection

@dataclass
class PointCloud:
    """Coloured points in the OpenCV camera frame (metres) and the source pixel of each point."""
    points: torch.Tensor   # (N, 3) float32
    colors: torch.Tensor   # (N, 3) float32 in [0, 1]
    pixels: torch.Tensor   # (N, 2) int64 (row, col) in the depth grid
    height: int
    width: int


@dataclass
class Mesh:
    """A triangulated depth map in the OpenCV camera frame; faces face the camera."""
    vertices: torch.Tensor  # (V, 3) float32
    faces: torch.Tensor     # (F, 3) int64
    colors: torch.Tensor    # (V, 3) float32 in [0, 1]


def depth_to_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) camera-frame points of a metric (H, W) depth: K^-1 (u + 0.5, v + 0.5, 1) · z."""
    d = _as_map(depth, "depth")
    h, w = d.shape
    K_inv = torch.linalg.inv(torch.as_tensor(intrinsics, dtype=torch.float64).cpu()).to(d.device, d.dtype)
    v, u = torch.meshgrid(torch.arange(h, device=d.device, dtype=d.dtype) + 0.5,
                          torch.arange(w, device=d.device, dtype=d.dtype) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1)  # (H, W, 3)
    return (pix @ K_inv.T) * d[..., None]


def local_depth_range(depth: torch.Tensor, window: int, valid: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) of the valid depths in each ``window`` x ``window`` neighbourhood, both (H, W)."""
    valid = torch.ones_like(depth, dtype=torch.bool) if valid is None else valid
    pad = window // 2
    hi = F.max_pool2d(torch.where(valid, depth, 0.0)[None, None], window, 1, pad)[0, 0]
    lo = -F.max_pool2d(torch.where(valid, -depth, -math.inf)[None, None], window, 1, pad)[0, 0]
    return lo, hi


def discontinuity_mask(depth: torch.Tensor, threshold: float,
                       valid: torch.Tensor | None = None) -> torch.Tensor:
    """True where the 3x3 depth span (max - min) / depth exceeds ``threshold`` (core MoGe's mesh test)."""
    lo, hi = local_depth_range(depth, 3, valid)
    return (hi - lo) > threshold * depth


def depth_to_point_cloud(depth: torch.Tensor, intrinsics: torch.Tensor, image: torch.Tensor | None = None, *,
                         mask: torch.Tensor | None = None, stride: int = 1,
                         discontinuity_threshold: float = 0.0) -> PointCloud:
    """Unproject metric depth (H, W) at its own grid into a ``PointCloud``.

    ``image`` (H', W', 3) colours the points and is resized to the depth grid (never the reverse);
    without it the points are shaded by depth. ``stride`` keeps every stride-th row and column at
    their own pixel centres. ``mask`` (True = keep) and ``discontinuity_threshold`` (> 0 drops points
    whose 3x3 span / depth exceeds it, 0.04 in core MoGe) are filters, off by default.
    """
    d, keep = _metric_pixels(depth, mask, stride, discontinuity_threshold)
    grid = torch.zeros_like(keep)
    grid[::stride, ::stride] = True
    rows, cols = (keep & grid).nonzero(as_tuple=True)
    if rows.numel() == 0:
        raise InputError("no points are left after the mask and the discontinuity filter: loosen or turn off "
                         "discontinuity_threshold (0 = off) or check the mask.")
    if rows.numel() > MAX_POINTS_BEFORE_WARNING:
        warnings.warn(f"the point cloud has {rows.numel():,} points; files will be large and viewers may "
                      "stall. Use stride 2 for a quarter of the points.", stacklevel=2)
    points = depth_to_points(d, intrinsics)[rows, cols].float()
    colors = _pixel_colors(image, d, keep)[rows, cols]
    return PointCloud(points, colors, torch.stack([rows, cols], -1), d.shape[0], d.shape[1])


def depth_to_mesh(depth: torch.Tensor, intrinsics: torch.Tensor, image: torch.Tensor | None = None, *,
                  mask: torch.Tensor | None = None, stride: int = 1,
                  discontinuity_threshold: float = 0.04) -> Mesh:
    """Grid-triangulate metric depth (H, W) on every ``stride``-th pixel into a ``Mesh``.

    Each grid quad with four kept corners gives two triangles, unless its depth span
    (max - min) / min exceeds ``discontinuity_threshold`` (0 = never cut). Unused vertices are dropped.
    """
    d, keep = _metric_pixels(depth, mask, stride, 0.0)
    sub, ok = d[::stride, ::stride], keep[::stride, ::stride]
    index = torch.full(ok.shape, -1, dtype=torch.long, device=d.device)
    index[ok] = torch.arange(int(ok.sum()), device=d.device)
    a, b, c, e = index[:-1, :-1], index[:-1, 1:], index[1:, 1:], index[1:, :-1]  # TL, TR, BR, BL
    quad = (a >= 0) & (b >= 0) & (c >= 0) & (e >= 0)
    if discontinuity_threshold > 0:
        corners = torch.stack([sub[:-1, :-1], sub[:-1, 1:], sub[1:, 1:], sub[1:, :-1]])
        quad &= corners.amax(0) - corners.amin(0) <= discontinuity_threshold * corners.amin(0)
    a, b, c, e = a[quad], b[quad], c[quad], e[quad]
    if a.numel() == 0:
        raise InputError("the mesh has no triangles: every quad touches a masked pixel or crosses a "
                         "discontinuity. Raise discontinuity_threshold (0 = off), lower stride or check "
                         "the mask.")
    faces = torch.cat([torch.stack([a, e, b], -1), torch.stack([b, e, c], -1)])  # normals towards the camera
    used = torch.zeros(int(ok.sum()), dtype=torch.bool, device=d.device)
    used[faces.reshape(-1)] = True
    remap = torch.cumsum(used.long(), 0) - 1
    rows, cols = ok.nonzero(as_tuple=True)
    rows, cols = rows[used] * stride, cols[used] * stride
    vertices = depth_to_points(d, intrinsics)[rows, cols].float()
    return Mesh(vertices, remap[faces], _pixel_colors(image, d, keep)[rows, cols])


def opencv_to_gltf(points: torch.Tensor) -> torch.Tensor:
    """OpenCV camera frame (y down, z forward) to glTF / Blender (y up, -z forward)."""
    return points * points.new_tensor(OPENCV_TO_GLTF)


def _metric_pixels(depth: torch.Tensor, mask: torch.Tensor | None, stride: int,
                   discontinuity_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked metric depth map and the (H, W) pixels that pass the mask and the filter."""
    if not (isinstance(stride, int) and stride >= 1):
        raise InputError(f"stride {stride!r} must be a whole number >= 1 (1 = every pixel).")
    if not (math.isfinite(discontinuity_threshold) and discontinuity_threshold >= 0):
        raise InputError(f"discontinuity_threshold {discontinuity_threshold} must be >= 0 "
                         "(0 = off, 0.04 typical).")
    d = _as_map(depth, "depth")
    d = d if d.is_floating_point() else d.float()
    keep = _pixel_mask(mask, d)
    _require_finite(d, keep, "metric depth")
    bad = keep & (d <= 0)
    if bad.any():
        raise InputError(f"{int(bad.sum())} pixels have a metric depth <= 0, which is behind the camera: "
                         "convert the depth with metric_depth (near/far or a reference), or mask those "
                         "pixels.")
    if discontinuity_threshold > 0:
        keep = keep & ~discontinuity_mask(d, discontinuity_threshold, keep)
    return d, keep


# ---------------------------------------------------------------- inputs

def _as_map(t: torch.Tensor, name: str) -> torch.Tensor:
    """One (H, W) map from (H, W), (1, H, W) or (1, 1, H, W)."""
    t = torch.as_tensor(t)
    while t.ndim > 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2:
        raise InputError(f"{name} must be one (H, W) map, got shape {tuple(t.shape)}: pass one image "
                         "at a time (batch size 1).")
    return t


def _pixel_mask(mask: torch.Tensor | None, d: torch.Tensor) -> torch.Tensor:
    """The (H, W) bool keep-mask on the depth grid (nearest resize); refuses an empty one."""
    if mask is None:
        return torch.ones_like(d, dtype=torch.bool)
    m = _resize_nearest(_as_map(mask, "mask").to(d.device), d.shape)
    m = m > 0.5 if m.is_floating_point() else m.bool()
    if not m.any():
        raise InputError("the mask selects no pixels (it is all zero): invert it if it marks what to drop, "
                         "or leave it unconnected to keep every pixel.")
    return m


def _resize_nearest(t: torch.Tensor, size: tuple) -> torch.Tensor:
    """Nearest-neighbour resize of an (H, W) map (bool kept as bool)."""
    if tuple(t.shape) == tuple(size):
        return t
    out = F.interpolate(t[None, None].float(), size=tuple(size), mode="nearest-exact")[0, 0]
    return out > 0.5 if t.dtype == torch.bool else out


def _require_finite(d: torch.Tensor, valid: torch.Tensor, name: str) -> None:
    bad = valid & ~torch.isfinite(d)
    if bad.any():
        raise InputError(f"the {name} has {int(bad.sum())} NaN/inf pixels (of {d.numel()}): fix the node "
                         "that made it, or pass a mask that excludes those pixels.")


def _pixel_colors(image: torch.Tensor | None, d: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) colours in [0, 1]: the image resized to the depth grid, or a shading of the kept depths."""
    h, w = d.shape
    if image is None:
        inv = d.reciprocal()
        lo, hi = inv[keep].min(), inv[keep].max()
        grey = 0.25 + 0.75 * (inv - lo) / (hi - lo).clamp_min(1e-12)  # nearer is brighter
        return grey[..., None].expand(h, w, 3).float()
    img = torch.as_tensor(image).to(d.device)
    while img.ndim > 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise InputError(f"image must be (H, W, 3) RGB (ComfyUI IMAGE), got shape {tuple(img.shape)}.")
    img = img[..., :3].float() / (255.0 if img.dtype == torch.uint8 else 1.0)
    if img.shape[:2] != (h, w):  # box average over each depth pixel's footprint when shrinking
        shrink = img.shape[0] >= h and img.shape[1] >= w
        mode = {"mode": "area"} if shrink else {"mode": "bilinear", "align_corners": False}
        img = F.interpolate(img.permute(2, 0, 1)[None], size=(h, w), **mode)[0].permute(1, 2, 0)
    return img.clamp(0, 1)
