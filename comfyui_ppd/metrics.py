"""Edge quality of depth maps: flying pixels without ground truth, edge-aware point-cloud errors with it.

Depth here is depth up to scale (metric, or any positive multiple of it), larger = farther; convert
PPD's normalised log-depth with ``depth3d.metric_depth`` first. Pixel and camera conventions are the
ones of ``geometry``.

Flying pixels (no ground truth). A pixel is in an *edge band* when the depths in its
``window`` x ``window`` neighbourhood span more than ``jump`` (max / min > 1 + jump) and the
neighbourhood is not one plane (a plane's disparity is affine in pixel coordinates, so a least-squares
plane fit of 1/depth over a (2·window + 1) neighbourhood leaves a residual under 2 % of the local
disparity; such slanted surfaces never count). An edge-band pixel is *flying* when it sits off both
surfaces: its log-depth lies strictly inside the gap between the neighbourhood's nearest and farthest
depth, at least ``margin`` of the gap away from each, and the surface through it is steeper than
``max_angle_deg`` from the fronto-parallel plane on both sides (one-sided depth differences, so a
pixel at the rim of a curved object, which continues that object's surface, is not flagged).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .align import fit_affine
from .depth3d import (
    _as_map,
    _check_focal,
    _check_kind,
    _pixel_mask,
    camera_intrinsics,
    depth_to_points,
    from_fit_space,
    local_depth_range,
    to_fit_space,
)
from .errors import InputError

_PLANE_TOLERANCE = 0.02  # plane-fit residual / mean disparity below which a neighbourhood is one plane


def depth_edges(depth: torch.Tensor, *, valid: torch.Tensor | None = None, jump: float = 0.1,
                window: int = 3) -> torch.Tensor:
    """(H, W) bool: neighbourhoods with a relative depth span above ``jump`` that are not a single plane."""
    d = _as_map(depth, "depth")
    valid = torch.isfinite(d) & (d > 0) if valid is None else valid
    if not (isinstance(window, int) and window >= 3 and window % 2 == 1 and jump > 0):
        raise InputError(f"window {window!r} must be an odd whole number >= 3 and jump {jump} above 0 "
                         "(e.g. window 5, jump 0.1 = a 10 % depth step).")
    if min(d.shape) <= window:
        raise InputError(f"the depth map ({d.shape[1]} x {d.shape[0]}, W x H) is too small for a {window}-pixel "
                         "window: use a larger map or a smaller window.")
    lo, hi = local_depth_range(d, window, valid)
    spans = hi > (1 + jump) * lo
    return spans & valid & (_plane_residual(torch.where(valid, d, 0.0), window) > _PLANE_TOLERANCE)


def flying_pixel_ratio(depth: torch.Tensor, focal_px: float, *, mask: torch.Tensor | None = None,
                       jump: float = 0.1, window: int = 5, margin: float = 0.15,
                       max_angle_deg: float = 75.0) -> dict:
    """Flying pixels of a depth map (H, W) without ground truth; see the module docstring.

    Returns edge_ratio (flying / edge band), image_ratio (flying / valid pixels), flying_count,
    edge_count, valid_count, flying_mask and edge_mask ((H, W) bool, for ``flying_heatmap``).
    """
    _check_focal(focal_px)
    if not (0 <= margin < 0.5 and 0 < max_angle_deg < 90):
        raise InputError(f"margin {margin} must be in [0, 0.5) and max_angle_deg {max_angle_deg} in (0, 90) "
                         "(defaults 0.15 and 75).")
    d = _as_map(depth, "depth").float()
    valid = _pixel_mask(mask, d) & torch.isfinite(d) & (d > 0)
    if not valid.any():
        raise InputError("the depth has no finite positive pixels: convert it to depth first "
                         "(depth3d.metric_depth) or check the mask.")
    edge = depth_edges(d, valid=valid, jump=jump, window=window)
    lo, hi = local_depth_range(d, window, valid)
    position = torch.log(d / lo) / torch.log(hi / lo).clamp_min(1e-12)
    steep = _surface_slope(d, valid) * focal_px > math.tan(math.radians(max_angle_deg))
    flying = edge & steep & (position > margin) & (position < 1 - margin)
    n_fly, n_edge, n_valid = int(flying.sum()), int(edge.sum()), int(valid.sum())
    return {"edge_ratio": n_fly / max(n_edge, 1), "image_ratio": n_fly / n_valid, "flying_count": n_fly,
            "edge_count": n_edge, "valid_count": n_valid, "flying_mask": flying, "edge_mask": edge}


def edge_point_metrics(pred: torch.Tensor, gt: torch.Tensor, focal_px: float, *, kind: str = "depth",
                       mask: torch.Tensor | None = None, band_px: int = 2, jump: float = 0.1,
                       block: int = 2048) -> dict:
    """Edge-aware point-cloud errors of a prediction against metric ground truth, both (H, W).

    The prediction is aligned to the ground truth by least squares in its kind's space (log(1+d) for
    "ppd", d, 1/d). Ground-truth depth edges (3x3 test of ``depth_edges``) dilated by ``band_px``
    pick the edge band; both maps are unprojected there with the same camera, and ``chamfer`` is the
    mean of the two directions' mean nearest-neighbour distances (metres; NaN without edges). AbsRel
    and delta1 (max(p/g, g/p) < 1.25) cover every valid pixel.
    """
    _check_kind(kind)
    if not (isinstance(band_px, int) and band_px >= 0):
        raise InputError(f"band_px {band_px!r} must be a whole number >= 0 (pixels added around each edge).")
    p = _as_map(pred, "prediction").float()
    g = _as_map(gt, "ground truth").float().to(p.device)
    if p.shape != g.shape:
        raise InputError(f"prediction {tuple(p.shape)} and ground truth {tuple(g.shape)} differ in size: "
                         "resize the ground truth's source or predict at the ground truth's resolution.")
    valid = _pixel_mask(mask, g) & torch.isfinite(g) & (g > 0) & torch.isfinite(p)
    if int(valid.sum()) < 2:
        raise InputError("fewer than 2 pixels have both a finite prediction and a positive ground truth: "
                         "check the mask and the ground-truth units.")
    aligned, a, b = _align_least_squares(p, g, kind, valid)
    ok = valid & torch.isfinite(aligned) & (aligned > 0)
    edges = depth_edges(g, valid=ok, jump=jump, window=3)
    band = F.max_pool2d(edges[None, None].float(), 2 * band_px + 1, 1, band_px)[0, 0].bool() & ok
    K = camera_intrinsics(*g.shape, focal_px=focal_px)
    pred_pts, gt_pts = depth_to_points(aligned, K)[band], depth_to_points(g, K)[band]
    to_gt, to_pred = _nearest_distances(pred_pts, gt_pts, block), _nearest_distances(gt_pts, pred_pts, block)
    ratio = torch.maximum(aligned / g, g / aligned)[ok]
    return {"chamfer": 0.5 * (to_gt + to_pred), "chamfer_pred_to_gt": to_gt, "chamfer_gt_to_pred": to_pred,
            "abs_rel": float(((aligned - g).abs() / g)[ok].mean()),
            "delta1": float((ratio < 1.25).float().mean()),
            "edge_points": int(band.sum()), "scale": a, "shift": b}


def flying_heatmap(flying_mask: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) float image: flying pixels red over the dimmed ``background``.

    ``background`` is an RGB image (H', W', 3) in [0, 1] (or uint8) or a depth map (H', W'), shown as
    grey with nearer brighter; it is resized to the mask.
    """
    m = _as_map(flying_mask, "flying mask").bool()
    bg = torch.as_tensor(background).to(m.device)
    while bg.ndim > 3 or (bg.ndim == 3 and bg.shape[0] == 1 and bg.shape[-1] not in (3, 4)):
        bg = bg[0]
    if bg.ndim == 2:
        bg = _depth_grey(bg.float())[..., None].expand(*bg.shape, 3)
    elif bg.ndim != 3 or bg.shape[-1] not in (3, 4):
        raise InputError(f"background must be an (H, W, 3) image or an (H, W) depth map, "
                         f"got {tuple(bg.shape)}.")
    bg = bg[..., :3].float() / (255.0 if bg.dtype == torch.uint8 else 1.0)
    if bg.shape[:2] != m.shape:
        bg = F.interpolate(bg.permute(2, 0, 1)[None], size=tuple(m.shape), mode="bilinear",
                           align_corners=False)[0].permute(1, 2, 0)
    out = 0.35 * bg.clamp(0, 1)
    out[m] = out.new_tensor([1.0, 0.0, 0.0])
    return out


def format_summary(result: dict) -> str:
    """One line from ``flying_pixel_ratio`` and / or ``edge_point_metrics`` results (merge the dicts)."""
    parts = []
    if "edge_ratio" in result:
        parts.append(f"flying {100 * result['edge_ratio']:.1f}% of {result['edge_count']:,} edge px "
                     f"({result['flying_count']:,} px, {100 * result['image_ratio']:.2f}% of image)")
    if "chamfer" in result:
        chamfer = ("no depth edges" if math.isnan(result["chamfer"]) else
                   f"edge Chamfer {1000 * result['chamfer']:.1f} mm over {result['edge_points']:,} px")
        parts.append(f"{chamfer}, AbsRel {result['abs_rel']:.4f}, delta1 {100 * result['delta1']:.1f}%")
    return " | ".join(parts) if parts else "no metrics"


# ---------------------------------------------------------------- helpers

def _plane_residual(depth: torch.Tensor, window: int) -> torch.Tensor:
    """RMS residual of a least-squares plane fit of disparity over (2·window + 1)² pixels, / mean disparity.

    The window is symmetric, so the plane's three coefficients separate into a box mean and two
    moment filters. Borders are padded by linear extrapolation, which keeps planes planar.
    """
    r = window
    dtype = torch.float32 if depth.device.type == "mps" else torch.float64
    q = torch.where(depth > 0, depth.to(dtype).reciprocal(), 0.0)
    x = _pad_linear(q[None, None], r)
    n = 2 * r + 1
    box = torch.full((n,), 1.0 / n, dtype=dtype, device=q.device)
    ramp = torch.arange(-r, r + 1, dtype=dtype, device=q.device) / n
    mean = _separable(x, box, box)
    mu, mv = _separable(x, ramp, box), _separable(x, box, ramp)
    second = r * (r + 1) / 3  # mean of u² over -r..r
    var = _separable(x * x, box, box) - mean ** 2 - (mu ** 2 + mv ** 2) / second
    return (var.clamp_min(0).sqrt() / mean.abs().clamp_min(1e-12)).to(depth.dtype)


def _separable(x: torch.Tensor, along_w: torch.Tensor, along_h: torch.Tensor) -> torch.Tensor:
    x = F.conv2d(x, along_w.view(1, 1, 1, -1))
    return F.conv2d(x, along_h.view(1, 1, -1, 1))[0, 0]


def _pad_linear(x: torch.Tensor, r: int) -> torch.Tensor:
    """Pad (1, 1, H, W) by r on every side with point reflection (2·edge - mirror)."""
    left = 2 * x[..., :, :1] - x[..., :, 1:r + 1].flip(-1)
    right = 2 * x[..., :, -1:] - x[..., :, -r - 1:-1].flip(-1)
    x = torch.cat([left, x, right], -1)
    top = 2 * x[..., :1, :] - x[..., 1:r + 1, :].flip(-2)
    bottom = 2 * x[..., -1:, :] - x[..., -r - 1:-1, :].flip(-2)
    return torch.cat([top, x, bottom], -2)


def _surface_slope(d: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """|grad log d| from the smaller one-sided difference along each axis (inf between invalid pixels)."""
    log_d = torch.where(valid, d.clamp_min(1e-12).log(), math.nan)
    padded = F.pad(log_d[None, None], (1, 1, 1, 1), value=math.nan)[0, 0]
    centre = padded[1:-1, 1:-1]

    def one_sided(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        da, db = (a - centre).abs().nan_to_num(math.inf), (centre - b).abs().nan_to_num(math.inf)
        return torch.minimum(da, db)

    sx = one_sided(padded[1:-1, 2:], padded[1:-1, :-2])
    sy = one_sided(padded[2:, 1:-1], padded[:-2, 1:-1])
    return torch.hypot(sx, sy)


def _align_least_squares(p: torch.Tensor, g: torch.Tensor, kind: str, valid: torch.Tensor
                         ) -> tuple[torch.Tensor, float, float]:
    """Prediction fitted to ground truth by ordinary least squares in the kind's space."""
    fit = fit_affine(p[valid].double(), to_fit_space(g[valid].double(), kind))
    if bool(fit.flat):
        raise InputError("the prediction is constant over the valid pixels, so it cannot be aligned: "
                         "check that the depth node ran on this image.")
    a, b = float(fit.scale), float(fit.shift)
    return from_fit_space(a * p.double() + b, kind).float(), a, b


def _nearest_distances(a: torch.Tensor, b: torch.Tensor, block: int) -> float:
    """Mean distance from each point of ``a`` to its nearest point of ``b``, in (block x 8·block) tiles."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return math.nan
    dtype = torch.float32 if a.device.type == "mps" else torch.float64
    centre = b.mean(0)
    a, b = (a - centre).to(dtype), (b - centre).to(dtype)
    total = 0.0
    for i in range(0, a.shape[0], block):
        rows = a[i:i + block]
        best = torch.full((rows.shape[0],), math.inf, dtype=dtype, device=a.device)
        for j in range(0, b.shape[0], 8 * block):
            best = torch.minimum(best, torch.cdist(rows, b[j:j + 8 * block]).amin(1))
        total += float(best.sum())
    return total / a.shape[0]


def _depth_grey(d: torch.Tensor) -> torch.Tensor:
    """Depth as grey in [0, 1], nearer brighter, over its finite positive pixels."""
    ok = torch.isfinite(d) & (d > 0)
    inv = torch.where(ok, d.clamp_min(1e-12).reciprocal(), 0.0)
    lo, hi = (inv[ok].min(), inv[ok].max()) if ok.any() else (inv.new_tensor(0.0), inv.new_tensor(1.0))
    return torch.where(ok, (inv - lo) / (hi - lo).clamp_min(1e-12), 0.0)
