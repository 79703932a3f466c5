"""`python -m comfyui_ppd predict clip.mp4`: the video model on tiny random checkpoints (needs PyAV)."""
from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_ppd import cli
from tiny_ppvd import write_tiny_ppvd

av = pytest.importorskip("av", reason="video decoding needs PyAV")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ppvd_models")
    write_tiny_ppvd(folder)
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from scenes import write_example_clip
    path = tmp_path_factory.mktemp("clip") / "pan.mp4"
    write_example_clip(str(path), frames=5, height=32, width=48)
    return path


def predict(models, *args) -> int:
    return cli.main(["predict", *map(str, args), "--models-dir", str(models), "--process-size", "32x32",
                     "--steps", "1", "--no-progress"])


def test_video_file_writes_png16_sequence_preview_and_npz(models, clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict(models, clip, "--out", out, "--flicker") == 0
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
    assert "pan.mp4: 5 frames 32x48" in printed and "flicker over 4 frame pairs" in printed
    assert (out / "pan_flicker.json").is_file() and "flicker over 4" in (out / "pan_flicker.txt").read_text()


def test_existing_outputs_are_refused_before_any_work(models, clip, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "pan_depth16").mkdir(parents=True)
    (out / "pan_depth16" / "pan_00003.png").write_bytes(b"mine")
    assert predict(models, clip, "--out", out) == 2
    assert "already exist" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["pan_00003.png"]


def test_undecodable_video_is_a_clear_error(models, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert predict(models, bad, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "could not decode the video" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_pyav_says_how_to_install(models, clip, tmp_path, capsys, monkeypatch):
    real = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    assert predict(models, clip, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "needs PyAV" in err and "pip install av" in err


def test_videos_and_images_are_not_mixed(models, clip, image_file, tmp_path, capsys):
    assert predict(models, clip, image_file, "--out", tmp_path / "out") == 2
    assert "either video files or images" in capsys.readouterr().err


def test_image_models_are_refused_for_videos(models, clip, tmp_path, capsys):
    from tiny_models import tiny_dit_state_dict
    torch.save(tiny_dit_state_dict(), tmp_path / "ppd.pth")
    assert predict(models, clip, "--out", tmp_path / "out", "--model", tmp_path / "ppd.pth") == 2
    assert "image model (PPD); use the image nodes" in capsys.readouterr().err
