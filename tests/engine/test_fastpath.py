"""Fast paths agree with the float32 eager path (which equals the parity fixtures, see tolerances.py).

compile: 1e-4, the fixtures README's DiT tolerance for "other device / op order" (inductor fuses ops and
reorders reductions; measured ~1e-6 here). Half precision cannot reach that: the DiT output itself is rounded
to the half dtype, whose spacing at the fixtures' |v| ~ 1.6 is 7.8e-3 (bf16) and 9.8e-4 (fp16); there
we require at most 4 such spacings.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from tolerances import END_TO_END_TOL

from comfyui_ppd import load_dit, load_semantic_encoder, runtime
from comfyui_ppd.bench.harness import MemoryMeter, measure
from comfyui_ppd.families.ppd.dit import Attention
from comfyui_ppd.nn.dinov2 import Attention as ViTAttention
from comfyui_ppd.nn.layers import rope_2d_tables

FAST_TOL = 1e-4
SPACING_AT_2 = {torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10}     # distance between values in [1, 2)


def err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.fixture(scope="module")
def cases(load_fixture):
    f = load_fixture("dit_tiny_cases")
    return [(f[f"{c}.x"], f[f"{c}.semantics"], f[f"{c}.timestep"], f[f"{c}.out"]) for c in "abc"]


@pytest.mark.slow
def test_compiled_dit_matches_eager(parity, cases):
    """torch.compile (inductor) of the blocks: ~20 s cold on 2 CPU cores; skipped if compiling is impossible."""
    dit = load_dit(parity / "dit_tiny_weights.safetensors")
    x, sem, t, ref = cases[0]
    with torch.inference_mode():
        eager = dit(x, sem, t)
    runtime.compile_blocks(dit)
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        out = dit(x, sem, t)
    assert err(out, eager) < FAST_TOL                 # holds on the eager fallback as well
    if not runtime.is_compiled(dit):
        pytest.skip(f"torch.compile cannot run here, fell back to eager: {[str(w.message) for w in caught]}")
    assert err(out, ref) < END_TO_END_TOL             # this machine's own timestep features, end to end


def test_compile_failure_falls_back_to_eager(parity, cases, monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(runtime.torch, "compile", broken_compile)
    dit = runtime.compile_blocks(load_dit(parity / "dit_tiny_weights.safetensors"))
    x, sem, t, ref = cases[0]
    with pytest.warns(RuntimeWarning, match="running them eagerly.*no C\\+\\+ compiler"), torch.inference_mode():
        out = dit(x, sem, t)
    assert not runtime.is_compiled(dit)
    assert err(out, ref) < END_TO_END_TOL
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # later calls stay eager without warning again
        with torch.inference_mode():
            assert err(dit(x, sem, t), ref) < END_TO_END_TOL


def test_compile_unavailable_at_setup_falls_back(parity, cases, monkeypatch):
    """Older torch raises from torch.compile itself (e.g. on an unsupported Python): warn, stay eager."""
    def unavailable(fn, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(runtime.torch, "compile", unavailable)
    with pytest.warns(RuntimeWarning, match="Dynamo is not supported"):
        dit = runtime.compile_blocks(load_dit(parity / "dit_tiny_weights.safetensors"))
    x, sem, t, ref = cases[0]
    with torch.inference_mode():
        assert err(dit(x, sem, t), ref) < END_TO_END_TOL
    assert not runtime.is_compiled(dit)


@pytest.mark.parametrize("weights,autocast", [
    (torch.float32, torch.bfloat16),       # the pipeline's CUDA default: fp32 weights, bf16 autocast
    (torch.bfloat16, torch.bfloat16),      # weights stored in bf16
    (torch.float16, None),                 # weights stored in fp16, no autocast
])
def test_half_precision_dit_agrees(parity, cases, weights, autocast):
    dit = load_dit(parity / "dit_tiny_weights.safetensors", dtype=weights)
    half = autocast or weights
    for x, sem, t, ref in cases:
        with torch.inference_mode(), torch.autocast("cpu", dtype=half, enabled=autocast is not None):
            out = dit(x, sem, t).float()
        assert torch.isfinite(out).all()
        assert err(out, ref) < 4 * SPACING_AT_2[half] * ref.abs().max().item() / 2


def test_half_precision_encoder_agrees(parity, load_fixture):
    image = load_fixture("encoder_inputs")["small.image"]
    ref = load_fixture("da2_encoder_tiny_cases")["small.semantics"]
    enc = load_semantic_encoder(parity / "da2_encoder_tiny_weights.safetensors", num_heads=4, dtype=torch.bfloat16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(image).float()
    assert err(out, ref) < 4 * SPACING_AT_2[torch.bfloat16] * max(1.0, ref.abs().max().item()) / 2


def test_per_row_timesteps_match_shared_timestep(parity, cases):
    """A (B,) timestep vector takes the unfused norm-modulate path; a 0-d one the fused LayerNorm."""
    dit = load_dit(parity / "dit_tiny_weights.safetensors")
    x, sem, t, ref = cases[0]
    with torch.inference_mode():
        shared = dit(x, sem, t)
        per_row = dit(x, sem, t.reshape(1).expand(x.shape[0]))
    # Same features, same weights: the fused and unfused LayerNorm-modulate differ only in rounding order,
    # a few EPS per op on O(1) activations over 4 blocks: 1e-5 (~80 EPS) bounds it.
    assert err(per_row, shared) < 1e-5 and err(per_row, ref) < END_TO_END_TOL


def test_attention_memory_stays_linear_in_tokens():
    """16,384 tokens (a 128x128 grid): a materialised score matrix alone would take 1 GiB; SDPA needs a few MiB."""
    meter = MemoryMeter(torch.device("cpu"))
    if meter.peak() is None:
        pytest.skip("peak memory is only measured on Linux (/proc/self/status)")
    grid, dim = 128, 64
    x = torch.randn(1, grid * grid, dim)
    rope = rope_2d_tables(grid, grid, dim)
    dit_attn, vit_attn = Attention(dim, 1).eval(), ViTAttention(dim, 1).eval()
    scores = (grid * grid) ** 2 * 4
    with torch.inference_mode():
        for fn in (lambda: dit_attn(x, rope), lambda: vit_attn(x)):
            sample = measure(fn, torch.device("cpu"), meter)
            assert sample.activation < scores / 8, sample
