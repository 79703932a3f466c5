"""The cascaded, semantics-prompted DiT of Pixel-Perfect Depth.

x = [noisy depth, image - 0.5] (B,4,H,W) -> 16-px patch tokens -> first half of the blocks on the
(H/16, W/16) grid -> concatenate L2-normalised semantics, fusion MLP, 2x2 token expansion -> second
half on the (H/8, W/8) grid -> adaLN final layer -> unpatchify to the velocity (B,1,H,W).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ...checkpoints import count_blocks
from ...errors import CheckpointError
from ...nn.layers import Mlp, apply_rope_2d, rope_2d_tables


@dataclass
class Condition:
    """Per-image constants of sampling: image-channel patch tokens, semantic fusion term, RoPE tables."""

    image_tokens: Tensor          # (B, gh*gw, D)
    semantic_term: Tensor         # (B, gh*gw, 4D) = W_sem @ normalise(semantics) + bias
    grid_h: int
    grid_w: int
    rope_coarse: tuple[Tensor, Tensor]
    rope_fine: tuple[Tensor, Tensor]


@dataclass(frozen=True)
class DiTSizes:
    """The sizes the PPD DiT and the PPVD video DiT share; all read from checkpoint shapes (`dit_sizes`)."""

    hidden_size: int = 1024
    depth: int = 24
    num_heads: int = 16
    patch_size: int = 8          # fine-grid patch; the embedder uses 2 * patch_size
    in_channels: int = 4
    out_channels: int = 1
    mlp_hidden: int = 4096
    semantic_dim: int = 1024


@dataclass(frozen=True)
class DiTConfig(DiTSizes):
    """Architecture of a PPD DiT; every field is recoverable from checkpoint shapes."""

    rope_base: float = 100.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def token_px(self) -> int:
        """Pixels per coarse token (the embedder's kernel): images and semantics live on this grid."""
        return 2 * self.patch_size


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return torch.addcmul(shift, x, 1 + scale)


def norm_modulate(norm: nn.LayerNorm, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """modulate(norm(x), shift, scale); one LayerNorm pass with (1 + scale, shift) as its affine when the
    batch shares the modulation (shift, scale: (1, 1, D), the sampler's case)."""
    if shift.shape[0] == 1:
        return F.layer_norm(x, norm.normalized_shape, 1 + scale.flatten(), shift.flatten(), norm.eps)
    return modulate(norm(x), shift, scale)


class PatchEmbed(nn.Module):
    """Conv with kernel = stride = 2 * patch_size over the 4 input channels; tokens row-major."""

    def __init__(self, in_channels: int, hidden: int, size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden, size, stride=size)

    def forward(self, x: Tensor) -> Tensor:                       # (B,C,H,W) -> (B, H/16*W/16, D)
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the raw integer timestep ([cos, sin], 256) -> MLP."""

    frequency_size = 256

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(self.frequency_size, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    @staticmethod
    def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: Tensor) -> Tensor:                        # (B,) int -> (B, D)
        freq = self.timestep_embedding(t, self.frequency_size)
        return self.mlp(freq.to(cast(nn.Linear, self.mlp[0]).weight.dtype))


class Attention(nn.Module):
    """Multi-head self-attention with per-head LayerNorm on q and k, then 2D RoPE, then SDPA."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-5)
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-5)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        # One matmul per projection keeps q, k, v contiguous as (B, N, heads, head_dim): the per-head
        # norms need no copy, and SDPA reads the (B, heads, N, head_dim) views through their strides.
        # rope None: no rotary embedding (the video DiT uses an absolute sin-cos table instead).
        q, k, v = (F.linear(x, w, b).unflatten(-1, (self.num_heads, -1))
                   for w, b in zip(self.qkv.weight.chunk(3), self.qkv.bias.chunk(3)))
        q, k = self.q_norm(q).transpose(1, 2), self.k_norm(k).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope_2d(q, *rope), apply_rope_2d(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v.transpose(1, 2))
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class DiTBlock(nn.Module):
    """adaLN-Zero block: x += gate * Attn(modulate(LN(x))); x += gate * MLP(modulate(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden, gelu="tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        # c: (B or 1, D) -> six (B or 1, 1, D) modulation vectors
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            self.adaLN_modulation(c)[:, None].chunk(6, dim=-1)
        x = torch.addcmul(x, gate_msa, self.attn(norm_modulate(self.norm1, x, shift_msa, scale_msa), rope))
        return torch.addcmul(x, gate_mlp, self.mlp(norm_modulate(self.norm2, x, shift_mlp, scale_mlp)))


class FinalLayer(nn.Module):
    """adaLN (shift, scale) -> Linear to patch_size^2 * out_channels values per fine token."""

    def __init__(self, dim: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=-1)
        return self.linear(norm_modulate(self.norm_final, x, shift, scale))


def fusion_mlp(hidden: int, semantic_dim: int) -> nn.Sequential:
    """[tokens, semantics] (D + C) -> 4D -> 4D -> 4D with SiLU between: the 2x2 expanded fine tokens."""
    return nn.Sequential(nn.Linear(hidden + semantic_dim, 4 * hidden), nn.SiLU(),
                         nn.Linear(4 * hidden, 4 * hidden), nn.SiLU(),
                         nn.Linear(4 * hidden, 4 * hidden))


class PPDDiT(nn.Module):
    """The PPD DiT. Call `dit(x, semantics, timestep)` -> velocity (B, out_channels, H, W)."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.hidden_size
        self.x_embedder = PatchEmbed(c.in_channels, d, 2 * c.patch_size)
        self.t_embedder = TimestepEmbedder(d)
        self.blocks = nn.ModuleList(DiTBlock(d, c.num_heads, c.mlp_hidden) for _ in range(c.depth))
        self.proj_fusion = fusion_mlp(d, c.semantic_dim)
        self.final_layer = FinalLayer(d, c.patch_size, c.out_channels)
        # The semantics this DiT was trained with ("da2" / "moge2"), when known, and how it is known
        # ("metadata" from our converter, or "file name"); not part of the weights.
        self.semantics_kind: str | None = None
        self.semantics_kind_source = ""
        self._rope_cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    # -- pieces, exposed so tests and the sampler can use them ------------------------------
    def rope(self, grid_h: int, grid_w: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """2D RoPE tables for a grid, cached per (grid, device, dtype)."""
        key = (grid_h, grid_w, str(device), dtype)
        if key not in self._rope_cache:
            cos, sin = rope_2d_tables(grid_h, grid_w, self.config.head_dim, self.config.rope_base, device)
            self._rope_cache[key] = (cos.to(dtype), sin.to(dtype))
        return self._rope_cache[key]

    def embed_timestep(self, timestep: Tensor, device: torch.device) -> Tensor:
        """Integer timestep, 0-d or (B,) -> (1 or B, D); a 0-d timestep broadcasts over the batch."""
        t = torch.as_tensor(timestep, device=device)
        return self.t_embedder(t.reshape(-1))

    def unpatchify(self, x: Tensor, grid_h: int, grid_w: int) -> Tensor:
        """(B, H/8*W/8, p*p*C) -> (B, C, H, W); value pi*p+qi of token (h, w) is pixel (p*h+pi, p*w+qi)."""
        p = self.config.patch_size
        return rearrange(x, "b (h w) (pi qi c) -> b c (h pi) (w qi)", h=grid_h, w=grid_w, pi=p, qi=p)

    def condition(self, image_cond: Tensor, semantics: Tensor) -> Condition:
        """Everything a sampling step needs that does not change between steps (computed once per image).

        The patch conv and the first fusion linear are linear in their inputs, so the image channels
        and the semantics contribute a fixed term that is added to the latent's part at every step.
        """
        d, p2 = self.config.hidden_size, self.config.token_px
        w, b = self.x_embedder.proj.weight, self.x_embedder.proj.bias
        gh, gw = image_cond.shape[-2] // p2, image_cond.shape[-1] // p2
        image_tokens = F.conv2d(image_cond.to(w.dtype), w[:, 1:], b, stride=p2).flatten(2).transpose(1, 2)
        fusion = cast(nn.Linear, self.proj_fusion[0])
        sem = F.normalize(semantics.float(), dim=-1, eps=1e-12).to(w.dtype)                  # (B, N, C)
        semantic_term = F.linear(sem, fusion.weight[:, d:], fusion.bias)                    # (B, N, 4D)
        device = image_cond.device
        return Condition(image_tokens, semantic_term, gh, gw,
                         self.rope(gh, gw, device, w.dtype), self.rope(2 * gh, 2 * gw, device, w.dtype))

    def embed(self, latent: Tensor, cond: Condition) -> Tensor:
        """Coarse tokens (B, gh*gw, D) of a latent (B,1,H,W): its patch-conv part plus the image part."""
        w = self.x_embedder.proj.weight
        tokens = F.conv2d(latent.to(w.dtype), w[:, :1], stride=self.config.token_px)
        return tokens.flatten(2).transpose(1, 2) + cond.image_tokens

    def fuse(self, tokens: Tensor, cond: Condition) -> Tensor:
        """Semantic fusion MLP on coarse tokens, then each token expands 2x2: (B, gh*gw, D) -> (B, 4*gh*gw, D)."""
        fusion = self.proj_fusion
        first = cast(nn.Linear, fusion[0]).weight[:, :self.config.hidden_size]
        fused = F.linear(tokens, first) + cond.semantic_term                                   # (B, N, 4D)
        fused = fusion[4](fusion[3](fusion[2](fusion[1](fused))))
        return rearrange(fused, "b (h w) (p q d) -> b (h p w q) d", h=cond.grid_h, w=cond.grid_w, p=2, q=2)

    def forward_condition(self, latent: Tensor, cond: Condition, timestep: Tensor, cascade: bool = True) -> Tensor:
        """Velocity for a latent (B,1,H,W) given a precomputed condition (batch B or broadcastable).

        cascade=False is the no-cascade variant timed by `bench`: fuse first, every block on the fine grid.
        """
        c = self.embed_timestep(timestep, latent.device)                                      # (1|B, D)
        tokens = self.embed(latent, cond)
        half = self.config.depth // 2 if cascade else 0
        for block in self.blocks[:half]:
            tokens = block(tokens, c, cond.rope_coarse)
        tokens = self.fuse(tokens, cond)
        for block in self.blocks[half:]:
            tokens = block(tokens, c, cond.rope_fine)
        return self.unpatchify(self.final_layer(tokens, c), 2 * cond.grid_h, 2 * cond.grid_w)

    def forward(self, x: Tensor, semantics: Tensor, timestep: Tensor) -> Tensor:
        """x = cat[latent, image - 0.5] (B,4,H,W), semantics (B, H/16*W/16, C), integer timestep -> (B,1,H,W)."""
        return self.forward_condition(x[:, :1], self.condition(x[:, 1:], semantics), timestep)


def dit_sizes(sd: Mapping[str, Tensor]) -> dict[str, int]:
    """DiTSizes fields from shapes: hidden and patch from the embedder, heads from q_norm, semantics from the
    fusion, depth from the block count; raises KeyError/ValueError/IndexError on a missing or odd tensor."""
    hidden, in_ch, kernel, _ = sd["x_embedder.proj.weight"].shape
    patch = kernel // 2
    return dict(hidden_size=hidden, depth=count_blocks(sd),
                num_heads=hidden // sd["blocks.0.attn.q_norm.weight"].shape[0], patch_size=patch,
                in_channels=in_ch, out_channels=sd["final_layer.linear.weight"].shape[0] // patch ** 2,
                mlp_hidden=sd["blocks.0.mlp.fc1.weight"].shape[0],
                semantic_dim=sd["proj_fusion.0.weight"].shape[1] - hidden)


def dit_config(sd: Mapping[str, Tensor], label: str = "<state dict>") -> DiTConfig:
    """Architecture from shapes (`dit_sizes`)."""
    try:
        cfg = DiTConfig(**dit_sizes(sd))
        hidden, _, kernel, _ = sd["x_embedder.proj.weight"].shape
        head_dim = sd["blocks.0.attn.q_norm.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(label, "a complete PPD DiT", f"a DiT without {e}",
                              "The file is incomplete or from another model; download ppd.pth again.") from e
    if kernel % 2 or hidden % head_dim or cfg.depth % 2 or sd["proj_fusion.0.weight"].shape[0] != 4 * hidden:
        raise CheckpointError(label, "a cascaded PPD DiT (even depth, 4x fusion width)",
                              f"inconsistent shapes ({cfg})", "This DiT variant is not supported.")
    return cfg
