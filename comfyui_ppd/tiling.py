"""Tiled high-resolution depth: the whole-image pass gives the layout, overlapping tiles give the detail.

Each tile's prediction (its own scale, shift and bends) is fitted to the whole-image pass (the anchor) by a
robust line fit at the anchor's resolution, and only its high-frequency part relative to the anchor is
kept: out = anchor + highpass(aligned tile - anchor). The low frequencies, and so the layout, the scale and
any bend, come from the anchor alone, which leaves no seams to hide; raised-cosine weights blend the tiles'
detail. A tile whose fit explains little of the anchor (a flat wall or sky: its scale cannot be estimated)
gives no detail. Only (H, W) accumulators are kept, never all tiles at once.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError

Predict = Callable[[Tensor], Tensor]
LOWPASS_PER_RATIO = 2.0      # Gaussian sigma of the detail split, in anchor pixels (anchor px = `ratio` image px)
TRUST = (0.5, 0.9)           # explained anchor variance (R^2) below which a tile gives no detail, above which all
MIN_TILE = 16                # the smallest tile side; PPD's token is 16 px


class Tile(NamedTuple):
    """A tile's rows [top, top + height) and columns [left, left + width) in the full image."""

    top: int
    left: int
    height: int
    width: int


def axis_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Evenly spaced tile starts covering [0, length) with at least `overlap * tile` shared between neighbours."""
    if length <= tile:
        return [0]
    shared = overlap * tile
    n = math.ceil((length - shared) / (tile - shared))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def tile_grid(height: int, width: int, tile_size: tuple[int, int] = (768, 1024), overlap: float = 0.25
              ) -> list[Tile]:
    """The tiles `tiled_depth` runs for an image of height x width (row-major); one tile if the image fits."""
    th, tw = check_tiling(tile_size, overlap)
    th, tw = min(th, height), min(width, tw)
    return [Tile(y, x, th, tw) for y in axis_starts(height, th, overlap) for x in axis_starts(width, tw, overlap)]


def pass_count(height: int, width: int, tile_size: tuple[int, int] = (768, 1024), overlap: float = 0.25) -> int:
    """How many `predict` calls `tiled_depth` makes: the whole image, plus every tile when there are several."""
    tiles = len(tile_grid(height, width, tile_size, overlap))
    return 1 if tiles == 1 else tiles + 1


def tiled_depth(image: Tensor, predict: Predict, *, tile_size: tuple[int, int] = (768, 1024),
                overlap: float = 0.25) -> Tensor:
    """Depth (H, W) of an image (3, H, W) in [0, 1] at full resolution, in the frame of `predict(image)`.

    `predict` maps a (3, h, w) image to (h, w) affine-invariant depth; it runs once on the whole image and
    once per tile of `tile_size` (height, width) sharing `overlap` of a tile with each neighbour. An image
    no larger than one tile gives exactly `predict(image)` (on the CPU, as every result).
    """
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise InputError(f"tiled_depth needs one RGB image (3, H, W), got {getattr(image, 'shape', type(image))}.")
    _, height, width = image.shape
    tiles = tile_grid(height, width, tile_size, overlap)
    anchor = _call(predict, image)
    if len(tiles) == 1:
        return anchor
    anchor = anchor.double()
    ratio = math.sqrt(height * width / (tiles[0].height * tiles[0].width))   # anchor px / tile px
    sigma = LOWPASS_PER_RATIO * ratio
    pool = max(1, round(sigma / 2))
    num = torch.zeros_like(anchor)                    # sum of weight * detail
    den = torch.zeros_like(anchor)                    # sum of weight
    ys = axis_starts(height, tiles[0].height, overlap)
    xs = axis_starts(width, tiles[0].width, overlap)
    for t in tiles:
        rows, cols = slice(t.top, t.top + t.height), slice(t.left, t.left + t.width)
        a = anchor[rows, cols]
        p = _call(predict, image[:, rows, cols]).double()
        scale, shift, trust = _fit(p, a, sigma, pool)
        weight = (_ramp(ys, t.top, t.height)[:, None] * _ramp(xs, t.left, t.width)[None, :])
        if trust > 0:
            num[rows, cols] += weight * trust * _highpass(scale * p + shift - a, sigma)
        den[rows, cols] += weight
    return (anchor + num / den).to(image.dtype if image.is_floating_point() else torch.float32)


def check_tiling(tile_size: tuple[int, int], overlap: float) -> tuple[int, int]:
    """(height, width) of valid tiling settings; InputError naming the setting otherwise."""
    try:
        th, tw = (int(s) for s in tile_size)
    except (TypeError, ValueError):
        raise InputError(f"tile_size must be (height, width) in pixels, got {tile_size!r}.") from None
    if min(th, tw) < MIN_TILE:
        raise InputError(f"tile_size {th} x {tw} (H x W) is too small; each side must be at least {MIN_TILE} px "
                         "(PPD's tiles are its training size, 768 x 1024).")
    if not 0 <= overlap <= 0.5:
        raise InputError(f"overlap must be between 0 and 0.5 (the fraction of a tile shared with a neighbour), "
                         f"got {overlap}.")
    return th, tw


def _call(predict: Predict, image: Tensor) -> Tensor:
    """predict(image), checked to be (h, w) finite depth for a (3, h, w) image, on the CPU (where the
    (H, W) accumulators live, whatever the model's device)."""
    depth = predict(image)
    if not isinstance(depth, Tensor) or tuple(depth.shape) != tuple(image.shape[-2:]):
        raise InputError(f"predict must return depth of the image's size {tuple(image.shape[-2:])} (h, w), got "
                         f"{getattr(depth, 'shape', type(depth))}.")
    if not torch.isfinite(depth).all():
        raise InputError("predict returned NaN or infinite depth.")
    return depth.cpu()


def _fit(tile: Tensor, anchor: Tensor, sigma: float, pool: int) -> tuple[float, float, float]:
    """anchor ~ scale * tile + shift at the anchor's resolution (both area-pooled by `pool`), the scale measured
    on what is left after a quadratic surface is taken out of both (bends do not set the scale), by least
    squares (a robust fit would drop thin structures as outliers: they are few pixels but the whole signal);
    trust in [0, 1] from the partial R^2: 0 below TRUST[0] (a flat wall: no structure the two agree on), 1
    above TRUST[1]."""
    m = min(math.ceil(2 * sigma), *(s // 4 for s in tile.shape))  # the anchor sees structures outside the tile
    inner = (slice(m, tile.shape[0] - m), slice(m, tile.shape[1] - m))      # blurred m px inwards: not fitted
    x, y = (F.avg_pool2d(_lowpass(d, sigma)[inner][None, None], pool, ceil_mode=True)[0, 0] for d in (tile, anchor))
    basis = _quadratic_basis(x.shape[0], x.shape[1], x.dtype)      # (n, 6)
    proj = torch.linalg.lstsq(basis, torch.stack([x.flatten(), y.flatten()], 1)).solution
    xr, yr = (torch.stack([x.flatten(), y.flatten()], 1) - basis @ proj).unbind(1)
    sxx, syy, sxy = float(xr @ xr), float(yr @ yr), float(xr @ yr)
    floor = 1e-12 * (1 + float(y.abs().max()) ** 2) * xr.numel()
    if sxx <= floor or syy <= floor or sxy <= 0:
        return 1.0, 0.0, 0.0
    scale = sxy / sxx
    shift = float(y.mean() - scale * x.mean())
    lo, hi = TRUST
    return scale, shift, min(max((sxy * sxy / (sxx * syy) - lo) / (hi - lo), 0.0), 1.0)


def _quadratic_basis(h: int, w: int, dtype: torch.dtype) -> Tensor:
    """(h*w, 6) columns 1, u, v, u^2, uv, v^2 over [-1, 1]^2."""
    v, u = torch.meshgrid(torch.linspace(-1, 1, h, dtype=dtype), torch.linspace(-1, 1, w, dtype=dtype),
                          indexing="ij")
    u, v = u.flatten(), v.flatten()
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v], 1)


def _lowpass(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian low-pass of (h, w), sigma px, borders replicated."""
    r = min(math.ceil(3 * sigma), *(s - 1 for s in x.shape))
    if r < 1:
        return x.mean().expand_as(x)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    k = (k / k.sum()).float()                  # float32 convolutions: 10x faster, 1e-7 of the depth range
    low = F.pad(x.float()[None, None], (r, r, r, r), mode="replicate")
    return F.conv2d(F.conv2d(low, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))[0, 0].to(x.dtype)


def _highpass(x: Tensor, sigma: float) -> Tensor:
    """x minus its Gaussian low-pass."""
    return x - _lowpass(x, sigma)


def _ramp(starts: list[int], start: int, size: int) -> Tensor:
    """1-D blend weight of the tile at `start`: raised-cosine ramps across the parts it shares with its
    neighbours (complementary to theirs), 1 elsewhere, so the weights of a row of tiles sum to 1."""
    i = starts.index(start)
    pos = torch.arange(size, dtype=torch.float64) + 0.5
    w = torch.ones(size, dtype=torch.float64)
    if i > 0:                                          # shared with the previous tile: [start, its end)
        shared = starts[i - 1] + size - start
        w *= torch.where(pos < shared, torch.sin(0.5 * math.pi * pos / shared) ** 2, 1.0)
    if i + 1 < len(starts):                            # shared with the next tile: [its start, end)
        begin = starts[i + 1] - start
        shared = size - begin
        w *= torch.where(pos > begin, torch.cos(0.5 * math.pi * (pos - begin) / shared) ** 2, 1.0)
    return w

