"""A video file streamed to disk (families/ppvd/clip.py): the files equal the whole-clip pipeline's, a run
killed at any window (or in the finishing pass) resumes to the same files, and bad input fails clearly
keeping what was done. Faults are injected here (progress callbacks, monkeypatched writers), not in the code."""
from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_ppd import imaging, load_dit, load_semantic_encoder
from comfyui_ppd.errors import InputError
from comfyui_ppd.families.ppvd import VideoDepthPipeline
from comfyui_ppd.families.ppvd import clip as video_clip
from comfyui_ppd.families.ppvd.steps import predict_video
from comfyui_ppd.io.video import DecodeError, VideoSource, read_video
from tiny_ppvd import PROCESS_SIZE, write_tiny_ppvd

av = pytest.importorskip("av", reason="video decoding needs PyAV")


class Killed(Exception):
    """The injected fault: the run stops here as if the process were killed."""


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    files = write_tiny_ppvd(tmp_path_factory.mktemp("ppvd"))
    return VideoDepthPipeline(load_dit(files["ppvd"]), load_semantic_encoder(files["pi3"]), process_size=PROCESS_SIZE)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from scenes import write_example_clip
    path = tmp_path_factory.mktemp("clip") / "pan.mp4"
    write_example_clip(str(path), frames=33, height=24, width=36)        # 3 windows, the last one padded
    return path


@pytest.fixture(scope="module")
def reference(pipe, clip, tmp_path_factory):
    """An uninterrupted streamed run."""
    out = tmp_path_factory.mktemp("ref")
    video_clip.predict_video_file(pipe, clip, out, steps=1, flicker=True)
    return out


def files_of(out, stem="pan"):
    pngs = sorted((out / f"{stem}_depth16").iterdir())
    raw = np.load(out / f"{stem}_depth.npz")
    with av.open(str(out / f"{stem}_depth_color.mp4")) as c:
        preview = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return ([p.name for p in pngs], [np.asarray(Image.open(p)) for p in pngs], raw["depth"], float(raw["fps"]),
            preview, (out / f"{stem}_flicker.txt").read_text() if (out / f"{stem}_flicker.txt").exists() else None)


def same_files(a, b):
    names_a, png_a, depth_a, fps_a, prev_a, flick_a = files_of(a)
    names_b, png_b, depth_b, fps_b, prev_b, flick_b = files_of(b)
    assert names_a == names_b and fps_a == fps_b and flick_a == flick_b
    assert all(np.array_equal(x, y) for x, y in zip(png_a, png_b, strict=True))
    assert np.array_equal(depth_a, depth_b)
    assert len(prev_a) == len(prev_b) and all(np.array_equal(x, y) for x, y in zip(prev_a, prev_b))


def test_files_equal_the_whole_clip_pipeline(pipe, clip, reference):
    """Depth bit-identical to VideoDepthPipeline.run on the decoded clip; PNG16 = whole-clip normalisation."""
    frames = read_video(clip)
    depth = predict_video(pipe, frames, steps=1, seed=0).depth                  # (N,1,H,W) whole clip in memory
    names, pngs, raw, fps, preview, _ = files_of(reference)
    assert raw.dtype == np.float32 and np.array_equal(raw, depth[:, 0].numpy()) and fps == 12
    grey = imaging.normalize_depth(depth, per_image=False)
    want = [np.round((1 - g[0].numpy()) * 65535).astype(np.uint16) for g in grey]
    assert names == [f"pan_{i:05d}.png" for i in range(33)]
    assert all(np.array_equal(p.astype(np.uint16), w) for p, w in zip(pngs, want, strict=True))
    assert len(preview) == 33
    assert not list(reference.glob("*.partial.f32")) and not list(reference.glob("*.resume.safetensors"))


@pytest.mark.parametrize("kill_at_window", [0, 1, 2])
def test_killed_run_resumes_to_the_same_files(pipe, clip, reference, tmp_path, kill_at_window):
    out = tmp_path / "out"
    calls = []

    def kill(done, total):                      # one DiT evaluation per window (steps=1)
        calls.append(done)
        if done == kill_at_window + 1:
            raise Killed

    with pytest.raises(Killed):
        video_clip.predict_video_file(pipe, clip, out, steps=1, flicker=True, progress=kill)
    state = video_clip.working_paths(out, "pan")["state"]
    assert state.exists() == (kill_at_window > 0)                   # saved at each finished window
    assert not (out / "pan_depth.npz").exists() and not (out / "pan_depth_color.mp4").exists()
    resumed = []
    video_clip.predict_video_file(pipe, clip, out, steps=1, flicker=True, progress=lambda d, t: resumed.append(d))
    assert resumed == list(range(kill_at_window + 1, 4))           # only the windows not done, counted as before
    same_files(out, reference)
    assert not state.exists() and not video_clip.working_paths(out, "pan")["raw"].exists()


def test_killed_in_the_finishing_pass_resumes_without_the_model(pipe, clip, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real, count = video_clip.images.write_png16, []

    def dies_at_frame_20(*args, **kwargs):
        count.append(1)
        if len(count) == 20:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(video_clip.images, "write_png16", dies_at_frame_20)
    with pytest.raises(Killed):
        video_clip.predict_video_file(pipe, clip, out, steps=1, flicker=True)
    monkeypatch.setattr(video_clip.images, "write_png16", real)
    assert not list(out.glob(".*.tmp"))                             # the preview's partial file is gone
    model_calls = []
    video_clip.predict_video_file(pipe, clip, out, steps=1, flicker=True, progress=lambda d, t: model_calls.append(d))
    assert model_calls == []
    same_files(out, reference)


def test_other_settings_do_not_resume(pipe, clip, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Killed):
        video_clip.predict_video_file(pipe, clip, out, steps=1, progress=lambda d, t: (_ for _ in ()).throw(Killed)
                                      if d == 2 else None)
    with pytest.raises(InputError, match="other settings"):
        video_clip.predict_video_file(pipe, clip, out, steps=1, seed=5)
    video_clip.predict_video_file(pipe, clip, out, steps=1, seed=5, overwrite=True)        # starts again
    assert not video_clip.working_paths(out, "pan")["state"].exists()


def test_disk_full_keeps_the_finished_windows_and_resumes(pipe, clip, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real, syncs = video_clip.os.fsync, []

    def full(fd):
        syncs.append(fd)
        if len(syncs) == 3:                # window 0: raw depth, state; window 1: its raw depth
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(video_clip.os, "fsync", full)
    with pytest.raises(InputError, match="No space left on device.*resumes from the last finished window"):
        video_clip.predict_video_file(pipe, clip, out, steps=1, flicker=True)
    monkeypatch.setattr(video_clip.os, "fsync", real)
    assert not (out / "pan_depth.npz").exists() and not (out / "pan_depth16").exists()
    video_clip.predict_video_file(pipe, clip, out, steps=1, flicker=True)
    same_files(out, reference)


def test_decoder_failing_midway_names_the_frame_and_keeps_the_windows(pipe, clip, tmp_path, monkeypatch):
    real = VideoSource.frames

    def breaks_at_30(self, skip=0):
        for i, f in enumerate(real(self, skip), start=skip):
            if i == 30:
                raise DecodeError(f"decoding {self.path} stopped at frame 30 (Invalid data)", 30)
            yield f

    monkeypatch.setattr(VideoSource, "frames", breaks_at_30)
    out = tmp_path / "out"
    with pytest.raises(DecodeError, match="stopped at frame 30.*frames 0..28 is kept") as e:
        video_clip.predict_video_file(pipe, clip, out, steps=1)
    assert e.value.frame == 30
    raw = video_clip.working_paths(out, "pan")["raw"]
    assert raw.stat().st_size == 29 * 24 * 36 * 4                  # windows 0 and 1 (frames 0..28) kept
    assert not (out / "pan_depth.npz").exists()


def test_one_frame_clip(pipe, tmp_path):
    from scenes import write_example_clip
    path = tmp_path / "one.mp4"
    write_example_clip(str(path), frames=1, height=24, width=36)
    done = video_clip.predict_video_file(pipe, path, tmp_path / "out", steps=1)
    assert done["frames"] == 1 and np.load(tmp_path / "out" / "one_depth.npz")["depth"].shape == (1, 24, 36)


def test_audio_only_file_is_refused(pipe, tmp_path):
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for _ in range(4):
            c.mux(stream.encode(frame))
        c.mux(stream.encode())
    with pytest.raises(InputError, match="holds no video stream.*audio"):
        video_clip.predict_video_file(pipe, path, tmp_path / "out", steps=1)
    assert not (tmp_path / "out").exists()


def test_source_holds_one_frame(clip):
    """The decoder yields frames one by one at the stream's size; skip starts later."""
    source = VideoSource(clip)
    assert source.size == (24, 36) and source.fps == 12 and source.frame_count == 33
    frames = source.frames(30)
    first = next(frames)
    assert first.shape == (24, 36, 3) and first.dtype == np.uint8
    assert np.array_equal(first, read_video(clip).rgb[30].numpy()) and len(list(frames)) == 2
    torch.testing.assert_close(read_video(clip)[30], torch.from_numpy(first).permute(2, 0, 1).float() / 255)


def test_controlnet_preview_is_grey_near_white(pipe, clip, reference, tmp_path):
    """The node's style: the preview is grey (near = white), named _depth_grey.mp4; the other files are the same."""
    out = tmp_path / "out"
    done = video_clip.predict_video_file(pipe, clip, out, steps=1, preview="controlnet")
    assert done["paths"]["preview"] == out / "pan_depth_grey.mp4" and not (out / "pan_depth_color.mp4").exists()
    with av.open(str(out / "pan_depth_grey.mp4")) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)
    assert frames.shape == (33, 24, 36, 3) and np.abs(frames - frames[..., :1]).max() <= 2      # R = G = B (+ codec)
    png = np.stack([np.asarray(Image.open(p)) for p in sorted((out / "pan_depth16").iterdir())]).astype(float)
    assert np.abs(frames[..., 0] - png / 257).mean() < 4                  # the PNG16's grey, 8-bit through H.264
    assert np.array_equal(np.load(out / "pan_depth.npz")["depth"], np.load(reference / "pan_depth.npz")["depth"])
