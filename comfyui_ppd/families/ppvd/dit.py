"""DiT_Video of Pixel-Perfect Video Depth: the cascaded PPD DiT on a window of frames, with temporal
attention and keyframe tokens.

x = [noisy depth, frame - 0.5] (N,4,H,W) for the N frames of a window -> 16-px patch tokens + a fixed
sin-cos table -> blocks 1..12 on the (H/16, W/16) grid -> L2-normalised semantics, fusion MLP, 2x2
expansion -> blocks 13..24 on the (H/8, W/8) grid, where blocks 19..24 also attend to 4x4-pooled tokens
of frames 0, 1, 2 (the keyframes) and a temporal block (attention across the N frames at each position)
runs before each of blocks 22..24 -> adaLN final layer -> velocity (N,1,H,W). There is no RoPE.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ...checkpoints import count_blocks
from ...errors import CheckpointError, InputError
from ..ppd.dit import DiTBlock, DiTSizes, FinalLayer, PatchEmbed, TimestepEmbedder, dit_sizes, fusion_mlp


@dataclass(frozen=True)
class VideoDiTConfig(DiTSizes):
    """Architecture of a DiT_Video. Sizes come from checkpoint shapes; the block thresholds are the official
    ones for 24 blocks (fusion after half the blocks, keyframe tokens in the last quarter, temporal blocks
    before the last `temporal_depth` blocks), which no tensor records."""

    semantic_dim: int = 2048      # Pi3's two decoder layers (the field keeps its DiTSizes position)
    temporal_depth: int = 3
    pos_grid: tuple[int, int] = (32, 32)   # grid of the stored pos_embed: (512/16, 512/16)
    keyframes: int = 3            # batch frames whose pooled tokens every frame attends to
    keyframe_pool: int = 4        # average-pool size on the fine grid

    @property
    def fusion_after(self) -> int:
        return self.depth // 2                      # 12: fusion between blocks 12 and 13 (1-based)

    @property
    def keyframe_from(self) -> int:
        return 3 * self.depth // 4                  # 18: blocks 19..24 (1-based) get keyframe tokens

    @property
    def temporal_from(self) -> int:
        return self.depth - self.temporal_depth     # 21: temporal blocks before blocks 22..24

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (16): the coarse patch (2p), as the official DiT_Video."""
        return 2 * self.patch_size

    @property
    def min_side(self) -> int:
        """The smallest side (32): the fine grid (H/p) needs one `keyframe_pool` cell; larger grids are pooled
        with the remainder dropped (avg_pool2d floors), as the official."""
        return self.patch_size * self.keyframe_pool


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """(1, grid_h*grid_w, dim) MAE sin-cos table, tokens row-major: [sin(c w), cos(c w), sin(r w), cos(r w)],
    column first, w_k = 10000^(-k/(dim/4)); computed in float64, rounded to float32."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64, device="cpu") / quarter)
    rows = torch.arange(grid_h, dtype=torch.float64, device="cpu").repeat_interleave(grid_w)
    cols = torch.arange(grid_w, dtype=torch.float64, device="cpu").repeat(grid_h)
    parts = []
    for pos in (cols, rows):
        angles = torch.outer(pos, omega)                                    # (L, dim/4)
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=-1).float()[None]


class VideoDiT(nn.Module):
    """DiT_Video. Call `dit(x, semantics, timestep)`: x (N,4,H,W), semantics (N, H/16*W/16, C), one timestep."""

    def __init__(self, config: VideoDiTConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.hidden_size
        self.x_embedder = PatchEmbed(c.in_channels, d, 2 * c.patch_size)
        self.t_embedder = TimestepEmbedder(d)
        self.pos_embed = nn.Parameter(sincos_2d(d, *c.pos_grid), requires_grad=False)   # frozen table
        self.blocks = nn.ModuleList(DiTBlock(d, c.num_heads, c.mlp_hidden) for _ in range(c.depth))
        self.temporal_blocks = nn.ModuleList(DiTBlock(d, c.num_heads, c.mlp_hidden)
                                             for _ in range(c.temporal_depth))
        self.proj_fusion = fusion_mlp(d, c.semantic_dim)
        self.final_layer = FinalLayer(d, c.patch_size, c.out_channels)

    def positions(self, grid_h: int, grid_w: int, like: Tensor) -> Tensor:
        """(1, grid_h*grid_w, D): the stored table on its own grid, the same formula on any other grid."""
        if (grid_h, grid_w) == tuple(self.config.pos_grid):
            return self.pos_embed.to(like.dtype)
        return sincos_2d(self.config.hidden_size, grid_h, grid_w).to(like.device, like.dtype)

    def fuse(self, tokens: Tensor, semantics: Tensor, grid_h: int, grid_w: int) -> Tensor:
        """(N, L, D) coarse tokens + semantics (N, L, C) -> (N, 4L, D): fusion MLP, each token expands 2x2."""
        sem = F.normalize(semantics, dim=-1, eps=1e-12).to(tokens.dtype)
        fused = self.proj_fusion(torch.cat([tokens, sem], dim=-1))                            # (N, L, 4D)
        return rearrange(fused, "n (h w) (p q d) -> n (h p w q) d", h=grid_h, w=grid_w, p=2, q=2)

    def keyframe_tokens(self, tokens: Tensor, grid_h: int, grid_w: int) -> Tensor:
        """Fine tokens (N, gh*gw, D) -> (K*(gh//pool)*(gw//pool), D): frames 0..K-1 average-pooled (a remainder of
        rows/columns is dropped, as the official avg_pool2d), frame-major."""
        grid = rearrange(tokens[: self.config.keyframes], "k (h w) d -> k d h w", h=grid_h, w=grid_w)
        pooled = F.avg_pool2d(grid, self.config.keyframe_pool)
        return rearrange(pooled, "k d h w -> (k h w) d")

    def unpatchify(self, x: Tensor, grid_h: int, grid_w: int) -> Tensor:
        """(N, gh*gw, p*p*C) -> (N, C, gh*p, gw*p); value pi*p+qi of token (h, w) is pixel (p*h+pi, p*w+qi)."""
        p = self.config.patch_size
        return rearrange(x, "n (h w) (pi qi c) -> n c (h pi) (w qi)", h=grid_h, w=grid_w, pi=p, qi=p)

    def forward(self, x: Tensor, semantics: Tensor, timestep: Tensor) -> Tensor:
        """x = cat[latent, frame - 0.5] (N,4,H,W), semantics (N, H/16*W/16, C), 0-d or (1,) timestep -> (N,1,H,W)."""
        c = self.config
        n, _, h, w = x.shape
        m = c.size_multiple
        if h % m or w % m or min(h, w) < c.min_side or n < c.keyframes:
            raise InputError(f"DiT_Video needs at least {c.keyframes} frames with sides that are multiples of {m} "
                             f"and at least {c.min_side}, got {n} frames of {h}x{w}; resize the frames and pad the "
                             "window.")
        t = torch.as_tensor(timestep, device=x.device).reshape(-1)
        if t.numel() != 1:
            raise InputError(f"DiT_Video takes one timestep for the whole window, got {t.numel()}.")
        t_emb = self.t_embedder(t)                                                  # (1, D)
        gh, gw = h // (2 * c.patch_size), w // (2 * c.patch_size)
        tokens = self.x_embedder(x)                                                 # (N, L, D)
        tokens = tokens + self.positions(gh, gw, tokens)
        for block in self.blocks[: c.fusion_after]:
            tokens = block(tokens, t_emb, None)
        tokens = self.fuse(tokens, semantics, gh, gw)                               # (N, 4L, D)
        fh, fw = 2 * gh, 2 * gw
        for i in range(c.fusion_after, c.depth):
            if i >= c.temporal_from:                        # (4L sequences of N frame tokens)
                temporal = self.temporal_blocks[i - c.temporal_from]
                tokens = temporal(tokens.transpose(0, 1), t_emb, None).transpose(0, 1)
            if i >= c.keyframe_from:                        # append keyframe tokens, drop their outputs
                refs = self.keyframe_tokens(tokens, fh, fw)
                extended = torch.cat([tokens, refs.expand(n, -1, -1)], dim=1)
                tokens = self.blocks[i](extended, t_emb, None)[:, : fh * fw]
            else:
                tokens = self.blocks[i](tokens, t_emb, None)
        return self.unpatchify(self.final_layer(tokens, t_emb), fh, fw)


# --- reading the architecture from a state dict -------------------------------------------------
def config_from(sd: Mapping[str, Tensor], label: str = "<state dict>") -> VideoDiTConfig:
    """Sizes from shapes: hidden/patch from the embedder, heads from q_norm, semantic width from the fusion,
    depth and temporal depth from the block counts, the stored table's grid from `pos_embed` (32x32 if absent)."""
    try:
        hidden, _, kernel, _ = sd["x_embedder.proj.weight"].shape
        head_dim = sd["blocks.0.attn.q_norm.weight"].shape[0]
        grid = (32, 32)
        if "pos_embed" in sd:
            side = round(sd["pos_embed"].shape[1] ** 0.5)
            grid = (side, side)
        cfg = VideoDiTConfig(**dit_sizes(sd), temporal_depth=count_blocks(sd, "temporal_blocks."), pos_grid=grid)
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(label, "a complete PPVD video DiT", f"a video DiT without {e}",
                              "The file is incomplete or from another model; download ppvd.pth again.") from e
    problems = []
    if kernel % 2 or hidden % head_dim or hidden % 4:
        problems.append(f"hidden {hidden}, head dim {head_dim}, kernel {kernel}")
    if cfg.depth < 4 or cfg.depth % 4 or not 0 < cfg.temporal_depth <= cfg.depth // 4:
        problems.append(f"{cfg.depth} blocks with {cfg.temporal_depth} temporal blocks")
    if "pos_embed" in sd and tuple(sd["pos_embed"].shape) != (1, grid[0] * grid[1], hidden):
        problems.append(f"pos_embed {tuple(sd['pos_embed'].shape)}")
    if sd["proj_fusion.0.weight"].shape[0] != 4 * hidden:
        problems.append(f"fusion width {sd['proj_fusion.0.weight'].shape[0]}")
    if problems:
        raise CheckpointError(label, "a DiT_Video (24 blocks, 3 temporal blocks in the release)",
                              "inconsistent shapes: " + "; ".join(problems), "This video DiT variant is not supported.")
    return cfg
