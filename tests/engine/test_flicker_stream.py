"""The flicker metric over frames given one at a time (flicker.measure_flicker_frames, what `predict clip.mp4
--flicker` runs over the raw depth on disk): the whole-clip numbers exactly, with a bounded number of frames held."""
from __future__ import annotations

import math
import weakref

import pytest
import torch

from comfyui_ppd.errors import InputError
from comfyui_ppd.flicker import CHUNK, measure_flicker, measure_flicker_frames
from scenes import jitter_frames, pan_clip, ppd_video

FIELDS = ("pair_log_scale", "pair_shift", "change", "residual", "static_fraction", "frame_log_scale", "frame_shift")


@pytest.fixture(scope="module")
def video():
    """A panning clip over 2 chunks of CHUNK pairs and a partial third, jittered, with non-finite pixels."""
    frames = 2 * CHUNK + 5
    v = jitter_frames(ppd_video(pan_clip(frames, 24, 32)[1]), 0.03, 0.02)[0].contiguous()
    v[3, :4, :4] = math.nan
    v[CHUNK, -2:] = math.inf                          # the frame two chunks share
    return v                                          # (N, H, W)


def test_frames_one_at_a_time_give_the_whole_clip_numbers(video):
    whole, streamed = measure_flicker(video), measure_flicker_frames(iter(video))
    for name in FIELDS:
        a, b = getattr(whole, name), getattr(streamed, name)
        assert a.shape == b.shape and torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()])
    assert streamed.depth_range == whole.depth_range and streamed.summary == whole.summary
    assert streamed.static_fraction[3] < 1 and len(streamed.frame_log_scale) == len(video)
    two = measure_flicker_frames(iter(video[:2]))     # a single pair, no full chunk
    assert torch.equal(two.pair_log_scale, measure_flicker(video[:2]).pair_log_scale)


def test_reader_holds_a_bounded_number_of_frames(video):
    """Every frame read is tracked; when the next one is asked for, at most CHUNK + 2 earlier ones are alive."""
    alive: list[weakref.ref] = []
    most = 0

    def frames():
        nonlocal most
        for t in range(4 * CHUNK):
            most = max(most, sum(r() is not None for r in alive))
            frame = video[t % len(video)].clone()                 # a fresh tensor, as read from disk
            alive.append(weakref.ref(frame))
            yield frame
            del frame

    report = measure_flicker_frames(frames())
    assert len(report.change) == 4 * CHUNK - 1
    assert 2 <= most <= CHUNK + 2, most


def test_bad_frames_are_clear_errors(video):
    with pytest.raises(InputError, match="at least 2 frames"):
        measure_flicker_frames(iter(video[:1]))
    with pytest.raises(InputError, match="frame 1 is"):
        measure_flicker_frames(iter([video[0], video[1, :-1]]))
    with pytest.raises(InputError, match=r"frame 0: expected a float depth frame \(H,W\)"):
        measure_flicker_frames(iter([video[0].int(), video[1].int()]))
