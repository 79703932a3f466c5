"""A street-like depth scene and a stand-in depth model for the tiled-depth proof (comfyui_ppd.tiling).

The scene (metric depth, metres) has a large flat wall, thin poles and wires in front of it, a stair of
fronto-parallel planes and a slanted floor. The image carries its PPD-style depth in the red channel, so the
stand-in model reads the truth and then degrades it the way a real model does on any crop: it works at a
fixed pixel area (area downsample, bilinear upsample), bends the result by a smooth random quadratic, adds
noise at its processing resolution, normalises each call to its own 2-98 % range (a flat crop comes back
stretched: invented structure) and returns it with a random scale and shift.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from scenes import plane_depth, rays, to_ppd

WALL = 8.0


def street_scene(height: int, width: int) -> torch.Tensor:
    """(H, W) float64 metric depth: wall at 8 m (left 30 % above the floor flat and empty), floor 1.5 m below
    the camera, a stair of four planes (3-4.5 m), three 2-px poles at 2 m and two 1-px wires at 2.5 m."""
    d = torch.full((height, width), WALL, dtype=torch.float64)
    floor = plane_depth(rays(height, width), (0.0, 1.5, 0.0), (0.0, 1.0, 0.0))
    d = torch.minimum(d, floor)
    u = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)
    v = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
    stair = (u >= 0.55 * width) & (u < 0.95 * width) & (v >= 0.2 * height) & (v < 0.6 * height)
    d = torch.where(stair, 3.0 + 0.5 * torch.floor((u - 0.55 * width) / (0.1 * width)), d)
    ground = (floor < WALL)
    for x in (0.35, 0.47, 0.83):                               # poles from 10 % height down to the floor
        col = round(x * width)
        pole = (u >= col) & (u < col + 2) & (v >= 0.1 * height) & ~ground
        d = torch.where(pole, torch.full_like(d, 2.0), d)
    for y in (0.15, 0.3):                                      # wires across the right 70 %
        row = round(y * height)
        d[row, round(0.3 * width):] = 2.5
    return d


def flat_mask(height: int, width: int, margin: int) -> torch.Tensor:
    """Bool (H, W): the empty part of the wall (left 30 %, above the floor), shrunk by `margin` px."""
    d = street_scene(height, width)
    empty = torch.zeros(height, width, dtype=torch.bool)
    empty[:, : round(0.3 * width)] = True
    empty &= d == WALL
    keep = -F.max_pool2d(-empty[None, None].float(), 2 * margin + 1, 1, margin)[0, 0]
    return keep > 0.5


def scene_image(depth: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(3, H, W) float32 image whose red channel is the PPD-style depth mapped to [0, 1] (green/blue texture)."""
    target = to_ppd(depth).double()
    red = (target - target.min()) / (target.max() - target.min())
    gen = torch.Generator().manual_seed(seed)
    texture = torch.rand((2, *depth.shape), generator=gen, dtype=torch.float64)
    return torch.cat([red[None], texture]).float()


class StandIn:
    """predict(img (3, h, w)) -> (h, w): the red channel seen at `area` pixels, bent by up to `bend`, with noise
    `noise` (both in units of the full image's depth range), normalised per call, random scale/shift. `calls`
    counts calls; every call draws from one seeded generator, so a run is reproducible."""

    def __init__(self, area: int, *, bend: float = 0.03, noise: float = 0.003, seed: int = 0):
        self.area, self.bend, self.noise, self.calls = area, bend, noise, 0
        self.gen = torch.Generator().manual_seed(seed)

    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen, dtype=torch.float64)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h, w = img.shape[-2:]
        s = min(1.0, math.sqrt(self.area / (h * w)))
        size = (max(1, round(h * s)), max(1, round(w * s)))
        d = F.interpolate(img[None, :1].double(), size=size, mode="area")[0, 0]
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size[0], dtype=torch.float64),
                                torch.linspace(-1, 1, size[1], dtype=torch.float64), indexing="ij")
        c = self._randn(5) * self.bend / 2
        d = d + c[0] * xx + c[1] * yy + c[2] * xx * xx + c[3] * xx * yy + c[4] * yy * yy
        d = d + self.noise * self._randn(*size)
        lo, hi = torch.quantile(d.flatten(), torch.tensor([0.02, 0.98], dtype=torch.float64))
        d = (d - lo) / (hi - lo).clamp_min(1e-12)
        d = F.interpolate(d[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        scale, shift = math.exp(0.7 * float(self._randn(1))), float(self._randn(1))
        return (scale * d + shift).float()
