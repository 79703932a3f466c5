"""`python -m comfyui_ppd predict clip.mp4`: the video model on tiny random checkpoints (needs PyAV)."""
from __future__ import annotations

import builtins

import numpy as np
import pytest
from PIL import Image

from comfyui_ppd import cli
from tiny_ppvd import write_tiny_ppvd

av = pytest.importorskip("av", reason="video decoding needs PyAV")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from scenes import write_example_clip
    path = tmp_path_factory.mktemp("clip") / "pan.mp4"
    write_example_clip(str(path), frames=5, height=32, width=48)
    return path


def predict(ppvd_models, *args) -> int:
    return cli.main(["predict", *map(str, args), "--models-dir", str(ppvd_models), "--process-size", "32x32",
                     "--steps", "1", "--no-progress"])


def test_video_file_writes_png16_sequence_preview_and_npz(ppvd_models, clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict(ppvd_models, clip, "--out", out, "--flicker") == 0
    raw = np.load(out / "pan_depth.npz")
    depth = raw["depth"]
    assert depth.shape == (5, 32, 48) and depth.dtype == np.float32 and float(raw["fps"]) == 12
    pngs = sorted((out / "pan_depth16").iterdir())
    assert [p.name for p in pngs] == [f"pan_{i:05d}.png" for i in range(5)]
    grey = np.stack([np.asarray(Image.open(p)) for p in pngs]).astype(np.int64)
    assert Image.open(pngs[0]).mode.startswith("I;16") or grey.max() > 255
    # near = white over the whole clip: the nearest pixel of the clip is 65535, the farthest 0
    assert grey.max() == 65535 and grey.min() == 0
    assert grey.reshape(-1)[depth.reshape(-1).argmin()] == 65535
    with av.open(str(out / "pan_depth_color.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5
    printed = capsys.readouterr().out
    assert "pan.mp4: 5 frames 48x32 (W x H)" in printed and "flicker over 4 frame pairs" in printed
    assert (out / "pan_flicker.json").is_file() and "flicker over 4" in (out / "pan_flicker.txt").read_text()


def test_existing_outputs_are_refused_before_any_work(ppvd_models, clip, tmp_path, capsys):
    """A partial set of a video's outputs is never replaced without --overwrite: the item fails (exit 1), named
    in the summary, and nothing is written."""
    out = tmp_path / "out"
    (out / "pan_depth16").mkdir(parents=True)
    (out / "pan_depth16" / "pan_00003.png").write_bytes(b"mine")
    assert predict(ppvd_models, clip, "--out", out) == 1
    assert "already exist" in capsys.readouterr().out
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["pan_00003.png"]


def test_a_finished_video_is_skipped_on_a_rerun(ppvd_models, clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict(ppvd_models, clip, "--out", out) == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert predict(ppvd_models, clip, "--out", out) == 0
    assert "1 item(s): 0 done, 1 skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_undecodable_video_is_a_clear_error(ppvd_models, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert predict(ppvd_models, bad, "--out", tmp_path / "out") == 1          # the item fails, reported in the summary
    text = capsys.readouterr().out
    assert "could not decode the video" in text and "Traceback" not in text
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_pyav_says_how_to_install(ppvd_models, clip, tmp_path, capsys, monkeypatch):
    real = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    assert predict(ppvd_models, clip, "--out", tmp_path / "out") == 1
    text = capsys.readouterr().out
    assert "needs PyAV" in text and "pip install av" in text


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """A models folder with the image model and the video model, and one with the image model only."""
    from tiny_models import write_tiny_models
    root = tmp_path_factory.mktemp("both")
    write_tiny_models(root / "both")
    write_tiny_ppvd(root / "both")
    write_tiny_models(root / "image")
    return root / "both", root / "image"


def test_a_folder_video_uses_the_video_model_when_present_else_the_image_model_per_frame(both, clip, image_file,
                                                                                          tmp_path, capsys):
    (tmp_path / "in" / "shots").mkdir(parents=True)
    (tmp_path / "in" / "shots" / "pan.mp4").write_bytes(clip.read_bytes())
    (tmp_path / "in" / "photo.png").write_bytes(image_file.read_bytes())
    with_video, image_only = both
    out = tmp_path / "video_model"
    assert predict(with_video, tmp_path / "in", "--out", out, "--area", "6144") == 0
    text = capsys.readouterr().out
    assert "2 item(s): 2 done" in text and "videos: the video model (ppvd.pth + pi3.safetensors)" in text
    depth = np.load(out / "shots" / "pan_depth.npz")["depth"]                 # the video model: one clip depth
    assert depth.shape == (5, 32, 48)
    assert (out / "shots" / "pan_depth_color.mp4").is_file() and (out / "photo_depth.npy").is_file()
    assert not (out / "shots" / "pan").exists()
    # The same clip through clip.predict_video_file directly gives the same depth (mirroring changes no value).
    from comfyui_ppd import runtime
    from comfyui_ppd.families.ppvd import clip as video_clip
    from comfyui_ppd.families.ppvd import steps as video_steps
    pipe = video_steps.load_video_pipeline(with_video / "ppvd.pth", with_video / "pi3.safetensors",
                                           runtime.precision("auto", "cpu"), process_size=(32, 32))
    video_clip.predict_video_file(pipe, clip, tmp_path / "direct", steps=1)
    assert np.array_equal(depth, np.load(tmp_path / "direct" / "pan_depth.npz")["depth"])

    out = tmp_path / "per_frame"
    assert predict(image_only, tmp_path / "in", "--out", out, "--area", "6144") == 0
    text = capsys.readouterr().out
    assert "2 item(s): 2 done" in text and "videos: the image model per frame" in text
    frames = sorted(p.name for p in (out / "shots" / "pan").glob("*_depth.npy"))
    assert frames == [f"frame_{i:06d}_depth.npy" for i in range(5)]
    assert (out / "shots" / "pan" / "frames.json").is_file() and not (out / "shots" / "pan_depth.npz").exists()


def test_an_image_model_named_with_model_runs_videos_frame_by_frame(both, clip, tmp_path, capsys):
    with_video, _ = both
    assert predict(with_video, clip, "--out", tmp_path / "out", "--area", "6144", "--model",
                   with_video / "ppd.pth") == 0
    assert "videos: the image model per frame" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "pan").glob("frame_*_depth.npy"))) == 5


def test_naming_the_video_model_keeps_the_default_image_model_for_images(both, clip, image_file, tmp_path, capsys):
    with_video, _ = both
    assert predict(with_video, clip, image_file, "--out", tmp_path / "out", "--area", "6144",
                   "--model", "ppvd.pth", "--encoder", "pi3.safetensors") == 0
    assert "videos: the video model" in capsys.readouterr().out
    assert (tmp_path / "out" / "pan_depth.npz").is_file() and (tmp_path / "out" / "photo_depth.npy").is_file()
