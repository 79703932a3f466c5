"""Small pictures of results for a UI: a point cloud seen from the front and from above (no 3D library)."""
from __future__ import annotations

import math

import torch

from .depth3d import PointCloud


def splat(u: torch.Tensor, v: torch.Tensor, order: torch.Tensor, colors: torch.Tensor, height: int,
          width: int) -> torch.Tensor:
    """(height, width, 3) image of points at pixel (v, u); where points share a pixel the largest `order` wins."""
    image = torch.full((height * width, 3), 0.1)                     # dark grey background
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v, order, colors = u[inside], v[inside], order[inside], colors[inside]
    if u.numel() == 0:
        return image.view(height, width, 3)
    cell = v * width + u
    rank = torch.empty_like(order, dtype=torch.long)
    rank[order.argsort()] = torch.arange(order.numel())
    best = torch.full((height * width,), -1, dtype=torch.long).scatter_reduce(0, cell, rank, "amax")
    hit = best >= 0
    by_rank = torch.empty_like(rank)
    by_rank[rank] = torch.arange(rank.numel())
    image[hit] = colors[by_rank[best[hit]]].float()
    return image.view(height, width, 3)


def robust_range(x: torch.Tensor, share: float = 0.01) -> tuple[float, float]:
    """The `share` and 1 - `share` quantiles of x, rounded outwards to a sample (from at most ~100k samples):
    stray points do not shrink the view, and a small cloud keeps its min and max."""
    s = x[:: max(1, x.numel() // 100_000)].float().sort().values
    n = s.numel() - 1
    return float(s[math.floor(share * n)]), float(s[math.ceil((1 - share) * n)])


def cloud_views(cloud: PointCloud, size: int = 256) -> torch.Tensor:
    """(size, 2*size, 3) in [0,1]: the cloud from the front (nearest point wins) and from above (highest wins),
    orthographic, each scaled so the central 98% of the points along each axis fill its square (with a margin);
    the stray rest falls outside and is not drawn."""
    p = cloud.points.float()                                          # (N,3) OpenCV: x right, y down, z forward
    colors = cloud.colors.float().clamp(0, 1)
    views = []
    for a, b, order in ((p[:, 0], p[:, 1], -p[:, 2]), (p[:, 0], -p[:, 2], -p[:, 1])):   # front: x,y; top: x,-z
        if a.numel():
            (lo_a, hi_a), (lo_b, hi_b) = robust_range(a), robust_range(b)
            scale = 0.9 * (size - 1) / max(hi_a - lo_a, hi_b - lo_b, 1e-9)
            u = ((a - lo_a) * scale + 0.05 * (size - 1)).round().long()
            v = ((b - lo_b) * scale + 0.05 * (size - 1)).round().long()
        else:
            u = v = torch.zeros(0, dtype=torch.long)
        views.append(splat(u, v, order, colors, size, size))
    return torch.cat(views, dim=1)
