"""Small pictures of results for a UI: a point cloud seen from the front and from above (no 3D library)."""
from __future__ import annotations

import torch

from .geometry import PointCloud


def splat(u: torch.Tensor, v: torch.Tensor, order: torch.Tensor, colors: torch.Tensor, height: int,
          width: int) -> torch.Tensor:
    """(height, width, 3) image of points at pixel (v, u); where points share a pixel the largest `order` wins."""
    image = torch.full((height * width, 3), 0.1)                     # dark grey background
    if u.numel() == 0:
        return image.view(height, width, 3)
    cell = v.clamp(0, height - 1) * width + u.clamp(0, width - 1)
    rank = torch.empty_like(order, dtype=torch.long)
    rank[order.argsort()] = torch.arange(order.numel())
    best = torch.full((height * width,), -1, dtype=torch.long).scatter_reduce(0, cell, rank, "amax")
    hit = best >= 0
    by_rank = torch.empty_like(rank)
    by_rank[rank] = torch.arange(rank.numel())
    image[hit] = colors[by_rank[best[hit]]].float()
    return image.view(height, width, 3)


def cloud_views(cloud: PointCloud, size: int = 256) -> torch.Tensor:
    """(size, 2*size, 3) in [0,1]: the cloud from the front (nearest point wins) and from above (highest wins),
    orthographic, each scaled to fit its square with the same margin."""
    p = cloud.points.float()                                          # (N,3) OpenCV: x right, y down, z forward
    colors = cloud.colors.float().clamp(0, 1)
    views = []
    for a, b, order in ((p[:, 0], p[:, 1], -p[:, 2]), (p[:, 0], -p[:, 2], -p[:, 1])):   # front: x,y; top: x,-z
        if a.numel():
            lo_a, lo_b = a.min(), b.min()
            span = float(torch.maximum(a.max() - lo_a, b.max() - lo_b).clamp_min(1e-9))
            scale = 0.9 * (size - 1) / span
            u = ((a - lo_a) * scale + 0.05 * (size - 1)).round().long()
            v = ((b - lo_b) * scale + 0.05 * (size - 1)).round().long()
        else:
            u = v = torch.zeros(0, dtype=torch.long)
        views.append(splat(u, v, order, colors, size, size))
    return torch.cat(views, dim=1)
