"""Float32 tolerances shared by the tests that compare with the official code's golden tensors.

Each is derived from float32 resolution, not from what one machine prints: the fixtures were made on
one AVX512 machine, and another runs other kernels (SIMD width, FMA, libm), so only what float32
rounding allows is asked for. Measured errors per CPU capability are in the README ("Exactness").
"""
from __future__ import annotations

import torch

EPS = 2.0 ** -23          # float32 spacing at 1.0: a value v is stored to within EPS * |v| / 2

# DiT and sampler fed the fixture's own timestep features: the README's "same ops" atol. A DiT output
# passes 4 blocks of 64..256-long float32 dot products, LayerNorms and SDPA; kernels that sum in
# another order or fuse multiply-adds differ by a few EPS per op relative to the O(1) activations, and
# the README measured the official code's fp32-vs-fp64 gap at 0.9e-6..1.7e-6, so 2e-5 (about 170 EPS)
# covers any summation order while the smallest real mistake in the README table (exact GELU) is 5.9e-5.
DIT_TOL = 2e-5
# Timestep features cos/sin(t * f): t * f reaches 1000, where one float32 step is 2^-14 = 6.1e-5. The
# frequencies f = exp(...) may differ by one ulp between libm/SLEEF versions, which moves t * f by less
# than 2^-14 before rounding and so by at most one step after it; |d sin(x)/dx| <= 1, plus the last-place
# error of sin/cos itself (EPS). (Fixtures README, "Machine-sensitive": another Xeon differs by 2.9e-5.)
TFREQ_TOL = 2 * 2.0 ** -14 + EPS
# The DiT or sampler end to end with this machine's own features: DIT_TOL plus the feature difference
# carried through the timestep MLP and every adaLN. First-order bound sum_j |d out / d freq_j| * delta_j with
# delta_j = t * ulp(f_j) + ulp(t * f_j) + 2^-24 per feature, computed in float64 with the fixture weights
# (torch.func.jacfwd): 3.0e-5 for cases a and b, 1.4e-5 for c. A sampler step mixes predictions with
# weights (t - s) / T that sum to 1 over the run, so the same bound holds for latents and depth.
END_TO_END_TOL = DIT_TOL + 3.0e-5
# Encoder semantics: the README's measured fp32-vs-fp64 gap of the official encoders is 1e-5..2e-4, set
# by float32 resize coordinates that every correct port shares; between CPU kernels the resized input
# differs by <= RESIZE_ULPS (below), up to 1e-5 for |x| <= 3.5, and 3-4 LayerScale'd ViT blocks with their
# LayerNorms carry that with a gain of order 1 plus their own rounding (DIT_TOL-like). 1e-4 bounds both and
# stays 4600x below the smallest encoder mistake in the README table (0.46).
ENC_TOL = 1e-4
# Resize-free units (RoPE x*cos + rot(x)*sin): two products and a sum of O(1) values; with or without
# FMA they differ by <= 2 roundings of |x| <= 4, i.e. 2 * 4 * EPS ~ 1e-6.
UNIT_TOL = 1e-6
# Bicubic resizes (positional embedding, encoder input): 2 separable passes x 4 taps x (product, sum)
# = 16 roundings, on partial sums up to sum|w| <= 1.3 times the input, plus 2 for normalisation:
# <= 24 EPS of the largest magnitude. (DEFAULT vs AVX512 kernels differ by ~9 EPS here.)
RESIZE_ULPS = 24


def resize_tol(ref: torch.Tensor) -> float:
    """RESIZE_ULPS float32 steps of the largest value in `ref`."""
    return RESIZE_ULPS * EPS * ref.abs().max().item()
