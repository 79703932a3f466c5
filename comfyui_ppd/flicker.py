"""Flicker, measured: how much a depth video jumps from frame to frame where the scene does not change.

For every consecutive pair (t, t+1) the least-squares scale and shift with s_t * d[t+1] + b_t ~ d[t] is
fitted on the pixels *static* in both frames: the caller's mask, by default every pixel (right for a
still camera). A pixel is static when its true depth does not change between the two frames, e.g. the
background of a still camera, or, for a moving camera, a surface whose depth at that pixel stays the same
(a wall seen during a sideways pan) or frames already warped onto each other by a known motion: motion
compensation is the caller's part. Non-finite pixels never count.

Figures (exact depth scores 0 on every one; depth units are the video's own: PPD's normalised depth,
or metres):
- scale / shift jumps: RMS over pairs of log s_t and of b_t, the affine flicker between neighbours;
- per-frame scale / shift: the pairs chained, frame t ~ exp(L_t) * frame 0 + M_t; their spread (std
  over frames) is the size of a per-frame scale/shift jitter, slow drift included;
- change: mean |d[t+1] - d[t]| on static pixels, what the eye sees; residual: the same after the fit,
  the part of the flicker that no scale/shift explains. Both also in % of the depth range (2-98 %).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .align import fit_affine
from .errors import InputError

CHUNK = 16              # frame pairs measured at once (float64 copies of 2 x 16 frames)
MIN_SCALE = 1e-6        # a non-positive fit (anti-correlated frames) counts as this scale


@dataclass
class FlickerReport:
    """Per-pair (N-1,) and per-frame (N,) figures of a depth video; `summary` is one line for a UI."""

    pair_log_scale: Tensor      # (N-1,) log s_t: s_t * d[t+1] + b_t ~ d[t] on static pixels; NaN: no pixel
    pair_shift: Tensor          # (N-1,) b_t
    change: Tensor              # (N-1,) mean |d[t+1] - d[t]| on static pixels
    residual: Tensor            # (N-1,) mean |s_t * d[t+1] + b_t - d[t]| on static pixels
    static_fraction: Tensor     # (N-1,) share of pixels compared
    frame_log_scale: Tensor     # (N,) L_t with frame t ~ exp(L_t) * frame 0 + M_t; L_0 = 0
    frame_shift: Tensor         # (N,) M_t; NaN after a pair without static pixels
    depth_range: float          # median over frames of the 2 %..98 % depth spread on static pixels

    @property
    def scale_jump(self) -> float:
        """RMS of the pairs' log-scales (0.01 ~ 1 % scale jumps)."""
        return _rms(self.pair_log_scale)

    @property
    def shift_jump(self) -> float:
        """RMS of the pairs' shifts, in depth units."""
        return _rms(self.pair_shift)

    @property
    def scale_spread(self) -> float:
        """Std over frames of the chained per-frame log-scale."""
        return _std(self.frame_log_scale)

    @property
    def shift_spread(self) -> float:
        """Std over frames of the chained per-frame shift, in depth units."""
        return _std(self.frame_shift)

    @property
    def mean_change(self) -> float:
        return _mean(self.change)

    @property
    def mean_residual(self) -> float:
        return _mean(self.residual)

    def percent_of_range(self, value: float) -> float:
        return 100 * value / self.depth_range if self.depth_range > 0 else math.nan

    @property
    def summary(self) -> str:
        pairs = int(torch.isfinite(self.pair_log_scale).sum())
        if pairs == 0:
            return f"flicker: no static pixels in any of {len(self.change)} frame pairs"
        static = 100 * self.static_fraction.mean().item()
        return (f"flicker over {pairs} frame pairs ({static:.0f}% px static): frame-to-frame change "
                f"{_percent(self.percent_of_range(self.mean_change))} of depth range "
                f"({_percent(self.percent_of_range(self.mean_residual))} after scale/shift fit); jumps: scale "
                f"{_percent(100 * self.scale_jump)}, shift {_percent(self.percent_of_range(self.shift_jump))} of "
                f"range; per-frame spread: scale {_percent(100 * self.scale_spread)}, "
                f"shift {_percent(self.percent_of_range(self.shift_spread))} of range")

    def as_dict(self) -> dict:
        """Plain numbers and lists (for JSON)."""
        lists = {k: getattr(self, k).tolist() for k in ("pair_log_scale", "pair_shift", "change", "residual",
                                                        "static_fraction", "frame_log_scale", "frame_shift")}
        figures = {k: getattr(self, k) for k in ("scale_jump", "shift_jump", "scale_spread", "shift_spread",
                                                  "mean_change", "mean_residual")}
        return {**figures, "depth_range": self.depth_range, "summary": self.summary, **lists}


def _percent(value: float) -> str:
    """A percentage for the summary line; beyond 999 % (unrelated frames, e.g. a scene cut) just '>999%'."""
    return f"{value:.2f}%" if abs(value) <= 999 else ">999%"


def measure_flicker(depth: Tensor, static: Tensor | None = None) -> FlickerReport:
    """Flicker figures of a depth video (N,1,H,W) or (N,H,W), N >= 2.

    `static`: bool (N,H,W), (N,1,H,W), (H,W) or (1,H,W), True where the frame shows static scene; a pair
    compares the pixels static in both frames. None: every pixel (a still camera).
    """
    d = _frames(depth)
    mask = _static_mask(static, d)
    return _measure((d[t], None if mask is None else mask[t]) for t in range(d.shape[0]))


def measure_flicker_frames(frames: Iterable[Tensor]) -> FlickerReport:
    """measure_flicker over float depth frames (H,W) given one at a time (e.g. read from disk), every pixel
    static; holds at most CHUNK + 1 frames, so memory does not grow with the clip. Same numbers."""
    def checked() -> Iterator[tuple[Tensor, None]]:
        size = None
        for t, f in enumerate(frames):
            if not isinstance(f, Tensor) or f.ndim != 2 or not f.is_floating_point():
                kind = f"{f.dtype} {tuple(f.shape)}" if isinstance(f, Tensor) else type(f).__name__
                raise InputError(f"frame {t}: expected a float depth frame (H,W), got {kind}.")
            if size is not None and f.shape != size:
                raise InputError(f"frame {t} is {tuple(f.shape)}, frame 0 {tuple(size)}: flicker compares frames "
                                 "of one size.")
            size = f.shape
            yield f, None
    return _measure(checked())


def _measure(frames: Iterable[tuple[Tensor, Tensor | None]]) -> FlickerReport:
    """The figures from (frame (H,W), static mask (H,W) or None) in order, CHUNK frame pairs at a time."""
    parts: list[dict[str, Tensor]] = []
    ranges: list[float] = []
    buffer: list[tuple[Tensor, Tensor | None]] = []
    n = 0
    for item in frames:
        buffer.append(item)
        n += 1
        if len(buffer) == CHUNK + 1:
            parts.append(_chunk(buffer, ranges))
            buffer = buffer[-1:]                                                # frame t + 1 starts the next chunk
    if n < 2:
        raise InputError(f"flicker compares neighbouring frames: give at least 2 frames, got {n}.")
    if len(buffer) > 1:
        parts.append(_chunk(buffer, ranges))
    pairs = {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
    frame_l, frame_m = _chain(pairs["pair_log_scale"], pairs["pair_shift"])
    return FlickerReport(**pairs, frame_log_scale=frame_l, frame_shift=frame_m,
                         depth_range=float(torch.tensor(ranges).median()) if ranges else math.nan)


def _chunk(buffer: list[tuple[Tensor, Tensor | None]], ranges: list[float]) -> dict[str, Tensor]:
    """FlickerReport's per-pair figures (c,) of the c = len(buffer) - 1 consecutive pairs in `buffer`; appends the
    depth spread of each frame t with static pixels to `ranges`."""
    d = torch.stack([f for f, _ in buffer]).to("cpu", torch.float64)           # (c + 1, H, W)
    cur, nxt = d[:-1], d[1:]                                                    # frames t, t + 1
    m = torch.isfinite(cur) & torch.isfinite(nxt)
    if buffer[0][1] is not None:
        mask = torch.stack([k for _, k in buffer if k is not None]).cpu()       # (c + 1, H, W)
        m &= mask[:-1] & mask[1:]
    cur, nxt = cur.nan_to_num(0, 0, 0), nxt.nan_to_num(0, 0, 0)
    fit = fit_affine(nxt.flatten(1), cur.flatten(1), m.flatten(1))              # float64, per pair
    s, b = fit.scale[:, 0], fit.shift[:, 0]                                     # (c,); NaN where empty
    count = m.flatten(1).sum(1)
    empty = count == 0
    w = m.to(torch.float64)
    diff = ((nxt - cur).abs() * w).flatten(1).sum(1) / count.clamp_min(1)
    res = ((s[:, None, None] * nxt + b[:, None, None] - cur).abs() * w).flatten(1).sum(1) / count.clamp_min(1)
    nan = torch.full_like(s, math.nan)
    ranges += [_spread(f[k]) for f, k in zip(cur, m) if k.any()]
    return {"pair_log_scale": torch.where(empty, nan, s.clamp_min(MIN_SCALE).log()),
            "pair_shift": torch.where(empty, nan, b), "change": torch.where(empty, nan, diff),
            "residual": torch.where(empty, nan, res), "static_fraction": count / m[0].numel()}


def _chain(log_s: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Per-frame (L_t, M_t) from the pairs: d[t] ~ s d[t+1] + b and d[t] ~ k d[0] + m give
    k' = k / s, m' = (m - b) / s for frame t + 1."""
    n = len(log_s) + 1
    frame_l, frame_m = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for t in range(n - 1):
        s = math.exp(log_s[t])
        frame_l[t + 1] = frame_l[t] - log_s[t]
        frame_m[t + 1] = (frame_m[t] - b[t]) / s
    return frame_l, frame_m


def _frames(depth: Tensor) -> Tensor:
    if not isinstance(depth, Tensor):
        raise InputError(f"expected a depth video tensor (N,1,H,W), got {type(depth).__name__}.")
    if depth.ndim == 4 and depth.shape[1] == 1:
        depth = depth[:, 0]
    if depth.ndim != 3:
        raise InputError(f"expected a depth video (N,1,H,W) or (N,H,W), got shape {tuple(depth.shape)}.")
    if depth.shape[0] < 2:
        raise InputError(f"flicker compares neighbouring frames: give at least 2 frames, got {depth.shape[0]}.")
    if not depth.is_floating_point():
        raise InputError(f"expected float depth, got {depth.dtype}.")
    return depth


def _static_mask(static: Tensor | None, d: Tensor) -> Tensor | None:
    if static is None:
        return None
    if not isinstance(static, Tensor):
        raise InputError(f"the static mask must be a bool tensor (N,H,W) or (H,W), got {type(static).__name__}.")
    n, h, w = d.shape
    m = static[:, 0] if static.ndim == 4 and static.shape[1] == 1 else static
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[-2:] != (h, w) or m.shape[0] not in (1, n):
        raise InputError(f"the static mask must be (N,H,W), (N,1,H,W) or (H,W) with N={n}, H={h}, W={w}; "
                         f"got {tuple(static.shape)}. Resize it to the depth video's size.")
    return (m > 0.5 if m.is_floating_point() else m.bool()).expand(n, h, w)


def _spread(values: Tensor) -> float:
    """2 %..98 % spread of a 1-D float64 tensor (a 1M-sample stride keeps torch.quantile in its limits)."""
    step = max(1, values.numel() // 1_000_000)
    lo, hi = torch.quantile(values[::step], values.new_tensor([0.02, 0.98]))
    return float(hi - lo)


def _finite(x: Tensor) -> Tensor:
    return x[torch.isfinite(x)]


def _mean(x: Tensor) -> float:
    x = _finite(x)
    return float(x.mean()) if x.numel() else math.nan


def _rms(x: Tensor) -> float:
    x = _finite(x)
    return float(x.square().mean().sqrt()) if x.numel() else math.nan


def _std(x: Tensor) -> float:
    """Population std (a 2-frame clip has a spread too)."""
    x = _finite(x)
    return float(x.std(correction=0)) if x.numel() else math.nan
