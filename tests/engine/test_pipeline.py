"""PPDPipeline behaviour on tiny random models: shapes, seeds, batches, ensembles, bad input."""
from __future__ import annotations

import pytest
import torch

from comfyui_ppd import InputError, PPDPipeline, load_dit, load_semantic_encoder
from comfyui_ppd.sampling import make_noise
from tiny_models import tiny_da2_state_dict, tiny_dit_state_dict, tiny_moge_checkpoint

AREA = 64 * 96


@pytest.fixture(scope="module")
def pipe():
    return PPDPipeline(load_dit(tiny_dit_state_dict()), load_semantic_encoder(tiny_da2_state_dict()), area=AREA)


def test_call_returns_depth_at_processing_resolution(pipe):
    depth = pipe(torch.rand(2, 3, 120, 160), steps=2, generator=torch.Generator().manual_seed(0))
    assert depth.shape == (2, 1, 64, 96) and torch.isfinite(depth).all()


def test_resize_false_keeps_size_and_requires_multiples_of_16(pipe):
    assert pipe(torch.rand(1, 3, 32, 48), steps=1, resize=False).shape == (1, 1, 32, 48)
    with pytest.raises(InputError, match="multiples of 16"):
        pipe(torch.rand(1, 3, 33, 48), steps=1, resize=False)


def test_explicit_noise_is_the_initial_latent(pipe):
    """Same noise -> same depth; the final depth equals one Euler chain from that noise (steps=1: x0 = x - v)."""
    image = torch.rand(1, 3, 32, 48)
    noise = torch.randn(1, 1, 32, 48)
    a = pipe(image, steps=1, noise=noise, resize=False)
    b = pipe(image, steps=1, noise=noise, resize=False)
    assert torch.equal(a, b)
    v = pipe.dit(torch.cat([noise, image - 0.5], 1), pipe.encoder(image), torch.tensor(1000))
    assert torch.allclose(a, noise - v + 0.5, atol=1e-5)


def test_seed_noise_is_independent_of_batch_and_chunking(pipe):
    prepared = pipe.prepare(torch.rand(3, 3, 64, 96))
    whole = pipe.predict(prepared, steps=2, seed=7, batch_size=3).depth
    chunked = pipe.predict(prepared, steps=2, seed=7, batch_size=1).depth
    assert torch.allclose(whole, chunked, atol=1e-5)
    single = pipe.predict(type(prepared)(prepared.image[1:2], prepared.semantics[1:2], (64, 96)), steps=2, seed=7)
    assert torch.allclose(single.depth, whole[1:2], atol=1e-5)
    other = pipe.predict(prepared, steps=2, seed=8).depth
    assert not torch.allclose(other, whole)


def test_ensemble_merges_members_and_reports_spread(pipe):
    prepared = pipe.prepare(torch.rand(2, 3, 64, 96))
    result = pipe.predict(prepared, steps=2, seed=3, ensemble_size=3)
    assert result.depth.shape == result.spread.shape == (2, 1, 64, 96)
    assert (result.spread >= 0).all() and result.spread.max() > 0
    first = pipe.predict(prepared, steps=2, seed=3).depth
    assert not torch.allclose(result.depth, first)         # members 3, 4, 5 were merged, not just seed 3


def test_merge_ensemble_removes_affine_differences():
    """Members that differ only by scale and shift (PPD's ambiguity) merge with zero spread."""
    from comfyui_ppd.families.ppd.pipeline import merge_ensemble
    base = torch.rand(2, 1, 1, 8, 8)
    members = torch.cat([base * a + b for a, b in [(1.0, 0.0), (0.5, 0.2), (2.0, -0.3)]], dim=1)
    noisy = members.clone()
    noisy[:, 1] += 0.1 * torch.randn_like(noisy[:, 1])
    depth, spread = merge_ensemble(members)
    assert spread.max() < 1e-5
    flat_d, flat_b = depth.flatten(1), base.flatten(1)
    corr = torch.stack([torch.corrcoef(torch.stack([d, b]))[0, 1] for d, b in zip(flat_d, flat_b)])
    assert (corr > 0.9999).all()
    assert merge_ensemble(noisy)[1].mean() > 0.01


def test_progress_callback_counts_every_evaluation(pipe):
    seen = []
    prepared = pipe.prepare(torch.rand(2, 3, 64, 96))
    pipe.predict(prepared, steps=4, ensemble_size=2, batch_size=3, callback=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (16, 16) and all(b[0] > a[0] for a, b in zip(seen, seen[1:]))


def test_interrupt_from_callback_stops_sampling(pipe):
    class Stop(Exception):
        pass

    calls = []

    def cb(done, total):
        calls.append(done)
        if done == 1:
            raise Stop

    with pytest.raises(Stop):
        pipe.predict(pipe.prepare(torch.rand(1, 3, 64, 96)), steps=4, callback=cb)
    assert calls == [1]


@pytest.mark.parametrize("image,match", [
    (torch.rand(1, 1, 64, 64), "RGB"), (torch.rand(1, 2, 64, 64), "RGB"), (torch.rand(1, 4, 64, 64), "alpha"),
    (torch.rand(1, 3, 10, 64), "at least 16"), (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
    (torch.rand(1, 3, 32, 32) * 255, "divide"), (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "float"),
])
def test_bad_images(pipe, image, match):
    with pytest.raises(InputError, match=match):
        pipe(image, steps=1)


@pytest.mark.parametrize("steps", [0, -1, 2.5])
def test_bad_steps(pipe, steps):
    with pytest.raises(InputError, match="steps"):
        pipe(torch.rand(1, 3, 32, 32), steps=steps)


def test_noise_of_wrong_shape(pipe):
    with pytest.raises(InputError, match="noise must have shape"):
        pipe(torch.rand(1, 3, 32, 48), steps=1, noise=torch.randn(1, 1, 16, 16), resize=False)


def test_semantic_width_mismatch_is_caught():
    dit = load_dit(tiny_dit_state_dict(semantic_dim=32))
    with pytest.raises(InputError, match="semantic tokens"):
        PPDPipeline(dit, load_semantic_encoder(tiny_da2_state_dict()))


def test_semantics_kind_mismatch_from_metadata_is_an_error(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "custom.safetensors"
    save_file(tiny_dit_state_dict(), str(path), metadata={"ppd.semantics": "moge2"})
    with pytest.raises(InputError, match="trained with moge2"):
        PPDPipeline(load_dit(path), load_semantic_encoder(tiny_da2_state_dict()))
    moge = load_semantic_encoder(tiny_moge_checkpoint())
    PPDPipeline(load_dit(path), moge)                       # the right pair is accepted


def test_semantics_kind_guessed_from_name_warns(tmp_path):
    path = tmp_path / "ppd_moge.pth"
    torch.save(tiny_dit_state_dict(), path)
    with pytest.warns(UserWarning, match="file name"):
        PPDPipeline(load_dit(path), load_semantic_encoder(tiny_da2_state_dict()))


def test_make_noise_same_for_every_image():
    n = make_noise(3, 8, 8, seed=5)
    assert torch.equal(n[0], n[2]) and torch.equal(n[:1], make_noise(1, 8, 8, seed=5))


def test_half_precision_weights_run(pipe):
    """bf16 weights (for memory) give finite depth close to fp32 (CPU has no autocast by default)."""
    half = PPDPipeline(load_dit(tiny_dit_state_dict(), dtype=torch.bfloat16),
                       load_semantic_encoder(tiny_da2_state_dict(), dtype=torch.bfloat16), area=AREA)
    image, noise = torch.rand(1, 3, 32, 48), torch.randn(1, 1, 32, 48)
    a = pipe(image, steps=2, noise=noise, resize=False)
    b = half(image, steps=2, noise=noise, resize=False)
    assert torch.isfinite(b).all() and (a - b).abs().max() < 0.1


def test_compile_flag_compiles_the_dit_blocks(monkeypatch):
    import comfyui_ppd.runtime as runtime
    calls = []
    monkeypatch.setattr(runtime, "compile_blocks", lambda dit, mode=None: calls.append(mode))
    dit, enc = load_dit(tiny_dit_state_dict()), load_semantic_encoder(tiny_da2_state_dict())
    PPDPipeline(dit, enc)
    PPDPipeline(dit, enc, compile=True)
    PPDPipeline(dit, enc, compile="max-autotune")
    assert calls == [None, "max-autotune"]


def test_activation_estimate_follows_the_compute_dtype(pipe):
    from comfyui_ppd.families.ppd.pipeline import activation_bytes
    fp32 = activation_bytes(pipe.dit, 768, 1024)
    assert fp32 == 12 * (96 * 128) * pipe.dit.config.hidden_size * 4
    assert activation_bytes(pipe.dit, 768, 1024, torch.bfloat16) == fp32 * 3 // 4
    assert pipe.activation_bytes(768, 1024) == fp32                # CPU: no autocast
