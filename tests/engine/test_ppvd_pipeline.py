"""VideoDepthPipeline behaviour on tiny random models (no fixtures needed): short videos, streaming, progress
and interruption, bad input, loaders and file detection, FLOP formula against torch's counter, processing sizes
(multiples of 16 from 32, keyframe pooling floors as the official)."""
from __future__ import annotations

import pytest
import torch

from comfyui_ppd import load_dit, load_semantic_encoder, runtime
from comfyui_ppd.checkpoints import CheckpointError
from comfyui_ppd.errors import InputError
from comfyui_ppd.families.ppvd import (
    VideoDepthPipeline,
    window_plan,
)
from comfyui_ppd.families.ppvd.flops import dit_step_work, pi3_work
from comfyui_ppd.families.ppvd.steps import load_video_pipeline
from tiny_ppvd import PROCESS_SIZE, tiny_pi3, tiny_video_dit, write_tiny_ppvd


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_tiny_ppvd(tmp_path_factory.mktemp("ppvd"))


@pytest.fixture(scope="module")
def pipe(files):
    return VideoDepthPipeline(load_dit(files["ppvd"]), load_semantic_encoder(files["pi3"]), process_size=PROCESS_SIZE)


def clip(n: int, h: int = 20, w: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 3, h, w), generator=torch.Generator().manual_seed(seed))


def noise(seed: int = 1) -> torch.Tensor:
    return torch.randn((16, 1, *PROCESS_SIZE), generator=torch.Generator().manual_seed(seed))


# --- loaders ---------------------------------------------------------------------------------------------
def test_loaders_read_the_release_layouts(files):
    dit, ref = load_dit(files["ppvd"]), tiny_video_dit()
    assert all(torch.equal(dit.state_dict()[k], v) for k, v in ref.state_dict().items())
    enc, ref = load_semantic_encoder(files["pi3"]), tiny_pi3()                 # the extra point head is ignored
    assert all(torch.equal(enc.state_dict()[k], v) for k, v in ref.state_dict().items())


def test_detection_by_keys(files):
    """The public loaders tell the video DiT and Pi3 from the keys (not the file names)."""
    from comfyui_ppd import load_dit, load_semantic_encoder
    from comfyui_ppd.reader import read_checkpoint
    from comfyui_ppd.registry import identify
    video, pi3 = read_checkpoint(files["ppvd"]).tensors, read_checkpoint(files["pi3"]).tensors
    assert [f.name for _, f in identify(video)] == ["ppvd"]
    assert [f.name for _, f in identify(pi3)] == ["pi3"]
    assert type(load_dit(files["ppvd"])).__name__ == "VideoDiT"
    assert load_semantic_encoder(files["pi3"]).kind == "pi3"


def test_wrong_files_name_what_they_are(files, models):
    """`models`: the image pack's tiny ppd.pth / depth_anything_v2_vitl.pth (tests/support/tiny_models.py)."""
    with pytest.raises(CheckpointError, match="Pi3 model"):
        load_dit(files["pi3"])
    with pytest.raises(CheckpointError, match="PPVD video DiT"):
        load_semantic_encoder(files["ppvd"])
    fp32 = runtime.precision("fp32", "cpu")                      # the video pipeline takes only video files
    with pytest.raises(CheckpointError, match="the PPD DiT"):
        load_video_pipeline(models["dit"], files["pi3"], fp32)
    with pytest.raises(CheckpointError, match="Depth Anything"):
        load_video_pipeline(files["ppvd"], models["da2"], fp32)


def test_missing_pos_embed_gets_the_formula(files):
    """Without the key the loader keeps the constructor's 32x32 table (as the official non-strict load);
    other grids use the same formula, so the output is unchanged."""
    from comfyui_ppd.families.ppvd.dit import sincos_2d
    sd = torch.load(files["ppvd"], weights_only=True)
    sd.pop("dit_video.pos_embed")
    dit, full = load_dit(sd), load_dit(files["ppvd"])
    assert torch.equal(dit.pos_embed, sincos_2d(16, 32, 32))
    x, sem = torch.rand(16, 4, *PROCESS_SIZE), torch.rand(16, 4, 32)
    with torch.no_grad():
        assert torch.equal(dit(x, sem, torch.tensor(1000)), full(x, sem, torch.tensor(1000)))


def test_truncated_dit_is_refused(files):
    sd = torch.load(files["ppvd"], weights_only=True)
    del sd["dit_video.blocks.3.mlp.fc2.bias"]
    with pytest.raises(CheckpointError, match="1 missing"):
        load_dit(sd)


# --- short and long videos -----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3])
def test_one_to_three_frames_are_one_padded_window(pipe, n):
    """The official code crashes here; we pad like 4-15 frames: equal to the 16-frame clip of copies."""
    frames = clip(n)
    depth = pipe(frames, steps=2, noise=noise())
    padded = frames[[min(i, n - 1) for i in range(16)]]
    assert depth.shape == (n, 1, 20, 28) and depth.dtype == torch.float32 and torch.isfinite(depth).all()
    assert torch.equal(depth, pipe(padded, steps=2, noise=noise())[:n])


def test_frames_are_streamed_one_window_at_a_time(pipe):
    seen = []
    hook = pipe.encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        result = pipe.run(clip(43, 8, 12), steps=1, noise=noise())
    finally:
        hook.remove()
    assert seen == [16] * 4 == [len(w) for w in window_plan(43)]
    assert result.depth.shape == (43, 1, 8, 12) and len(result.scale_shift) == 3


def test_list_of_frames_equals_tensor(pipe):
    frames = clip(5)
    assert torch.equal(pipe(list(frames), steps=1, noise=noise()), pipe(frames, steps=1, noise=noise()))


def test_generator_draws_the_shared_noise(pipe):
    frames = clip(4)
    got = pipe(frames, steps=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got, pipe(frames, steps=1, noise=noise(1)))


def test_progress_per_window_and_step_and_interrupt(pipe):
    calls = []
    pipe(clip(17), steps=2, noise=noise(), callback=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 4) for i in range(1, 5)]                # 2 windows x 2 evaluations

    class Stop(Exception):
        pass

    evaluations = []
    hook = pipe.dit.register_forward_hook(lambda *a: evaluations.append(1))

    def cancel(done: int, total: int) -> None:
        if done == 3:
            raise Stop
    try:
        with pytest.raises(Stop):
            pipe(clip(17), steps=2, noise=noise(), callback=cancel)
    finally:
        hook.remove()
    assert len(evaluations) == 3                                  # stopped between steps


# --- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames,match", [
    (torch.rand(0, 3, 8, 8), "no frames"),
    ([], "no frames"),
    (torch.rand(4, 4, 8, 8), "RGB"),
    (torch.rand(4, 8, 8, 3), "RGB"),
    ([torch.rand(3, 8, 8), torch.rand(3, 8, 10)], "one size"),
    ([torch.rand(3, 8, 8), torch.rand(1, 8, 8)], "RGB"),
    (torch.full((2, 3, 8, 8), float("nan")), "NaN"),
    (torch.rand(2, 3, 8, 8) * 255, r"\[0,1\]"),
    ((torch.rand(2, 3, 8, 8) * 255).to(torch.uint8), "float pixels"),
    ("clip.mp4", "frame tensor"),
])
def test_bad_frames(pipe, frames, match):
    with pytest.raises(InputError, match=match):
        pipe(frames, steps=1, noise=noise())


def test_bad_noise_steps_and_sizes(pipe, files):
    with pytest.raises(InputError, match="noise must have shape"):
        pipe(clip(2), steps=1, noise=torch.zeros(1, 1, *PROCESS_SIZE))
    with pytest.raises(InputError, match="steps"):
        pipe(clip(2), steps=0)
    with pytest.raises(InputError, match="multiples of 16, at least 32"):
        VideoDepthPipeline(pipe.dit, pipe.encoder, process_size=(40, 64))
    with pytest.raises(InputError, match="multiples of 16, at least 32"):
        VideoDepthPipeline(pipe.dit, pipe.encoder, process_size=(16, 64))
    from comfyui_ppd import load_semantic_encoder
    from tiny_models import write_tiny_models
    with pytest.raises(InputError, match="pair ppvd.pth with pi3.safetensors"):
        VideoDepthPipeline(pipe.dit, load_semantic_encoder(write_tiny_models(files["pi3"].parent / "img")["da2"]))


# --- FLOP formula --------------------------------------------------------------------------------------
def _sdpa_flop(q: tuple, k: tuple, v: tuple, *args, **kwargs) -> int:
    """Q K^T and P V: 4 * batch * heads * queries * keys * head_dim (the formula torch uses for its GPU kernels)."""
    b, h, s, d = q
    return 4 * b * h * s * k[-2] * d


def test_flop_formula_matches_a_count_on_tiny_models():
    """torch's FLOP counter on real tensors at a non-square, untrained size; the CPU attention kernel has no
    FLOP formula registered in torch, so it gets the standard one here."""
    from torch.utils.flop_counter import FlopCounterMode
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flop}
    dit, enc = tiny_video_dit(), tiny_pi3()
    h, w = 64, 96
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        dit(torch.rand(16, 4, h, w), torch.rand(16, 24, 32), torch.tensor(500))
    assert counter.get_total_flops() == dit_step_work(dit.config, h, w).flop
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        enc(torch.rand(16, 3, h, w))
    assert counter.get_total_flops() == pi3_work(enc.config, h, w).flop


def test_google_drive_page_saved_as_ppvd_is_named(tmp_path):
    """ppvd.pth is on Google Drive only; its "can't scan for viruses" page saved in its place is recognised
    by comfyui_ppd.filecheck (from the firsthour branch) with the catalogue's instructions."""
    pytest.importorskip("comfyui_ppd.filecheck", reason="comfyui_ppd.filecheck is not merged on this branch yet")
    page = tmp_path / "ppvd.pth"
    page.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
                    "Google Drive can't scan this file for viruses.</body></html>")
    with pytest.raises(CheckpointError, match="Google Drive") as info:
        load_dit(page)
    assert "ppvd.pth is only on Google Drive" in str(info.value)


# --- processing sizes as the official DiT_Video: sides multiples of 16 from 32 ----------------------------
def test_keyframe_pooling_drops_the_remainder_like_the_official():
    """48x80 -> fine grid 6x10 -> 1x2 pooled cells per keyframe: the mean of fine rows 0..3 and columns 0..3,
    4..7 (rows 4, 5 and columns 8, 9 are left out), computed here without avg_pool2d."""
    dit = tiny_video_dit()
    d = dit.config.hidden_size
    tokens = torch.randn(16, 6 * 10, d, generator=torch.Generator().manual_seed(0))
    got = dit.keyframe_tokens(tokens, 6, 10)
    grid = tokens[:3].reshape(3, 6, 10, d)
    want = torch.stack([grid[k, 0:4, c:c + 4].reshape(-1, d).mean(0) for k in range(3) for c in (0, 4)])
    assert got.shape == (3 * 1 * 2, d)
    torch.testing.assert_close(got, want, rtol=0, atol=4 * torch.finfo(torch.float32).eps)


@pytest.mark.parametrize("h, w", [(48, 80), (32, 48), (80, 32)])
def test_dit_takes_multiples_of_16_and_the_flop_formula_counts_them(h, w):
    from torch.utils.flop_counter import FlopCounterMode
    dit = tiny_video_dit()
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flop}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        out = dit(torch.rand(16, 4, h, w), torch.rand(16, (h // 16) * (w // 16), 32), torch.tensor(500))
    assert out.shape == (16, 1, h, w) and torch.isfinite(out).all()
    assert counter.get_total_flops() == dit_step_work(dit.config, h, w).flop


@pytest.mark.parametrize("h, w", [(16, 64), (40, 64), (48, 72)])
def test_other_sizes_are_refused(h, w):
    dit = tiny_video_dit()
    with pytest.raises(InputError, match="multiples of 16"):
        VideoDepthPipeline(dit, tiny_pi3(), process_size=(h, w))
    with pytest.raises(InputError, match="multiples of 16 and at least 32"):
        dit(torch.rand(16, 4, h, w), torch.rand(16, 4, 32), torch.tensor(500))


def test_pipeline_runs_at_48x80():
    pipe = VideoDepthPipeline(tiny_video_dit(), tiny_pi3(), process_size=(48, 80))
    noise = torch.randn(16, 1, 48, 80, generator=torch.Generator().manual_seed(1))
    depth = pipe(torch.rand(20, 3, 30, 50, generator=torch.Generator().manual_seed(2)), steps=1, noise=noise)
    assert depth.shape == (20, 1, 30, 50) and torch.isfinite(depth).all()
