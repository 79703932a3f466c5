"""The official metric point-cloud chain after MoGe-2 (run_point_cloud.py), deterministic and in torch.

1. `align_to_metric`: PPD depth -> metres by a line in log(1 + d) fitted to MoGe's metric depth.
2. `intrinsics_to_pixels` + `unproject_pixels`: depth2pcd at INTEGER pixel indices (u = j, cx = W/2).
3. `statistical_outlier_filter`: 20 neighbours, 3 sigma, as Open3D's remove_statistical_outlier.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ...align import fit_affine, fit_affine_robust
from ...errors import InputError

CLIP_MIN = 1e-3               # metres; the official lower clip of the aligned depth
TUKEY_C = 4.685               # align.fit_affine_robust's biweight cut-off, in robust sigmas


def _median(t: Tensor) -> Tensor:
    """numpy-style median (mean of the two middle values for an even count)."""
    s = t.sort().values
    n = s.numel()
    return (s[(n - 1) // 2] + s[n // 2]) / 2


def align_to_metric(ppd_depth: Tensor, metric_depth: Tensor, mask: Tensor) -> Tensor:
    """PPD depth (H,W) -> metres: log(1 + metric) ≈ a·ppd + b on the masked pixels, then expm1, clipped.

    Same branches and clipping as the official `recover_metric_depth_ransac`; the fit is `fit_log_depth`.
    Slope <= 0 falls back to exp(ppd·mean(y)/mean(ppd)) - 1. Output is clipped to [1e-3, max reference].
    """
    pred, a, b, fallback, top = fit_log_depth(ppd_depth, metric_depth, mask)
    p = pred.double()
    metric = torch.expm1(a * p + b) if fallback is None else torch.expm1(p * fallback)
    return metric.clamp(CLIP_MIN, top).to(torch.float32)


def fit_log_depth(ppd_depth: Tensor, metric_depth: Tensor, mask: Tensor
                  ) -> tuple[Tensor, float, float, float | None, float]:
    """The official fit, deterministic: (ppd map, a, b, fallback ratio or None, max reference depth).

    RANSAC is replaced by our robust line (`align.fit_affine_robust`) and least squares on its inliers
    (|residual| <= 4.685 robust sigmas, the support of its Tukey weights), as RANSAC ends with least
    squares on its consensus set; on outlier-free data both are least squares on all pixels. A single
    usable pixel gives a = 1, b = 0 (the official except-branch); a <= 0 gives the fallback ratio
    mean(y)/mean(ppd). Reference pixels that are not finite or not > 0 (MoGe writes +inf where invalid)
    are left out.
    """
    pred = _as_map(ppd_depth, "ppd_depth")
    ref = _as_map(metric_depth, "metric_depth").to(pred.device)
    m = _as_map(mask, "mask").to(pred.device).bool()
    if ref.shape != pred.shape or m.shape != pred.shape:
        raise InputError(f"align_to_metric: ppd_depth {tuple(pred.shape)}, metric_depth {tuple(ref.shape)} and "
                         f"mask {tuple(m.shape)} must have the same size; resize the MoGe outputs to the depth grid.")
    if not torch.isfinite(pred[m]).all():
        raise InputError("align_to_metric: the PPD depth has NaN/inf values inside the mask; fix the depth node.")
    usable = m & torch.isfinite(ref) & (ref > 0)
    if not usable.any():
        why = ("the mask selects no pixel (MoGe-2 found no valid pixel in this image)" if not m.any() else
               "the reference depth is zero, negative or infinite at every masked pixel")
        raise InputError(f"align_to_metric: {why}, so there is no metric scale to fit. Check that the reference "
                         "is MoGe-2's metric depth of the same image (not a disparity or an empty map).")
    x = pred[usable].double()
    y = torch.log1p(ref[usable].double())
    a, b = 1.0, 0.0
    if x.numel() >= 2:
        a, b = fit_affine_robust(x, y)
        r = (y - (a * x + b)).abs()
        band = max(TUKEY_C * 1.4826 * float(_median(r)), 1e-9 * (1 + float(y.abs().max())))
        inliers = fit_affine(x, y, (r <= band).double())
        if not bool(inliers.flat):
            a, b = float(inliers.scale), float(inliers.shift)
    fallback = None if a > 0 else float(y.mean() / x.mean())
    return pred, a, b, fallback, float(ref[usable].max())


def intrinsics_to_pixels(intrinsics: Tensor, height: int, width: int) -> Tensor:
    """Normalised K (3,3) (cx = 0.5) -> pixel K: row 0 times W, row 1 times H (cx = W/2), float32 like the official."""
    k = torch.as_tensor(intrinsics).detach().float().clone()
    if k.shape != (3, 3):
        raise InputError(f"intrinsics must be one (3,3) matrix, got {tuple(k.shape)}; take one image of the batch.")
    _check_intrinsics(k)
    k[0, 0] *= width
    k[1, 1] *= height
    k[0, 2] *= width
    k[1, 2] *= height
    return k


def unproject_pixels(depth: Tensor, intrinsic_px: Tensor, mask: Tensor) -> Tensor:
    """(N,3) float64 points of the masked pixels, row-major, at INTEGER indices: X = (j - cx)/fx·Z.

    The official depth2pcd convention (no +0.5; with cx = W/2 the cloud sits half a pixel off MoGe's
    pixel-centre unprojection). Use it to reproduce PPD's PLY; `depth3d.depth_to_points` uses centres.
    """
    d = _as_map(depth, "depth")
    m = _as_map(mask, "mask").to(d.device).bool()
    k = torch.as_tensor(intrinsic_px).to(d.device)
    _check_intrinsics(k)
    rows, cols = m.nonzero(as_tuple=True)
    z = d[rows, cols].double()
    if not (torch.isfinite(z).all() and (z > 0).all()):
        raise InputError("unproject_pixels: masked pixels with depth <= 0 or inf; mask them out "
                         "(MoGe writes +inf at invalid pixels).")
    fx, fy, cx, cy = (k[i, j].double() for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    return torch.stack([(cols.double() - cx) / fx * z, (rows.double() - cy) / fy * z, z], dim=-1)


def statistical_outlier_filter(points: Tensor, neighbours: int = 20, std_ratio: float = 3.0,
                               block_elements: int = 1 << 24) -> Tensor:
    """Indices (ascending) of points kept by Open3D's remove_statistical_outlier(neighbours, std_ratio).

    d_i = mean distance to the `neighbours` nearest points including itself (exact kNN, blocked, O(N^2));
    keep 0 < d_i < mean + std_ratio·std, with mean and std over the d_i > 0 as Open3D computes them.
    """
    pts = torch.as_tensor(points)
    if pts.ndim != 2 or pts.shape[1] != 3 or not torch.isfinite(pts).all():
        raise InputError(f"statistical_outlier_filter: expected finite (N,3) points, got {tuple(pts.shape)}.")
    n = pts.shape[0]
    if n < 2:
        return torch.arange(n, device=pts.device)
    k = min(neighbours, n)
    p64 = pts.double()
    d = torch.empty(n, dtype=torch.float64, device=pts.device)
    rows = max(1, block_elements // n)
    for s in range(0, n, rows):
        dist = torch.cdist(p64[s:s + rows], p64, compute_mode="donot_use_mm_for_euclid_dist")
        d[s:s + rows] = dist.topk(k, dim=1, largest=False).values.sum(1) / k
    pos = d > 0
    mean = d[pos].sum() / n
    std = math.sqrt(float(((d[pos] - mean) ** 2).sum()) / (n - 1))
    return ((d > 0) & (d < mean + std_ratio * std)).nonzero().squeeze(1)


def window_outlier_filter(points: Tensor, valid: Tensor, neighbours: int = 20, std_ratio: float = 3.0,
                          window: int = 9, rows_per_chunk: int = 64) -> Tensor:
    """(H,W) keep-mask: `statistical_outlier_filter` with each pixel's neighbours searched only in the
    `window` x `window` image patch around it, O(N·window²) instead of O(N²).

    points (H,W,3) on the depth grid, valid (H,W) bool. A depth map's 3-D neighbours are its image
    neighbours except across occlusions, where the exact search may find a nearer point elsewhere: there
    d_i can only be larger here (fewer candidates), so the approximation removes at least the points the
    exact filter removes near such edges. Pixels with fewer than `neighbours` valid candidates average
    over those they have (d_i = 0 alone, which the rule drops as Open3D drops isolated points).
    """
    pts = torch.as_tensor(points)
    v = torch.as_tensor(valid).to(pts.device).bool()
    if pts.ndim != 3 or pts.shape[-1] != 3 or v.shape != pts.shape[:2]:
        raise InputError(f"window_outlier_filter: expected points (H,W,3) and valid (H,W), got "
                         f"{tuple(pts.shape)} and {tuple(v.shape)}.")
    if not (isinstance(window, int) and window >= 3 and window % 2 == 1):
        raise InputError(f"window {window!r} must be an odd whole number >= 3 (9 is the default).")
    if not torch.isfinite(pts[v]).all():
        raise InputError("window_outlier_filter: valid pixels have non-finite points; mask them out.")
    h, w, r = v.shape[0], v.shape[1], window // 2
    grid = torch.where(v[..., None], pts, 0.0).permute(2, 0, 1)[None]                  # (1,3,H,W)
    ok = v[None, None].to(pts.dtype)
    grid, ok = F.pad(grid, (r, r, r, r)), F.pad(ok, (r, r, r, r))
    d = torch.zeros(h, w, dtype=torch.float64, device=pts.device)
    for top in range(0, h, rows_per_chunk):
        rows = min(rows_per_chunk, h - top)
        slab, slab_ok = grid[:, :, top:top + rows + 2 * r], ok[:, :, top:top + rows + 2 * r]
        cand = F.unfold(slab, window).view(3, window * window, rows * w)                # (3, K², n)
        cand_ok = F.unfold(slab_ok, window).view(window * window, rows * w) > 0.5
        centre = cand[:, (window * window) // 2][:, None]                                # (3, 1, n)
        dist = ((cand - centre) ** 2).sum(0).sqrt()
        dist = torch.where(cand_ok, dist, torch.inf)                                     # (K², n)
        k = min(neighbours, window * window)
        near = dist.topk(k, dim=0, largest=False).values
        finite = torch.isfinite(near)
        mean = torch.where(finite, near, 0.0).sum(0) / finite.sum(0).clamp_min(1)
        d[top:top + rows] = mean.view(rows, w).double()
    dv = d[v]
    n = dv.numel()
    if n < 2:
        return v.clone()
    pos = dv > 0
    mean = dv[pos].sum() / n
    std = math.sqrt(float(((dv[pos] - mean) ** 2).sum()) / (n - 1))
    return v & (d > 0) & (d < mean + std_ratio * std)


def _check_intrinsics(k: Tensor) -> None:
    if not torch.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise InputError(f"the camera intrinsics are not usable (focal lengths must be finite and > 0): "
                         f"{k.tolist()}. Re-run MoGe-2, or give a field of view instead.")


def _as_map(t: Tensor, name: str) -> Tensor:
    t = torch.as_tensor(t)
    while t.ndim > 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2:
        raise InputError(f"{name} must be one (H,W) map, got shape {tuple(t.shape)}; pass one image at a time.")
    return t


OUTLIER_FILTERS = ("window", "exact", "off")


def metric_point_cloud(ppd_depth: Tensor, metric_depth: Tensor, mask: Tensor, intrinsics: Tensor,
                       image: Tensor | None = None, *, outlier_filter: str = "exact"
                       ) -> tuple[Tensor, Tensor | None, Tensor]:
    """run_point_cloud.py after MoGe for one image: align, K to pixels, depth2pcd, outlier filter.

    ppd_depth, metric_depth, mask (H,W) on the same grid; intrinsics (3,3) normalised (MoGe's); image
    (H,W,3) in [0,1] or uint8 for colours. `outlier_filter`: "exact" (Open3D's all-pairs kNN, O(N^2)),
    "window" (`window_outlier_filter`, neighbours from a 9x9 image window) or "off". Returns (N,3) float64
    points in the OpenCV frame (the PLY writer flips y and z, as the official script), (N,3) float32
    colours (or None) and the (N,2) (row, col) pixel of each point, masked pixels in row-major order.
    """
    if outlier_filter not in OUTLIER_FILTERS:
        raise InputError(f"outlier_filter {outlier_filter!r}: choose one of {OUTLIER_FILTERS}.")
    return metric_points(align_to_metric(ppd_depth, metric_depth, mask), mask, intrinsics, image,
                         outlier_filter=outlier_filter)


def metric_points(metric: Tensor, mask: Tensor, intrinsics: Tensor, image: Tensor | None = None, *,
                  outlier_filter: str = "exact") -> tuple[Tensor, Tensor | None, Tensor]:
    """metric_point_cloud after the alignment: metric depth (H,W) in metres -> (points, colours, pixels)."""
    if outlier_filter not in OUTLIER_FILTERS:
        raise InputError(f"outlier_filter {outlier_filter!r}: choose one of {OUTLIER_FILTERS}.")
    m = _as_map(mask, "mask").to(metric.device).bool()
    points = unproject_pixels(metric, intrinsics_to_pixels(intrinsics, *metric.shape), m)
    pixels = m.nonzero()
    colors = None
    if image is not None:
        img = torch.as_tensor(image).to(metric.device)
        if img.shape[:2] != metric.shape or img.ndim != 3:
            raise InputError(f"image {tuple(img.shape)} must be (H,W,3) on the depth grid {tuple(metric.shape)}.")
        colors = (img.float() / 255 if img.dtype == torch.uint8 else img.float())[m][:, :3]
    if outlier_filter == "exact":
        keep = statistical_outlier_filter(points)
    elif outlier_filter == "window":
        grid = points.new_zeros(*metric.shape, 3)
        grid[m] = points
        keep = window_outlier_filter(grid, m)[m].nonzero().squeeze(1)
    else:
        keep = torch.arange(points.shape[0], device=points.device)
    return points[keep], (colors[keep] if colors is not None else None), pixels[keep]
