"""PPVD on a stream of frames: window after window, holding one window of frames and the small carry.

The same windows, keyframes and alignment as `VideoDepthPipeline.run` (pipeline.py), so the depth is the
same bit for bit, but the clip's length is never needed up front: window 0 takes frames 0..15, window w >= 1
takes the keyframes (slots 0, 8, 15 of window w-1) and the next 13 frames; the last window is padded with
copies of the last frame. Between windows only a `Carry` is kept (three frames, their aligned depth, the fits),
which is also all a resumed run needs.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import InputError
from ...io.video import float_frames
from ...sampling import sampling_timesteps
from .align import KEYFRAMES, WindowAligner
from .pipeline import STRIDE, WINDOW, VideoDepthPipeline

ProgressCallback = Callable[[int, int], None]


@dataclass
class Carry:
    """What window `window` needs from the windows before it: the keyframes (uint8 (3,H,W,3): video frame 0
    and slots 8, 15 of the previous window), their aligned depth (3,H,W) and every (scale, shift) so far;
    `written` frames of depth came out before it."""

    window: int = 0
    written: int = 0
    keyframes: np.ndarray | None = None
    references: Tensor | None = None
    scale_shift: list[tuple[float, float]] = field(default_factory=list)

    @property
    def next_frame(self) -> int:
        """Index of the first video frame that window `window` reads."""
        return 0 if self.window == 0 else STRIDE * self.window + WINDOW - STRIDE


@dataclass
class WindowDepth:
    """One window's new depth (k,H,W) float32 for video frames first..first+k-1, and the carry after it."""

    index: int
    first: int
    depth: Tensor
    carry: Carry


def windows_for(num_frames: int) -> int:
    """How many windows a clip of `num_frames` frames takes (pipeline.window_plan's count)."""
    return 1 if num_frames <= WINDOW else 1 + -(-(num_frames - WINDOW) // STRIDE)


def stream_depth(pipe: VideoDepthPipeline, frames: Iterator[np.ndarray], noise: Tensor, steps: int = 4,
                 carry: Carry | None = None, callback: ProgressCallback | None = None,
                 total_windows: int | None = None) -> Iterator[WindowDepth]:
    """Depth window by window for uint8 RGB frames (H,W,3) from `frames`, which starts at `carry.next_frame`
    (frame 0 without a carry); `noise` (16,1,h,w) is the latent every window starts from. `callback(done,
    total)` after every DiT evaluation, counted from window 0, with `total_windows` (an estimate; grows when
    the clip is longer) may raise to stop."""
    carry = carry or Carry()
    aligner = WindowAligner()
    if carry.window:
        if carry.keyframes is None or carry.references is None:
            raise InputError("a resumed video needs the keyframes and their depth from the previous window.")
        aligner.references = list(carry.references.float())
        aligner.scale_shift = list(carry.scale_shift)
    n_evals = len(sampling_timesteps(steps))
    w, written, keys, size = carry.window, carry.written, carry.keyframes, None
    while True:
        need = WINDOW if w == 0 else STRIDE
        new = list(islice(frames, need))
        if not new:
            if w == 0:
                raise InputError("the video has no frames; give at least one frame.")
            return
        size = size or new[0].shape
        real = len(new)
        new += [new[-1]] * (need - real)                                  # the last window: copies of the last frame
        window = np.stack(new if keys is None or w == 0 else [*keys, *new])          # (16,H,W,3) uint8
        del new
        total = max(total_windows or 0, w + 1) * n_evals

        def step(done: int, _: int, base: int = w * n_evals, total: int = total) -> None:
            if callback is not None:
                callback(base + done, total)

        pred = pipe.window_prediction(float_frames(torch.from_numpy(window)), noise, steps, step)
        pred = F.interpolate(pred, size=window.shape[1:3], mode="bilinear", align_corners=False)
        depth = aligner.add(pred[:, 0].cpu())[:real]
        keys = window[list(KEYFRAMES)]
        del window, pred
        carry = Carry(w + 1, written + real, keys, torch.stack(aligner.references), list(aligner.scale_shift))
        yield WindowDepth(w, written, depth, carry)
        if real < need:
            return
        w, written = w + 1, written + real
