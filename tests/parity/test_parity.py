"""Every golden fixture of ../shared/fixtures/parity, through the public API and the documented internals.

Tolerances are max abs errors in float32 on any x86 CPU (ATEN_CPU_CAPABILITY default, avx2, avx512;
1 or 2 threads), each derived from float32 resolution next to its constant in tolerances.py. The fixtures were
made on one AVX512 machine; another machine runs other kernels (SIMD width, FMA, libm), so only
what float32 rounding allows is asked for, never the bits this machine happens to print.
"""
from __future__ import annotations

import json

import pytest
import torch
from tolerances import DIT_TOL, ENC_TOL, END_TO_END_TOL, EPS, TFREQ_TOL, UNIT_TOL, resize_tol

from comfyui_ppd import PPDPipeline, load_dit, load_semantic_encoder, sampling_timesteps
from comfyui_ppd.families.ppd.dit import TimestepEmbedder
from comfyui_ppd.nn.layers import apply_rope_2d, rope_tables_from_positions
from comfyui_ppd.sampling import euler_step, next_timesteps

OWN_FEATURES = TimestepEmbedder.timestep_embedding


def err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


@pytest.fixture(scope="module")
def dit(parity):
    return load_dit(parity / "dit_tiny_weights.safetensors")


@pytest.fixture()
def official_features(load_fixture, monkeypatch):
    """Feed the DiT the fixture's own timestep features (unit.tembed table, t in 0,1,249,500,750,1000).

    They are float32 sin/cos of arguments up to 1000 as the fixture machine's libm rounded them; with
    them the DiT math is compared at DIT_TOL, and the features themselves at TFREQ_TOL.
    """
    f = load_fixture("dit_tiny_cases")
    table = {int(t): row for t, row in zip(f["unit.tembed.t"], f["unit.tembed.freq256"])}

    def lookup(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
        return torch.stack([table[int(v)] for v in t.reshape(-1)])

    monkeypatch.setattr(TimestepEmbedder, "timestep_embedding", staticmethod(lookup))


# --- DiT -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["a", "b", "c"])
def test_dit_cases(dit, load_fixture, case):
    f = load_fixture("dit_tiny_cases")
    with torch.no_grad():
        out = dit(f[f"{case}.x"], f[f"{case}.semantics"], f[f"{case}.timestep"])
    assert err(out, f[f"{case}.out"]) < END_TO_END_TOL


@pytest.mark.parametrize("case", ["a", "b", "c"])
def test_dit_cases_fed_official_features(dit, load_fixture, official_features, case):
    f = load_fixture("dit_tiny_cases")
    with torch.no_grad():
        out = dit(f[f"{case}.x"], f[f"{case}.semantics"], f[f"{case}.timestep"])
    assert err(out, f[f"{case}.out"]) < DIT_TOL


def test_dit_intermediates_case_a(dit, load_fixture, official_features):
    """Everything after the sin/cos at DIT_TOL (fed the fixture's a.t_freq); our own features at TFREQ_TOL."""
    f = load_fixture("dit_tiny_cases")
    seen: dict[str, torch.Tensor] = {}
    hooks = [dit.t_embedder.register_forward_hook(lambda m, i, o: seen.__setitem__("t_emb", o)),
             dit.final_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("final_layer_out", o)),
             dit.blocks[len(dit.blocks) // 2].register_forward_pre_hook(
                 lambda m, args: seen.__setitem__("fusion_out", args[0]))]
    for i, block in enumerate(dit.blocks):
        hooks.append(block.register_forward_hook(lambda m, inp, o, i=i: seen.__setitem__(f"block{i}_out", o)))
    try:
        with torch.no_grad():
            dit(f["a.x"], f["a.semantics"], f["a.timestep"])
            seen["x_embed"] = dit.x_embedder(f["a.x"])
            own_t_freq = OWN_FEATURES(f["a.timestep"].reshape(1))
    finally:
        for h in hooks:
            h.remove()
    assert err(own_t_freq, f["a.t_freq"]) < TFREQ_TOL
    names = ["t_emb", "x_embed", "block0_out", "block1_out", "fusion_out", "block2_out",
             "block3_out", "final_layer_out"]
    errors = {n: err(seen[n], f[f"a.{n}"]) for n in names}
    assert max(errors.values()) < DIT_TOL, errors


def test_timestep_embedding_units(load_fixture):
    f = load_fixture("dit_tiny_cases")
    assert err(OWN_FEATURES(f["unit.tembed.t"]), f["unit.tembed.freq256"]) < TFREQ_TOL


@pytest.mark.parametrize("grid", ["4x6", "8x12"])
def test_rope_units(load_fixture, grid):
    f = load_fixture("dit_tiny_cases")
    tokens, positions = f[f"unit.rope_{grid}.tokens"], f[f"unit.rope_{grid}.positions"]
    cos, sin = rope_tables_from_positions(positions, tokens.shape[-1])
    assert err(apply_rope_2d(tokens, cos, sin), f[f"unit.rope_{grid}.out"]) < UNIT_TOL


def test_cached_grid_rope_equals_explicit_positions(dit, load_fixture):
    f = load_fixture("dit_tiny_cases")
    tokens = f["unit.rope_8x12.tokens"]
    cos, sin = dit.rope(8, 12, torch.device("cpu"), torch.float32)    # the DiT's cached grid tables
    assert dit.rope(8, 12, torch.device("cpu"), torch.float32)[0] is cos
    assert err(apply_rope_2d(tokens, cos, sin), f["unit.rope_8x12.out"]) < UNIT_TOL


# --- sampler ---------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [4, 10])
def test_sampler_trajectory(dit, load_fixture, steps):
    f = load_fixture("sampler_tiny")
    pipe = PPDPipeline(dit, _NoEncoder(dit.config.semantic_dim))
    preds, latents = [], []
    original = dit.forward_condition

    def recording(latent, cond, t):
        v = original(latent, cond, t)
        preds.append(v)
        return v

    dit.forward_condition = recording
    try:
        depth = pipe.sample(f["image"], f["semantics"], steps, noise=f[f"s{steps}.noise"])
    finally:
        del dit.forward_condition
    ts = sampling_timesteps(steps)
    assert ts == f[f"s{steps}.timesteps"].tolist()
    assert next_timesteps(ts) == f[f"s{steps}.next_timesteps"].tolist()
    x = f[f"s{steps}.noise"]
    for v, t, s in zip(preds, ts, next_timesteps(ts)):
        x = euler_step(x, v, t, s)
        latents.append(x)
    assert err(torch.stack(preds), f[f"s{steps}.preds"]) < END_TO_END_TOL
    assert err(torch.stack(latents), f[f"s{steps}.latents"]) < END_TO_END_TOL
    assert err(depth, f[f"s{steps}.depth"]) < END_TO_END_TOL


def test_sampler_29_steps_extra_evaluation(dit, load_fixture):
    f = load_fixture("sampler_tiny")
    ts = sampling_timesteps(29)
    assert len(ts) == 30 and ts[-1] == -1 and ts == f["s29.timesteps"].tolist()
    pipe = PPDPipeline(dit, _NoEncoder(dit.config.semantic_dim))
    depth = pipe.sample(f["image"], f["semantics"], 29, noise=f["s29.noise"])
    assert err(depth, f["s29.depth"]) < END_TO_END_TOL


def test_seeded_noise_matches_official_draw(load_fixture):
    from comfyui_ppd.sampling import make_noise
    f = load_fixture("sampler_tiny")
    # torch.randn is Box-Muller on the generator's exact uniforms: z = sqrt(-2 ln u1) * cos(2 pi u2).
    # The AVX2/AVX512 kernels reproduce the fixture bit for bit; the scalar (DEFAULT) one uses another
    # log/cos. With radius r <= sqrt(-2 ln 2^-24) = 5.8, the angle (< 2 pi, step 4.8e-7) may differ
    # by 2 steps and r by 4 EPS relative: |dz| <= 5.8 * (2 * 4.8e-7 + 4 * EPS) = 8.3e-6. Another seed
    # or generator changes z by O(1).
    noise_tol = 5.8 * (2 * 2.0 ** -21 + 4 * EPS)
    for steps, seed in [(4, 4242), (10, 1010), (29, 2929)]:
        assert err(make_noise(1, 64, 96, seed), f[f"s{steps}.noise"]) < noise_tol


def test_timesteps_json_all_step_counts(parity):
    table = json.loads((parity / "timesteps.json").read_text())["by_steps"]
    for n in range(1, 51):
        row = table[str(n)]
        assert sampling_timesteps(n) == row["timesteps"], n
        assert next_timesteps(row["timesteps"]) == row["next_timesteps"], n
        assert len(sampling_timesteps(n)) == row["num_dit_evaluations"]


class _NoEncoder(torch.nn.Module):
    """Stands for an encoder when the fixture hands semantics straight to the DiT."""

    kind = "none"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.semantic_dim = dim


# --- encoders --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def da2(parity):
    return load_semantic_encoder(parity / "da2_encoder_tiny_weights.safetensors", num_heads=4)


@pytest.mark.parametrize("case", ["small", "large"])
def test_da2_encoder(da2, load_fixture, case):
    f, image = load_fixture("da2_encoder_tiny_cases"), load_fixture("encoder_inputs")[f"{case}.image"]
    assert da2.kind == "da2"
    with torch.no_grad():
        assert err(da2(image), f[f"{case}.semantics"]) < ENC_TOL
        ref = f[f"{case}.backbone_input"]
        assert err(da2.backbone_input(image), ref) < resize_tol(ref)
        h0, w0 = image.shape[-2] // 16, image.shape[-1] // 16
        ref = f[f"{case}.pos_embed_interp"]
        assert err(da2.pretrained.interpolate_pos_encoding(h0, w0), ref) < resize_tol(ref)


def test_da2_block_outputs(da2, load_fixture):
    f, image = load_fixture("da2_encoder_tiny_cases"), load_fixture("encoder_inputs")["small.image"]
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in da2.pretrained.blocks]
    try:
        with torch.no_grad():
            da2(image)
    finally:
        for h in hooks:
            h.remove()
    for i, o in enumerate(outs):
        assert err(o, f[f"small.block{i}_out"]) < ENC_TOL


MOGE = [("moge2_encoder_tiny", [0, 1, 2, 3]), ("moge2_encoder_tiny_sel13", [1, 3])]


def _moge_pt(parity, name, tmp_path):
    """The fixture weights wrapped like a released model.pt: {"model_config": ..., "model": ...}."""
    from safetensors.torch import load_file
    manifest = json.loads((parity / "manifest.json").read_text())
    config = manifest[f"{name}_weights.safetensors"]["model_config"]
    path = tmp_path / f"{name}.pt"
    torch.save({"model_config": config, "model": load_file(str(parity / f"{name}_weights.safetensors"))}, path)
    return path


@pytest.mark.parametrize("name,layers", MOGE)
@pytest.mark.parametrize("case", ["small", "large"])
def test_moge_encoder(parity, load_fixture, tmp_path, name, layers, case):
    f, image = load_fixture(f"{name}_cases"), load_fixture("encoder_inputs")[f"{case}.image"]
    for source in (parity / f"{name}_weights.safetensors", _moge_pt(parity, name, tmp_path)):
        enc = load_semantic_encoder(source, num_heads=4)
        assert enc.kind == "moge2" and enc.intermediate_layers == layers
        with torch.no_grad():
            assert err(enc(image), f[f"{case}.semantics"]) < ENC_TOL
            h0, w0 = image.shape[-2] // 16, image.shape[-1] // 16
            ref = f[f"{case}.pos_embed_interp"]
            assert err(enc.backbone.interpolate_pos_encoding(h0, w0), ref) < resize_tol(ref)
            if f"{case}.backbone_input" in f:
                ref = f[f"{case}.backbone_input"]
                assert err(enc.backbone_input(image), ref) < resize_tol(ref)
            if case == "small":
                tokens = enc.backbone.tokens(enc.backbone_input(image), layers)
                for i, t in enumerate(tokens):
                    assert err(t[:, 1:], f[f"small.layer{i}_tokens"]) < ENC_TOL
                    assert err(t[:, 0], f[f"small.layer{i}_cls"]) < ENC_TOL


def test_moge_config_overrides_layer_guess(parity, tmp_path):
    """A model_config naming other blocks is honoured (here: [0, 2] instead of the evenly spaced [1, 3])."""
    from safetensors.torch import load_file
    sd = load_file(str(parity / "moge2_encoder_tiny_sel13_weights.safetensors"))
    path = tmp_path / "m.pt"
    torch.save({"model_config": {"encoder": {"intermediate_layers": [0, 2]}}, "model": sd}, path)
    assert load_semantic_encoder(path, num_heads=4).intermediate_layers == [0, 2]


# --- full-size models on the meta device ------------------------------------------------------
def _expand_blocks(keys: dict, depth: int) -> dict:
    out = {}
    for k, shape in keys.items():
        if ".blocks.0." in k:
            for i in range(depth):
                out[k.replace(".blocks.0.", f".blocks.{i}.")] = shape
        else:
            out[k] = shape
    return out


@pytest.mark.parametrize("entry,depth,kind", [
    ("ppd_pth_dit", 24, "dit"), ("depth_anything_v2_vitl_pth_backbone", 24, "da2"),
    ("moge2_pt_model_encoder", 24, "moge2")])
def test_real_checkpoint_shapes_build_on_meta(parity, entry, depth, kind):
    spec = json.loads((parity / "real_checkpoint_shapes.json").read_text())[entry]
    shapes = _expand_blocks(spec["keys"], depth)
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    if kind == "dit":                # ppd.pth and ppd_moge.pth share these shapes
        model = load_dit(sd, device="meta")
        c = model.config
        assert (c.hidden_size, c.depth, c.num_heads, c.patch_size, c.semantic_dim) == (1024, 24, 16, 8, 1024)
    else:
        if kind == "da2":
            sd["depth_head.scratch.output_conv2.2.bias"] = torch.empty(1, device="meta")
        else:
            sd["neck.0.weight"] = torch.empty(4, 4, device="meta")
        model = load_semantic_encoder(sd, device="meta")
        assert model.kind == kind and model.semantic_dim == 1024
        vit = model.pretrained if kind == "da2" else model.backbone
        assert (vit.config.num_heads, vit.config.depth) == (16, 24)
        if kind == "moge2":
            assert model.intermediate_layers == [5, 11, 17, 23]
    assert sum(p.numel() for p in model.parameters()) == spec["total_parameters"]
    assert all(p.device.type == "meta" for p in model.parameters())
