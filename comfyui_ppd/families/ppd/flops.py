"""The analytic work of PPD inference, checked against torch's FLOP counter in the tests.

FLOP count (a matmul (m x k)(k x n) is 2*m*k*n FLOP; elementwise work, norms and softmax are ignored).
B images, Nc = (H/16)(W/16) coarse tokens, Nf = 4*Nc fine tokens, DiT width D, MLP width M, depth L,
patch p (8), semantic width C; ViT width E, MLP width Me, depth Le, T = 1 + Nc tokens (the 14-px grid of
the 7/8-resized image equals the 16-px grid).
  DiT block over N tokens:  2*B*N*(3D^2 + D^2 + 2*D*M)  [qkv, proj, fc1, fc2]
                          + 4*B*N^2*D                   [attention: Q K^T and P V]
                          + 2*D*6D                      [adaLN modulation, once: one timestep per step]
  DiT step (cascade):       L/2 blocks on Nc + L/2 blocks on Nf
                          + 2*B*Nc*D*(2p)^2             [patch conv of the latent channel]
                          + 2*B*Nc*(D*4D + 2*(4D)^2)    [fusion MLP, token half of the first linear]
                          + 2*B*Nf*D*p^2 + 2*D*2D       [final layer]  + 2*(256*D + D^2) [timestep MLP]
  DiT step (flat):          the same with all L blocks on Nf (the no-cascade variant)
  condition (once/image):   2*B*Nc*D*3*(2p)^2 + 2*B*Nc*C*4D   [image channels, semantic half of fusion]
  encoder (ViT, once/image): 2*B*(T-1)*E*3*14^2 + Le*(2*B*T*(4E^2 + 2*E*Me) + 4*B*T^2*E)
  end to end:               encoder + condition + evaluations * DiT step  (evaluations = len(timesteps))
Full size at 1024x768: 12.75 TFLOP per DiT step, 2.78 TFLOP encoder, 53.8 TFLOP for 4 steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ...nn.dinov2 import ViTConfig
from .dit import DiTConfig


@dataclass(frozen=True)
class Gemm:
    """`count` matmuls (m x k)(k x n)."""

    m: int
    k: int
    n: int
    count: int = 1

    @property
    def flop(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


@dataclass
class Work:
    """The matmuls of a computation and its attention FLOP (4*B*N^2*width per attention layer)."""

    gemms: list[Gemm] = field(default_factory=list)
    attention: int = 0

    @property
    def flop(self) -> int:
        return sum(g.flop for g in self.gemms) + self.attention

    def __add__(self, other: Work) -> Work:
        return Work(self.gemms + other.gemms, self.attention + other.attention)

    def times(self, n: int) -> Work:
        return Work([replace(g, count=g.count * n) for g in self.gemms], self.attention * n)


def transformer_blocks(tokens: int, width: int, mlp: int, depth: int, batch: int) -> Work:
    """`depth` pre-norm blocks over `tokens` tokens: qkv, proj, fc1, fc2 and attention."""
    m = batch * tokens
    gemms = [Gemm(m, width, 3 * width, depth), Gemm(m, width, width, depth),
             Gemm(m, width, mlp, depth), Gemm(m, mlp, width, depth)]
    return Work(gemms, 4 * batch * tokens ** 2 * width * depth)


def dit_step_work(cfg: DiTConfig, height: int, width: int, batch: int = 1, cascade: bool = True) -> Work:
    """One DiT evaluation after `condition()`: the formula in the module docstring."""
    d, p = cfg.hidden_size, cfg.patch_size
    nc = (height // cfg.token_px) * (width // cfg.token_px)
    nf = 4 * nc
    half = cfg.depth // 2
    blocks = transformer_blocks(nf, d, cfg.mlp_hidden, cfg.depth - half, batch)
    blocks += transformer_blocks(nc if cascade else nf, d, cfg.mlp_hidden, half, batch)
    small = [Gemm(1, 256, d), Gemm(1, d, d),                                   # timestep MLP
             Gemm(1, d, 6 * d, cfg.depth), Gemm(1, d, 2 * d)]                  # adaLN (blocks, final)
    tokens = [Gemm(batch * nc, (2 * p) ** 2, d),                               # latent patch conv
              Gemm(batch * nc, d, 4 * d), Gemm(batch * nc, 4 * d, 4 * d, 2),   # fusion MLP
              Gemm(batch * nf, d, p * p * cfg.out_channels)]                   # final linear
    return blocks + Work(small + tokens)


def condition_work(cfg: DiTConfig, height: int, width: int, batch: int = 1) -> Work:
    """Per-image constants: patch conv of the image channels, semantic half of the first fusion linear."""
    k = cfg.token_px
    nc = (height // k) * (width // k)
    return Work([Gemm(batch * nc, (cfg.in_channels - 1) * k * k, cfg.hidden_size),
                 Gemm(batch * nc, cfg.semantic_dim, 4 * cfg.hidden_size)])


def encoder_work(cfg: ViTConfig, height: int, width: int, batch: int = 1, token_px: int = 16) -> Work:
    """The DINOv2 ViT on the (H/token_px*patch, W/token_px*patch) input: patch conv and all blocks over
    1 + Nc tokens (token_px: the DiT's coarse grid, DiTConfig.token_px)."""
    nc = (height // token_px) * (width // token_px)
    patch = Work([Gemm(batch * nc, 3 * cfg.patch_size ** 2, cfg.embed_dim)])
    return patch + transformer_blocks(nc + 1, cfg.embed_dim, cfg.mlp_hidden, cfg.depth, batch)


