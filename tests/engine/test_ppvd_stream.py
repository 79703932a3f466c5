"""Streaming PPVD (families/ppvd/stream.py): the same depth as the whole-clip pipeline, bit for bit, holding at
most one window of frames; a stream resumed from any window's carry equals the uninterrupted one."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from comfyui_ppd import load_dit, load_semantic_encoder
from comfyui_ppd.families.ppvd import VideoDepthPipeline, window_plan
from comfyui_ppd.families.ppvd.stream import Carry, stream_depth, windows_for
from comfyui_ppd.io.video import VideoFrames
from tiny_ppvd import PROCESS_SIZE, write_tiny_ppvd


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    files = write_tiny_ppvd(tmp_path_factory.mktemp("ppvd"))
    return VideoDepthPipeline(load_dit(files["ppvd"]), load_semantic_encoder(files["pi3"]), process_size=PROCESS_SIZE)


def clip(n: int, h: int = 20, w: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def noise(seed: int = 1) -> torch.Tensor:
    return torch.randn((16, 1, *PROCESS_SIZE), generator=torch.Generator().manual_seed(seed))


def streamed(pipe, rgb: np.ndarray, steps: int = 1) -> torch.Tensor:
    return torch.cat([w.depth for w in stream_depth(pipe, iter(rgb), noise(), steps)])


@pytest.mark.parametrize("n", [1, 3, 15, 16, 17, 29, 30, 43])
def test_stream_equals_whole_clip_pipeline_bit_for_bit(pipe, n):
    """Every window plan shape: one padded window, exact fits, one frame more, several windows."""
    rgb = clip(n)
    whole = pipe.run(VideoFrames(torch.from_numpy(rgb), 24.0), 1, noise=noise())
    out = streamed(pipe, rgb)
    assert out.shape == (n, 20, 28) and out.dtype == torch.float32
    assert torch.equal(out, whole.depth[:, 0])
    assert windows_for(n) == len(window_plan(n)) == len(whole.windows)


def test_resume_from_every_window_equals_uninterrupted(pipe):
    rgb = clip(43)
    full = list(stream_depth(pipe, iter(rgb), noise(), 1))
    for k in range(1, len(full)):
        carry = full[k - 1].carry
        assert carry.window == k and carry.written == full[k].first and carry.next_frame == 13 * k + 3
        rest = list(stream_depth(pipe, iter(rgb[carry.next_frame:]), noise(), 1, carry=carry))
        assert [w.index for w in rest] == list(range(k, len(full)))
        for a, b in zip(rest, full[k:]):
            assert a.first == b.first and torch.equal(a.depth, b.depth)
            assert a.carry.scale_shift == b.carry.scale_shift


def test_never_holds_more_than_one_window_of_frames(pipe):
    """Count the decoded frames still alive while the model runs: never more than one window (16), whatever
    the clip's length (the keyframes are copies, not the decoded frames)."""
    live: list[weakref.ref] = []
    peak = []

    def frames(n):
        for i in range(n):
            f = clip(1, seed=i)[0]
            live.append(weakref.ref(f))
            yield f

    def count(done, total):
        gc.collect()
        peak.append(sum(r() is not None for r in live))

    for _ in stream_depth(pipe, frames(100), noise(), 1, callback=count, total_windows=windows_for(100)):
        pass
    assert len(peak) == windows_for(100) * 1 and max(peak) <= 16 and len(live) == 100


def test_progress_counts_windows_from_the_first(pipe):
    seen = []
    list(stream_depth(pipe, iter(clip(29)), noise(), 2, callback=lambda d, t: seen.append((d, t)),
                      total_windows=2))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_resume_without_keyframes_is_refused(pipe):
    with pytest.raises(ValueError, match="keyframes"):
        list(stream_depth(pipe, iter(clip(5)), noise(), 1, carry=Carry(window=1, written=16)))


@pytest.mark.parametrize("steps", [2, 4])
def test_stream_matches_the_official_pipeline_fixture(ppvd_fixtures, steps):
    """The official infer_video's depth (fixtures/ppvd pipeline_tiny: 30 frames of 48x80 at 64x64, 3 windows),
    streamed from the fixture's uint8 frames, at test_ppvd_parity's tolerance."""
    from plumbing import tensor_loader
    f = tensor_loader(ppvd_fixtures)("pipeline_tiny")

    def rel_err(a, b):          # tests/parity/test_ppvd_parity.py's measure and REL_TOL (the float32 normal equations)
        return (a.double() - b.double()).abs().max().item() / b.double().abs().max().item()
    pipe = VideoDepthPipeline(load_dit(ppvd_fixtures / "dit_video_tiny_weights.safetensors"),
                              load_semantic_encoder(ppvd_fixtures / "pi3_tiny_weights.safetensors", num_heads=4),
                              process_size=(64, 64))
    windows = list(stream_depth(pipe, iter(f["frames_u8"].numpy()), f["noise"], steps))
    depth = torch.cat([w.depth for w in windows])
    assert depth.shape == (30, 48, 80) and rel_err(depth, f[f"s{steps}.depth"]) < 1e-5
    assert rel_err(torch.tensor(windows[-1].carry.scale_shift), f[f"s{steps}.scale_shift"]) < 1e-5
