"""Scale/shift alignment of overlapping video windows, exactly as the official video pipeline does it.

Each window after the first is fitted (least squares, all pixels, float32 normal equations) so that its
slots 0, 1, 2 match the reference frames: window 0's frame 0, and the previous window's aligned frames 8
and 15 (the keyframes it received). No robustness, no mask: parity with the official output.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

KEYFRAMES = (0, 8, 15)        # window slots whose (aligned) predictions become the next references
OVERLAP = 3                   # slots 0..2 of every later window hold the keyframes


def fit_scale_shift_f32(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> tuple[float, float]:
    """(s, b) minimising sum mask * (s * prediction + b - target)^2, by the official float32 normal equations.

    The five sums are numpy float32 sums (pairwise summation over the flattened arrays), det and the
    solution float32 scalars, so the result is bit-identical to the official fitter. det == 0 exactly
    (e.g. a constant prediction) gives the identity (1, 0); nothing else is guarded.
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


def fit_scale_shift(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Batched, float64 form of the same normal equations: (B, ...) maps -> (B, 2) of (s, b) per item.

    For measuring (temporal.py), not for parity. An item whose masked prediction is constant (det below
    1e-12 of a00 * a11: no scale can be told apart from a shift) gets s = 1 and the mean offset as b; an
    item with no masked pixel gets (1, 0).
    """
    p = prediction.detach().flatten(1).to("cpu", torch.float64)
    t = target.detach().flatten(1).to("cpu", torch.float64)
    m = torch.ones_like(p) if mask is None else mask.detach().flatten(1).to("cpu", torch.float64)
    a00, a01, a11 = (m * p * p).sum(1), (m * p).sum(1), m.sum(1)
    b0, b1 = (m * p * t).sum(1), (m * t).sum(1)
    det = a00 * a11 - a01 * a01
    solvable = det > 1e-12 * a00 * a11
    safe = torch.where(solvable, det, torch.ones_like(det))
    s = torch.where(solvable, (a11 * b0 - a01 * b1) / safe, torch.ones_like(det))
    b = torch.where(solvable, (-a01 * b0 + a00 * b1) / safe, (b1 - a01) / a11.clamp_min(1))
    return torch.stack([s, b], 1)


class WindowAligner:
    """Feed window predictions (F, H, W) in order (F = 16 frames); `add` returns the aligned frames that window contributes.

    Window 0 is kept as is (all of its frames); window w >= 1 is fitted on its first OVERLAP slots and
    contributes slots OVERLAP.. . Only the three reference frames are kept between windows.
    """

    def __init__(self) -> None:
        self.references: list[Tensor] = []
        self.scale_shift: list[tuple[float, float]] = []      # one (s, b) per window after the first

    def add(self, window: Tensor) -> Tensor:
        window = window.float()
        if not self.references:
            self.references = [window[k] for k in KEYFRAMES]
            return window
        s, b = fit_scale_shift_f32(window[:OVERLAP], torch.stack(self.references))
        self.scale_shift.append((s, b))
        aligned = window * s + b
        self.references = [self.references[0]] + [aligned[k] for k in KEYFRAMES[1:]]
        return aligned[OVERLAP:]


def align_windows(windows: Tensor) -> Tensor:
    """Windows (num_windows, F, H, W) of predictions -> the aligned video (F + (F - OVERLAP)(num_windows - 1), H, W)."""
    aligner = WindowAligner()
    return torch.cat([aligner.add(w) for w in windows])
