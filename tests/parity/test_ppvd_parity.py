"""Every golden tensor of ../shared/fixtures/ppvd (the official PPVD code on tiny models), the window plan,
and the full-size checkpoint layouts built on the meta device.

Errors are max |got - ref| in float64 (relative to max |ref| where marked). Tolerances, from float32
resolution (eps = 1.2e-7) and the official code's own float32-vs-float64 gaps (fixtures README):
* DIT_TOL 2e-5: DiT outputs reach 1.1, window predictions have std 1.0; the official float32 forward is
  within 5.7e-7 (DiT) / 1.1e-6 (12 sampler evaluations) of float64, so another float32 op order (fused
  LayerNorm-modulation, other SDPA and GEMM kernels) can add a few times that; 2e-5 is ~170 ulps at 1,
  and 50x below the smallest structural mistake these fixtures can catch (1.2e-3).
* T_FREQ_TOL 1e-4: cos/sin of float32 arguments up to 750 rad; rounding t*f alone moves the argument by
  up to 750 * 6e-8 = 4.5e-5 (the README's 4.6e-5 gap to float64), and libm/SIMD sin differ by ~3e-5.
* PI3_TOL 1e-4: semantics std 1.0; the official float32 decoder is 2.8e-5 from float64 (LayerScale
  residuals through 7 layers), so two float32 evaluations may differ by that; 1e-4 is ~3.5x.
* UNIT_TOL 1e-6: closed-form tables and one resize/normalise/rotation of values below ~2.7: a few float32
  roundings (<= 3e-7 each) at most.
* REL_TOL 1e-5 of max |ref|: the official fit solves float32 normal equations whose det cancels
  (a00*a11 - a01^2); that fitter is itself only ~4e-6 relative from float64 (1.6e-5 on depths up to 3.6).
* Integers (timesteps, positions, window plans) are compared exactly.
"""
from __future__ import annotations

import json

import pytest
import torch
from tolerances import resize_tol

from comfyui_ppd import load_dit, load_semantic_encoder
from comfyui_ppd.align import fit_scale_shift_f32
from comfyui_ppd.checkpoints import CheckpointError
from comfyui_ppd.encoders.pi3 import decoder_positions
from comfyui_ppd.families.ppd.dit import TimestepEmbedder
from comfyui_ppd.families.ppvd import (
    Pi3Semantics,
    VideoDepthPipeline,
    VideoDiT,
    align_windows,
    window_plan,
)
from comfyui_ppd.families.ppvd.dit import sincos_2d
from comfyui_ppd.families.ppvd.flops import dit_step_work, pi3_work
from comfyui_ppd.families.ppvd.pipeline import network_frames
from comfyui_ppd.nn.layers import apply_rope_2d, rope_tables_from_positions
from comfyui_ppd.registry import identify
from comfyui_ppd.sampling import sampling_timesteps
from plumbing import tensor_loader

DIT_TOL, T_FREQ_TOL, PI3_TOL, UNIT_TOL, REL_TOL = 2e-5, 1e-4, 1e-4, 1e-6, 1e-5


def err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return err(a, b) / b.double().abs().max().item()


@pytest.fixture(scope="module")
def fx(ppvd_fixtures):
    """fx("pipeline_tiny") -> dict of tensors."""
    return tensor_loader(ppvd_fixtures)


@pytest.fixture(scope="module")
def dit(ppvd_fixtures):
    return load_dit(ppvd_fixtures / "dit_video_tiny_weights.safetensors")


@pytest.fixture(scope="module")
def pi3(ppvd_fixtures):
    # tiny encoder: 16-dim heads
    return load_semantic_encoder(ppvd_fixtures / "pi3_tiny_weights.safetensors", num_heads=4)


def test_manifest_lists_only_tensors_we_check(ppvd_fixtures):
    """Each stored tensor is used by a test below (names listed here); a new fixture tensor fails this."""
    manifest = json.loads((ppvd_fixtures / "manifest.json").read_text())
    checked_prefixes = ("a.", "b.", "unit.", "dit_video.", "register_token", "image_mean", "image_std", "encoder.",
                        "decoder.", "frames_u8", "noise", "proc_frames_0_and_29", "window_frame_index",
                        "window_semantics", "s2.", "s4.", "u3.", "u2.", "degenerate.", "lsq.")
    for name, entry in manifest.items():
        if name.endswith(".safetensors"):
            unknown = [t for t in entry["tensors"] if not t.startswith(checked_prefixes)]
            assert not unknown, (name, unknown)


# --- DiT_Video -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["a", "b"])
def test_dit_outputs(dit, fx, case):
    f = fx("dit_video_tiny_cases")
    with torch.no_grad():
        out = dit(f["a.x"], f["a.semantics"], f[f"{case}.timestep"])
    assert err(out, f[f"{case}.out"]) < DIT_TOL


def test_dit_intermediates(dit, fx):
    f = fx("dit_video_tiny_cases")
    seen: dict[str, torch.Tensor] = {}

    def record(name: str):
        return lambda m, i, o: seen.__setitem__(name, o)
    hooks = [dit.t_embedder.register_forward_hook(record("t_emb")),
             dit.x_embedder.register_forward_hook(record("x_patch")),
             dit.final_layer.register_forward_hook(record("final_layer_out")),
             dit.blocks[0].register_forward_pre_hook(lambda m, args: seen.__setitem__("x_tokens", args[0])),
             dit.blocks[12].register_forward_pre_hook(lambda m, args: seen.__setitem__("fusion_out", args[0]))]
    for i, block in enumerate(dit.blocks):           # blocks 19..24 see keyframe tokens appended: keep 4L
        hooks.append(block.register_forward_hook(
            lambda m, a, o, i=i: seen.__setitem__(f"block{i + 1:02d}_out", o[:, :64])))
    for j, block in enumerate(dit.temporal_blocks):  # (positions, frames, D) -> (frames, positions, D)
        hooks.append(block.register_forward_hook(
            lambda m, a, o, j=j: seen.__setitem__(f"temporal{j + 1}_out", o.transpose(0, 1))))
    refs = []
    pool = dit.keyframe_tokens
    dit.keyframe_tokens = lambda *args: refs.append(pool(*args)) or refs[-1]
    try:
        with torch.no_grad():
            dit(f["a.x"], f["a.semantics"], f["a.timestep"])
    finally:
        del dit.keyframe_tokens
        for h in hooks:
            h.remove()
    for k, r in enumerate(refs):                      # (3*4, D) frame-major -> (3, 4, D)
        seen[f"refs_block{19 + k}"] = r.reshape(3, -1, r.shape[-1])
    names = sorted(k[2:] for k in f if k.startswith("a.") and k not in ("a.x", "a.semantics", "a.timestep",
                                                                        "a.out", "a.t_freq"))
    assert len(names) == 24 and len(refs) == 6     # 10 blocks, 6 refs, 3 temporal, 5 others
    errors = {n: err(seen[n], f[f"a.{n}"]) for n in names}
    assert max(errors.values()) < DIT_TOL, errors


def test_timestep_features(fx):
    f = fx("dit_video_tiny_cases")
    assert err(TimestepEmbedder.timestep_embedding(f["a.timestep"].reshape(1)), f["a.t_freq"]) < T_FREQ_TOL


def test_sincos_tables(fx):
    f, w = fx("dit_video_tiny_cases"), fx("dit_video_tiny_weights")
    assert err(sincos_2d(32, 3, 5)[0], f["unit.sincos_dim32_grid3x5"]) < UNIT_TOL        # column first, non-square
    assert err(sincos_2d(32, 4, 4), w["dit_video.pos_embed"]) < UNIT_TOL


def test_dit_other_grid_uses_the_formula(dit, fx):
    """At a size other than the stored table's grid the DiT adds the same formula's table."""
    f = fx("dit_video_tiny_cases")
    x = torch.nn.functional.interpolate(f["a.x"], size=(64, 96))
    assert err(dit.positions(4, 6, x), sincos_2d(32, 4, 6)) == 0
    with torch.no_grad():
        out = dit(x, torch.randn(16, 24, 128), f["a.timestep"])
    assert out.shape == (16, 1, 64, 96) and torch.isfinite(out).all()


# --- Pi3 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["a", "b"])
def test_pi3_semantics(pi3, fx, case):
    f = fx("pi3_tiny_cases")
    images = f[f"{case}.images"]
    gh, gw = images.shape[-2] // 16, images.shape[-1] // 16
    with torch.no_grad():
        x = pi3.backbone_input(images)
        patches = pi3.patch_tokens(x)
        semantics = pi3(images)
        pos = pi3.encoder.interpolate_pos_encoding(gh, gw)
    assert err(pos, f[f"{case}.pos_embed_interp"]) < UNIT_TOL
    assert torch.equal(decoder_positions(gh, gw, 5)[None].expand(16, -1, -1), f[f"{case}.positions"])
    assert err(patches, f[f"{case}.encoder_patch_tokens"]) < PI3_TOL
    assert err(semantics, f[f"{case}.semantics"]) < PI3_TOL
    if case == "a":
        # a resized, normalised image (values to ~2.6): resize kernels differ by CPU capability (tolerances.py)
        assert err(x, f["a.encoder_input"]) < resize_tol(f["a.encoder_input"])


def test_pi3_decoder_layers(pi3, fx):
    f = fx("pi3_tiny_cases")
    seen = {}
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o.reshape(16, -1, o.shape[-1])))
             for i, layer in enumerate(pi3.decoder)]
    try:
        with torch.no_grad():
            pi3(f["a.images"])
    finally:
        for h in hooks:
            h.remove()
    errors = {i: err(seen[i], f[f"a.decoder{i}_out"]) for i in range(4)}
    assert max(errors.values()) < PI3_TOL, errors


def test_pi3_rope_unit(fx):
    f = fx("pi3_tiny_cases")
    tokens = f["unit.rope.tokens"]
    cos, sin = rope_tables_from_positions(f["unit.rope.positions"], tokens.shape[-1], 100.0)
    assert err(apply_rope_2d(tokens, cos, sin), f["unit.rope.out"]) < UNIT_TOL


# --- pipeline -----------------------------------------------------------------------------------------
def video(fx) -> torch.Tensor:
    """frames_u8 (T,H,W,3) RGB -> (T,3,H,W) in [0,1] (the official /255 in float64 rounds to the same float32)."""
    return fx("pipeline_tiny")["frames_u8"].permute(0, 3, 1, 2).double().div(255).float()


def test_network_frames_are_bgr_and_resized(fx):
    f = fx("pipeline_tiny")
    assert err(network_frames(video(fx)[[0, 29]], (64, 64)), f["proc_frames_0_and_29"]) < UNIT_TOL


@pytest.mark.parametrize("steps", [2, 4])
def test_pipeline(dit, pi3, fx, monkeypatch, steps):
    f = fx("pipeline_tiny")
    pipe = VideoDepthPipeline(dit, pi3, process_size=(64, 64))
    preds, semantics = [], []
    real = pipe.window_prediction
    monkeypatch.setattr(pipe, "window_prediction", lambda *a, **k: preds.append(real(*a, **k)) or preds[-1])
    hook = pi3.register_forward_hook(lambda m, a, o: semantics.append(o))
    try:
        result = pipe.run(video(fx), steps=steps, noise=f["noise"])
    finally:
        hook.remove()
    assert sampling_timesteps(steps) == f[f"s{steps}.timesteps"].tolist()
    assert result.windows == f["window_frame_index"].tolist()
    assert err(torch.stack(semantics), f["window_semantics"]) < PI3_TOL
    assert err(torch.stack(preds), f[f"s{steps}.window_preds"]) < DIT_TOL
    assert rel_err(torch.tensor(result.scale_shift), f[f"s{steps}.scale_shift"]) < REL_TOL
    assert result.depth.dtype == torch.float32 and result.depth.shape == (30, 1, 48, 80)
    assert rel_err(result.depth[:, 0], f[f"s{steps}.depth"]) < REL_TOL


# --- alignment --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case,windows", [("u3", 3), ("u2", 2), ("degenerate", 3)])
def test_alignment_units(fx, case, windows):
    f = fx("align_units")
    source = f["degenerate.windows" if case == "degenerate" else "u3.windows"][:windows, :, 0]
    assert rel_err(align_windows(source), f[f"{case}.out"]) < REL_TOL


@pytest.mark.parametrize("case", ["full", "masked"])
def test_least_squares_unit(fx, case):
    f = fx("align_units")
    mask = f["lsq.mask"] if case == "masked" else None
    got = torch.tensor(fit_scale_shift_f32(f["lsq.prediction"], f["lsq.target"], mask))
    assert rel_err(got, f[f"lsq.{case}"]) < REL_TOL


# --- window plan (official infer_video traced for 1..43 frames) ------------------------------------------
def test_window_plan_matches_official(ppvd_fixtures):
    cases = json.loads((ppvd_fixtures / "windowing.json").read_text())["cases"]
    assert len(cases) == 12
    for length, case in cases.items():
        n = int(length)
        plan = window_plan(n)
        if case["windows"]:
            assert plan == case["windows"], n
            assert 16 + 13 * (len(plan) - 1) - n == case["padding"], n
        else:                    # the official code crashes on 1-3 frames; we pad them to one window
            assert "need at least one array" in case["error"] and n <= 3
            assert plan == [[min(i, n - 1) for i in range(16)]]


def test_channel_order_reaching_the_networks(ppvd_fixtures):
    """Frame t is (R,G,B) = (t+1, 100+t, 200): the official encoder saw [200, 100, 1] for frame 0."""
    case = json.loads((ppvd_fixtures / "windowing.json").read_text())["cases"]["16"]
    frame = torch.tensor([1.0, 100.0, 200.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4) / 255
    got = network_frames(frame, (4, 4))[0, :, 0, 0] * 255
    assert got.round().tolist() == case["semantic_input_channels_first_frame"]


# --- full-size layouts on the meta device ----------------------------------------------------------------
@pytest.fixture(scope="module")
def real_shapes(ppvd_fixtures) -> dict:
    shapes = json.loads((ppvd_fixtures / "real_checkpoint_shapes.json").read_text())
    return {name: {k: torch.empty(v, device="meta") for k, v in entry["keys"].items()}
            for name, entry in shapes.items()}


def test_full_size_video_dit_on_meta(real_shapes):
    sd = real_shapes["ppvd_pth_dit_video"]
    assert [f.name for _, f in identify(sd)] == ["ppvd"]
    dit = load_dit(sd)                                   # the public loader picks the video DiT from the keys
    assert isinstance(dit, VideoDiT)
    c = dit.config
    assert (c.hidden_size, c.depth, c.num_heads, c.semantic_dim, c.temporal_depth, c.pos_grid) == \
        (1024, 24, 16, 2048, 3, (32, 32))
    assert (c.fusion_after, c.keyframe_from, c.temporal_from) == (12, 18, 21)
    assert sum(p.numel() for p in dit.parameters()) == 561_754_944
    assert dit.pos_embed.numel() == 1_048_576


def test_full_size_pi3_on_meta(real_shapes):
    sd = real_shapes["pi3_safetensors"]
    assert [f.name for _, f in identify(sd)] == ["pi3"]
    enc = load_semantic_encoder(sd)
    assert isinstance(enc, Pi3Semantics)
    assert (enc.config.encoder.embed_dim, enc.config.encoder.depth, enc.config.encoder.num_heads,
            enc.config.encoder.num_register_tokens) == (1024, 24, 16, 4)
    assert (enc.config.width, enc.config.depth, enc.config.num_heads, enc.semantic_dim) == (1024, 36, 16, 2048)
    assert sum(p.numel() for p in enc.parameters()) == 757_923_840


def test_full_size_flop_formula_matches_a_count(real_shapes):
    """The analytic per-window FLOP formula equals torch's FLOP counter on the full-size models (meta device:
    shapes only, no arithmetic; attention runs as bmm there, so it is counted too)."""
    from torch.utils.flop_counter import FlopCounterMode
    dit, enc = load_dit(real_shapes["ppvd_pth_dit_video"]), load_semantic_encoder(real_shapes["pi3_safetensors"])
    with FlopCounterMode(display=False) as counter:
        dit(torch.empty(16, 4, 512, 512, device="meta"), torch.empty(16, 1024, 2048, device="meta"),
            torch.tensor(1000))
    assert counter.get_total_flops() == dit_step_work(dit.config, 512, 512).flop
    with FlopCounterMode(display=False) as counter:
        enc(torch.empty(16, 3, 512, 512, device="meta"))
    assert counter.get_total_flops() == pi3_work(enc.config, 512, 512).flop


def test_loaders_refuse_each_others_files(real_shapes):
    with pytest.raises(CheckpointError, match="Pi3 model"):
        load_dit(real_shapes["pi3_safetensors"])
    with pytest.raises(CheckpointError, match="PPVD video DiT"):
        load_semantic_encoder(real_shapes["ppvd_pth_dit_video"])
