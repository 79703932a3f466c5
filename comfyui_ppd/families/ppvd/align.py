"""Scale/shift alignment of overlapping video windows, exactly as the official video pipeline does it.

Each window after the first is fitted (comfyui_ppd.align.fit_scale_shift_f32: least squares over all
pixels, the official float32 normal equations) so that its
slots 0, 1, 2 match the reference frames: window 0's frame 0, and the previous window's aligned frames 8
and 15 (the keyframes it received). No robustness, no mask: parity with the official output.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...align import fit_scale_shift_f32

KEYFRAMES = (0, 8, 15)        # window slots whose (aligned) predictions become the next references
OVERLAP = 3                   # slots 0..2 of every later window hold the keyframes


class WindowAligner:
    """Feed window predictions (F, H, W) in order (F = 16 frames); `add` returns the aligned frames that
    window contributes.

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
