"""The one least-squares line fit y = a*x + b (weighted, batched), its robust 1-D variant, and the official
video pipeline's float32 fit (different numerics on purpose: bit-exact parity with its window alignment).

Every alignment in the engine goes through here: the seed ensemble (pipeline), the ground-truth fit of the
edge metrics, the metric-scale fit of the geometry, the flicker metric (flicker.py, `fit_affine` in
float64) and PPVD's window alignment (`fit_scale_shift_f32`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .errors import InputError


class Fit(NamedTuple):
    """Scale and shift along the fitted dim (kept, size 1); `flat` where x had no (weighted) spread."""

    scale: Tensor
    shift: Tensor
    flat: Tensor


def fit_affine(x: Tensor, y: Tensor, weights: Tensor | None = None, dim: int = -1) -> Fit:
    """Least squares y ~ scale * x + shift along `dim` (weighted when given); scale = 1 where x is flat.

    Flat means a weighted variance of x at most 1e-12 * (1 + mean^2) (or no weight at all): far below
    float32 resolution for depth-like values, so only constant inputs count as flat.
    """
    w = torch.ones_like(x) if weights is None else weights.to(x.dtype).expand_as(x)
    sw = w.sum(dim, keepdim=True)
    mx, my = (w * x).sum(dim, keepdim=True) / sw, (w * y).sum(dim, keepdim=True) / sw
    sxx = (w * (x - mx) ** 2).sum(dim, keepdim=True)
    flat = ~(sxx > 1e-12 * sw * (1 + mx * mx))
    scale = torch.where(flat, torch.ones_like(sxx), (w * (x - mx) * (y - my)).sum(dim, keepdim=True) / sxx)
    return Fit(scale, my - scale * mx, flat)


def fit_affine_robust(x: torch.Tensor, y: torch.Tensor, iterations: int = 30) -> tuple[float, float]:
    """Robust line fit y ≈ a·x + b for 1-D tensors; returns (a, b).

    Deterministic iteratively reweighted least squares with Tukey's biweight (c = 4.685 robust
    sigmas, sigma from the residuals' MAD), started from Siegel's repeated-median line on 512 evenly
    spaced samples, which nearly half gross outliers cannot drag. No random sampling, so no seed. Like the
    official alignment, a slope a <= 0 falls back to a = mean(y) / mean(x), b = 0.
    """
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    x, y = x.reshape(-1).to(dtype), y.reshape(-1).to(dtype)
    a, b = _repeated_median_start(x, y)
    for _ in range(iterations):
        r = y - (a * x + b)
        sigma = 1.4826 * r.abs().median()
        if sigma <= 1e-12 * (1 + y.abs().max()):
            break  # exact fit
        w = (1 - (r / (4.685 * sigma)) ** 2).clamp_min(0) ** 2
        fit = fit_affine(x, y, w)
        if bool(fit.flat):
            break
        a, b = float(fit.scale), float(fit.shift)
    if not a > 0:
        if x.mean().abs() < 1e-12:
            raise InputError("the depth and the reference depth run in opposite directions and the depth "
                             "averages zero, so no scale can be fitted: check the depth kind "
                             "('depth' vs 'disparity') and that both maps show the same view.")
        a, b = float(y.mean() / x.mean()), 0.0
    return float(a), float(b)


def _repeated_median_start(x: torch.Tensor, y: torch.Tensor, samples: int = 512) -> tuple[float, float]:
    """Siegel's repeated-median line on an evenly spaced subsample (robust to nearly half outliers)."""
    pick = torch.linspace(0, x.numel() - 1, min(samples, x.numel()), device=x.device).long()
    xs, ys = x[pick], y[pick]
    dx = xs[None, :] - xs[:, None]
    slopes = (ys[None, :] - ys[:, None]) / torch.where(dx == 0, math.nan, dx)
    a = float(slopes.nanmedian(1).values.nanmedian())
    a = 0.0 if math.isnan(a) else a
    return a, float((y - a * x).median())


def fit_scale_shift_f32(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> tuple[float, float]:
    """(s, b) minimising sum mask * (s * prediction + b - target)^2, by the official float32 normal equations.

    The five sums are numpy float32 sums (pairwise summation over the flattened arrays), det and the
    solution float32 scalars, so the result is bit-identical to the official video alignment (`fit_affine`
    centres the data first, which is better conditioned but not bit-equal). det == 0 exactly (e.g. a
    constant prediction) gives the identity (1, 0); nothing else is guarded.
    """
    p = prediction.detach().to("cpu", torch.float32).contiguous().numpy()
    t = target.detach().to("cpu", torch.float32).contiguous().numpy()
    m = np.ones_like(p) if mask is None else mask.detach().to("cpu", torch.float32).contiguous().numpy()
    a00, a01, a11 = np.sum(m * p * p), np.sum(m * p), np.sum(m)
    b0, b1 = np.sum(m * p * t), np.sum(m * t)
    det = a00 * a11 - a01 * a01
    if det == 0:
        return 1.0, 0.0
    return float((a11 * b0 - a01 * b1) / det), float((-a01 * b0 + a00 * b1) / det)
