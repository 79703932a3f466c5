"""io/video.py VideoSource on containers PyAV cannot easily write: a size change mid-stream, a decoder error
mid-way, a variable frame rate. A stand-in for the `av` module gives the frames (the decoding logic is ours)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from comfyui_ppd.errors import InputError
from comfyui_ppd.io import video


class FFmpegError(Exception):
    pass


def fake_av(sizes, fail_at=None, rate=12.0, base=12.0):
    class Frame:
        def __init__(self, i, h, w):
            self.i, self.height, self.width = i, h, w

        def to_ndarray(self, format):
            return np.full((self.height, self.width, 3), self.i, np.uint8)

    stream = SimpleNamespace(average_rate=rate, guessed_rate=rate, base_rate=base, frames=len(sizes),
                             codec_context=SimpleNamespace(height=sizes[0][0], width=sizes[0][1]))

    class Container:
        streams = SimpleNamespace(video=[stream], __iter__=None)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def decode(self, s):
            for i, (h, w) in enumerate(sizes):
                if i == fail_at:
                    raise FFmpegError("Invalid data found when processing input")
                yield Frame(i, h, w)

    return SimpleNamespace(open=lambda path: Container(), FFmpegError=FFmpegError)


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"stand-in")
    return path


def test_size_change_midstream_names_the_frame(clip, monkeypatch):
    monkeypatch.setattr(video, "_av", lambda: fake_av([(24, 36)] * 3 + [(32, 48)] * 2))
    got = []
    with pytest.raises(InputError, match=r"frame 3 of .*clip.mp4 is 48x32 but the frames before it are 36x24"):
        for f in video.VideoSource(clip).frames():
            got.append(int(f[0, 0, 0]))
    assert got == [0, 1, 2]                                   # every frame before the change was given


def test_decoder_failing_midway_says_where(clip, monkeypatch):
    monkeypatch.setattr(video, "_av", lambda: fake_av([(24, 36)] * 10, fail_at=7))
    got = []
    with pytest.raises(video.DecodeError, match="stopped at frame 7") as e:
        for f in video.VideoSource(clip).frames(skip=2):
            got.append(int(f[0, 0, 0]))
    assert e.value.frame == 7 and got == [2, 3, 4, 5, 6]


def test_decoder_failing_at_once_is_undecodable(clip, monkeypatch):
    monkeypatch.setattr(video, "_av", lambda: fake_av([(24, 36)] * 3, fail_at=0))
    with pytest.raises(InputError, match="could not decode the video") as e:
        list(video.VideoSource(clip).frames())
    assert not isinstance(e.value, video.DecodeError)


def test_variable_frame_rate_is_flagged(clip, monkeypatch):
    monkeypatch.setattr(video, "_av", lambda: fake_av([(24, 36)] * 3, rate=27.3, base=30.0))
    source = video.VideoSource(clip)
    assert source.variable_rate and source.fps == 27.3
    monkeypatch.setattr(video, "_av", lambda: fake_av([(24, 36)] * 3))
    assert not video.VideoSource(clip).variable_rate
