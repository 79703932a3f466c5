"""Building blocks shared by the DiT and DINOv2: MLP, multi-head attention, 2D rotary embedding."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (DiT uses the tanh GELU, DINOv2 the exact one)."""

    def __init__(self, dim: int, hidden: int, gelu: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.gelu = gelu

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.fc1(x)                                     # the largest activation: GELU in place
        return self.fc2(torch.ops.aten.gelu_(hidden, approximate=self.gelu))


def rope_2d_tables(grid_h: int, grid_w: int, head_dim: int, base: float = 100.0,
                   device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """cos/sin tables (N, head_dim) of 2D RoPE on a row-major grid: first half by row, second by column."""
    half = head_dim // 2                                                    # F: channels per axis
    inv_freq = 1.0 / base ** (torch.arange(0, half, 2, device=device).float() / half)  # (F/2,)
    rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w).float()      # (N,)
    cols = torch.arange(grid_w, device=device).repeat(grid_h).float()                 # (N,)
    per_axis = [torch.outer(pos, inv_freq).repeat(1, 2) for pos in (rows, cols)]      # 2 x (N, F)
    angles = torch.cat(per_axis, dim=-1)                                               # (N, head_dim)
    return angles.cos(), angles.sin()


def rope_tables_from_positions(positions: Tensor, head_dim: int, base: float = 100.0) -> tuple[Tensor, Tensor]:
    """cos/sin tables (B, 1, N, head_dim) for explicit integer (row, col) positions (B, N, 2)."""
    half = head_dim // 2
    inv_freq = 1.0 / base ** (torch.arange(0, half, 2, device=positions.device).float() / half)
    per_axis = [(positions[..., i, None].float() * inv_freq).repeat(1, 1, 2) for i in (0, 1)]
    angles = torch.cat(per_axis, dim=-1)[:, None]
    return angles.cos(), angles.sin()


def apply_rope_2d(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (..., N, head_dim): each axis half (a, b) of a head -> (a cos - b sin, b cos + a sin).

    One multiply and two in-place multiply-adds on halves (no rotated copy of x is built).
    """
    out = x * cos
    halves = lambda t: t.unflatten(-1, (2, 2, -1))  # noqa: E731  (..., axis, half, head_dim/4)
    o, xs, s = halves(out), halves(x), halves(sin)
    o[..., 0, :].addcmul_(xs[..., 1, :], s[..., 0, :], value=-1)
    o[..., 1, :].addcmul_(xs[..., 0, :], s[..., 1, :])
    return out
