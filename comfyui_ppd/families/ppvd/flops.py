"""Analytic FLOP count of one PPVD window (16 frames), in the convention of families/ppd/flops.py (Gemm, Work).

A matmul (m x k)(k x n) is 2*m*k*n FLOP; attention is 4*B*S^2*width per layer; elementwise work, norms,
softmax, pooling and resizes are ignored. F frames per window, Nc = (h/16)(w/16) coarse tokens, Nf = 4*Nc,
Nr = 3*Nf/16 keyframe tokens, DiT width D, MLP M, depth L (fusion after L/2, keyframe tokens in the last
L/4 blocks), Lt temporal blocks, semantic width C; Pi3: ViT width E, MLP Me, depth Le, R registers,
decoder width Wd, MLP Md, depth Ld, 5 decoder registers.
  DiT step:  L/2 blocks on F x Nc + L/4 blocks on F x Nf + L/4 blocks on F x (Nf + Nr)
           + Lt temporal blocks on Nf x F            (Nf sequences of F frame tokens)
           + 2*F*Nc*D*4*(2p)^2                         [patch conv, all 4 channels]
           + 2*F*Nc*((D + C)*4D + 2*(4D)^2)            [fusion MLP]
           + 2*F*Nf*D*p^2 + (L + Lt)*2*D*6D + 2*D*2D + 2*(256*D + D^2)   [final, adaLN, timestep MLP]
  Pi3:       2*F*Nc*E*3*14^2 + Le blocks on F x (1 + R + Nc)
           + ceil(Ld/2) frame-wise blocks on F x (5 + Nc) + floor(Ld/2) global blocks on 1 x F*(5 + Nc)
  window:    Pi3 + evaluations * DiT step
Full size at 512x512: 49.8 TFLOP per DiT step, 47.8 TFLOP Pi3, 247.1 TFLOP per window of 4 steps
(a window adds 13 new frames: ~19 TFLOP per frame).
"""
from __future__ import annotations

from ...encoders.pi3 import Pi3Config
from ...sampling import sampling_timesteps
from ..ppd.flops import Gemm, Work, transformer_blocks
from .dit import VideoDiTConfig
from .pipeline import WINDOW


def dit_step_work(cfg: VideoDiTConfig, height: int, width: int, frames: int = WINDOW) -> Work:
    """One DiT_Video evaluation on a window: the formula in the module docstring."""
    d, p, m = cfg.hidden_size, cfg.patch_size, cfg.mlp_hidden
    nc = (height // (2 * p)) * (width // (2 * p))
    nf = 4 * nc
    k = cfg.keyframe_pool                                     # the pooling floors: (h/8 // 4) x (w/8 // 4) per keyframe
    nr = cfg.keyframes * (height // p // k) * (width // p // k)
    blocks = (transformer_blocks(nc, d, m, cfg.fusion_after, frames)
              + transformer_blocks(nf, d, m, cfg.keyframe_from - cfg.fusion_after, frames)
              + transformer_blocks(nf + nr, d, m, cfg.depth - cfg.keyframe_from, frames)
              + transformer_blocks(frames, d, m, cfg.temporal_depth, nf))
    small = [Gemm(1, 256, d), Gemm(1, d, d),                                            # timestep MLP
             Gemm(1, d, 6 * d, cfg.depth + cfg.temporal_depth), Gemm(1, d, 2 * d)]      # adaLN
    tokens = [Gemm(frames * nc, cfg.in_channels * (2 * p) ** 2, d),                     # patch conv
              Gemm(frames * nc, d + cfg.semantic_dim, 4 * d), Gemm(frames * nc, 4 * d, 4 * d, 2),   # fusion
              Gemm(frames * nf, d, p * p * cfg.out_channels)]                           # final linear
    return blocks + Work(small + tokens)


def pi3_work(cfg: Pi3Config, height: int, width: int, frames: int = WINDOW) -> Work:
    """Pi3's semantic path on a window: DINOv2-reg on every frame, then the frame-wise/global decoder."""
    e = cfg.encoder
    nc = (height // 16) * (width // 16)
    s = cfg.register_tokens + nc
    encoder = (Work([Gemm(frames * nc, 3 * e.patch_size ** 2, e.embed_dim)])
               + transformer_blocks(1 + e.num_register_tokens + nc, e.embed_dim, e.mlp_hidden, e.depth, frames))
    frame_wise = transformer_blocks(s, cfg.width, cfg.mlp_hidden, (cfg.depth + 1) // 2, frames)
    global_ = transformer_blocks(frames * s, cfg.width, cfg.mlp_hidden, cfg.depth // 2, 1)
    return encoder + frame_wise + global_


def window_work(dit: VideoDiTConfig, pi3: Pi3Config, height: int, width: int, steps: int = 4) -> Work:
    """Everything one window costs: Pi3 once, then one DiT evaluation per timestep."""
    evaluations = len(sampling_timesteps(steps))
    return pi3_work(pi3, height, width) + dit_step_work(dit, height, width).times(evaluations)


def window_flop(dit: VideoDiTConfig, pi3: Pi3Config, height: int = 512, width: int = 512, steps: int = 4) -> int:
    """FLOP of one 16-frame window at the processing size (height, width)."""
    return window_work(dit, pi3, height, width, steps).flop
