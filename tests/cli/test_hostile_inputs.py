"""Hostile input to `predict`, round 3 (issue 18): each test failed on the code before its fix.

Nothing is written outside --out; a model file that cannot load stops the run once with one message naming
the file; a read-only --out is named once, before any model loads; stale temp files of our outputs are removed;
list files from other systems read or fail clearly; the summary does not call a chosen image model "the video
model was not found".
"""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_files import BAD_CONFIGS, dit_with_config
from PIL import Image

from batch_data import counts
from comfyui_ppd import cli
from comfyui_ppd.cli import main
from comfyui_ppd.families.ppd import steps as ppd_steps
from tiny_models import tiny_dit_state_dict

AREA, STEPS = "6144", "1"


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random((40, 56, 3)) * 255).astype("uint8")).save(path)
    return path


def _predict(models, *args) -> int:
    return main(["predict", *map(str, args), "--models-dir", str(models["dit"].parent), "--area", AREA,
                 "--steps", STEPS, "--no-progress"])


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# --- 1. nothing written outside --out -----------------------------------------------------------------------
def test_list_line_climbing_out_with_dotdot_is_refused_not_written_outside_out(models, tmp_path, capsys):
    """`sub/../../lists/inside.png` in lists/l.txt named lists/inside.png but wrote beside --out (a/lists/...)."""
    t = tmp_path / "t"
    _png(t / "lists" / "inside.png")
    (t / "lists" / "sub").mkdir()
    _png(t / "lists" / "good.png", seed=1)
    (t / "lists" / "l.txt").write_text("sub/../../lists/inside.png\ngood.png\n")
    (t / "a").mkdir()
    before = _files(t)
    code = _predict(models, f"@{t / 'lists' / 'l.txt'}", "--out", t / "a" / "out")
    out = capsys.readouterr().out
    written = _files(t) - before
    assert written and all(p.startswith("a/out/") for p in written), written
    assert code == 1 and counts(out)["failed"] == 1 and counts(out)["done"] == 1, out
    assert "sub/../../lists/inside.png" in out and "outside the output folder" in out, out
    assert (t / "a" / "out" / "good_depth.npy").is_file()


def test_pattern_climbing_out_with_dotdot_is_refused(models, tmp_path, capsys, monkeypatch):
    """`g/in/*/../../top.png` wrote g/top_depth*.* next to g/out4 instead of inside it."""
    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "g" / "top.png")
    (tmp_path / "g" / "in" / "x").mkdir(parents=True)
    before = _files(tmp_path)
    code = _predict(models, "g/in/*/../../top.png", "--out", "g/out4")
    out = capsys.readouterr().out
    assert not (_files(tmp_path) - before), _files(tmp_path) - before
    assert code == 1 and "outside the output folder" in out, out


def test_dotdot_that_stays_inside_is_normalised(models, tmp_path, capsys):
    """A list line `sub/../pic.png` is lists/pic.png: its outputs go to OUT/pic_*, with no empty OUT/sub folder."""
    _png(tmp_path / "lists" / "pic.png")
    (tmp_path / "lists" / "sub").mkdir()
    (tmp_path / "lists" / "l.txt").write_text("sub/../pic.png\n")
    assert _predict(models, f"@{tmp_path / 'lists' / 'l.txt'}", "--out", tmp_path / "out") == 0
    assert (tmp_path / "out" / "pic_depth.npy").is_file() and not (tmp_path / "out" / "sub").exists()


# --- 2. a model file that cannot load: one message naming the file, exit 2, loaded once ----------------------
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_corrupt_model_config_stops_the_run_once_naming_the_file(models, tmp_path, capsys, monkeypatch, case):
    dit = dit_with_config(tmp_path / "ppd_bad.safetensors", BAD_CONFIGS[case])
    loads = []
    real = ppd_steps.load_pipeline
    monkeypatch.setattr(ppd_steps, "load_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k))
    for i in range(2):
        _png(tmp_path / "in" / f"im{i}.png", seed=i)
    code = _predict(models, tmp_path / "in", "--out", tmp_path / "out", "--model", dit, "--encoder", models["da2"],
                    "--batch-size", "1")
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err.count("error:") == 1 and str(dit) in captured.err and "model_config" in captured.err
    assert "im0.png" not in captured.out + captured.err and "Traceback" not in captured.err
    assert len(loads) == 1
    assert not (tmp_path / "out").exists() or not _files(tmp_path / "out")


def test_a_model_that_cannot_load_stops_the_run_when_a_batch_fills_inside_an_item(models, tmp_path, capsys,
                                                                                   monkeypatch):
    """With --batch-size 1 the batch runs inside the item's loop, whose per-item `except` swallowed the stop."""
    sd = tiny_dit_state_dict()
    sd["dit.blocks.0.attn.qkv.weight"] = torch.zeros(7, 7)                  # a clean CheckpointError
    torch.save(sd, tmp_path / "ppd_wrong.pth")
    loads = []
    real = ppd_steps.load_pipeline
    monkeypatch.setattr(ppd_steps, "load_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k))
    for i in range(2):
        _png(tmp_path / "in" / f"im{i}.png", seed=i)
    code = _predict(models, tmp_path / "in", "--out", tmp_path / "out", "--model", tmp_path / "ppd_wrong.pth",
                    "--encoder", models["da2"], "--batch-size", "1")
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("error:") == 1 and "ppd_wrong.pth" in captured.err, captured
    assert "wrong shape" in captured.err and "summary:" not in captured.out
    assert len(loads) == 1


# --- 4. read-only --out ------------------------------------------------------------------------------------
def test_read_only_out_is_named_once_before_any_model_loads(models, tmp_path, capsys, monkeypatch):
    """Simulates a read-only disk (the tests run as root, so chmod would not stop writes)."""
    out = tmp_path / "out"
    out.mkdir()
    real_open, real_unlink = os.open, os.unlink

    def ro(real):
        def call(path, *a, **k):
            if str(path).startswith(str(out)):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real(path, *a, **k)
        return call
    monkeypatch.setattr(os, "open", ro(real_open))
    monkeypatch.setattr(os, "unlink", ro(real_unlink))
    loads = []
    monkeypatch.setattr(ppd_steps, "load_pipeline", lambda *a, **k: loads.append(1))
    for i in range(2):
        _png(tmp_path / "in" / f"im{i}.png", seed=i)
    code = _predict(models, tmp_path / "in", "--out", out)
    captured = capsys.readouterr()
    assert code == 2 and not loads, captured
    assert captured.err.count("error:") == 1 and "Read-only file system" in captured.err
    assert f"cannot write to the output folder {out}" in captured.err and ".tmp" not in captured.err


# --- 5. temp files left by a killed run ----------------------------------------------------------------------
def test_stale_temp_files_of_our_outputs_are_removed_and_nothing_else(models, tmp_path, capsys):
    _png(tmp_path / "in" / "photo.png")
    out = tmp_path / "out"
    out.mkdir()
    hour_ago = time.time() - 3600
    ours = [out / ".photo_depth.npy.1a2b3c4d.tmp", out / ".photo_depth16.png.deadbeef.tmp"]
    kept = [out / ".photo_depth.npy.notes.tmp", out / "photo_depth.npy.1a2b3c4d.tmp",
            out / ".other_depth.npy.1a2b3c4d.tmp", out / ".photo_depth.npy.1a2b3c4d.tmp.bak"]
    fresh = out / ".photo_depth_color.png.0badf00d.tmp"     # perhaps another run writing right now
    for p in ours + kept + [fresh]:
        p.write_bytes(b"partial")
    for p in ours + kept:
        os.utime(p, (hour_ago, hour_ago))
    assert _predict(models, tmp_path / "in", "--out", out) == 0
    assert not any(p.exists() for p in ours)
    assert all(p.read_bytes() == b"partial" for p in kept + [fresh])
    assert (out / "photo_depth.npy").is_file()


def test_stale_temp_files_of_a_finished_run_are_removed_on_the_rerun(models, tmp_path, capsys):
    """A kill after the last rename but before clean-up: the rerun skips the item and still removes its litter."""
    _png(tmp_path / "in" / "photo.png")
    out = tmp_path / "out"
    assert _predict(models, tmp_path / "in", "--out", out) == 0
    litter = out / ".photo_depth.npy.0123abcd.tmp"
    litter.write_bytes(b"partial")
    os.utime(litter, (time.time() - 3600,) * 2)
    assert _predict(models, tmp_path / "in", "--out", out) == 0
    assert "1 skipped" in capsys.readouterr().out and not litter.exists()


def test_stale_temp_files_of_video_frames_are_removed(models, tmp_path, capsys):
    """Videos run per frame by the image model write OUT/<stem>/frame_NNNNNN_*: their temp files are ours too."""
    pytest.importorskip("av", reason="video decoding needs PyAV")
    from scenes import write_example_clip
    clip = tmp_path / "in" / "pan.mp4"
    clip.parent.mkdir()
    write_example_clip(str(clip), frames=2, height=32, width=48)
    folder = tmp_path / "out" / "pan"
    folder.mkdir(parents=True)
    litter = [folder / ".frame_000001_depth16.png.0123abcd.tmp", folder / ".frames.json.89abcdef.tmp"]
    users = folder / ".frame_notes.txt.0123abcd.tmp"
    for p in litter + [users]:
        p.write_bytes(b"partial")
        os.utime(p, (time.time() - 3600,) * 2)
    assert _predict(models, clip, "--out", tmp_path / "out") == 0
    assert not any(p.exists() for p in litter) and users.exists()
    assert (folder / "frames.json").is_file()


# --- 6. list files from other systems ------------------------------------------------------------------------
def test_list_with_utf8_bom_is_read(models, tmp_path, capsys):
    _png(tmp_path / "a.png")
    (tmp_path / "l.txt").write_bytes("\ufeffa.png\r\n".encode())                 # Windows Notepad
    assert _predict(models, f"@{tmp_path / 'l.txt'}", "--out", tmp_path / "out") == 0
    assert (tmp_path / "out" / "a_depth.npy").is_file()


def test_list_that_is_not_utf8_is_a_clear_error(models, tmp_path, capsys):
    (tmp_path / "l.txt").write_bytes("caf\u00e9.png\n".encode("latin-1"))
    code = _predict(models, f"@{tmp_path / 'l.txt'}", "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "l.txt") in err and "UTF-8" in err and "line 1" in err, err
    assert "Traceback" not in err and "codec" not in err


def test_list_line_with_a_name_over_255_bytes_is_a_clear_error(models, tmp_path, capsys):
    long = "x" * 300 + ".png"
    (tmp_path / "l.txt").write_text(f"# comment\nsub/{long}\n")
    code = _predict(models, f"@{tmp_path / 'l.txt'}", "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and "line 2" in err and "304 bytes" in err and "255" in err, err
    assert "Errno" not in err


def test_argument_with_a_name_over_255_bytes_is_a_clear_error(models, tmp_path, capsys):
    code = _predict(models, tmp_path / ("y" * 300 + ".png"), "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and "304 bytes" in err and "Errno" not in err, err


# --- 7. wording: an image model chosen on purpose ------------------------------------------------------------
@pytest.fixture(scope="module")
def both(tmp_path_factory):
    from tiny_models import write_tiny_models
    from tiny_ppvd import write_tiny_ppvd
    folder = tmp_path_factory.mktemp("both")
    write_tiny_models(folder)
    write_tiny_ppvd(folder)
    return folder


def test_a_chosen_image_model_is_not_called_a_missing_video_model(both, tmp_path, capsys):
    pytest.importorskip("av", reason="video decoding needs PyAV")
    from scenes import write_example_clip
    clip = tmp_path / "pan.mp4"
    write_example_clip(str(clip), frames=2, height=32, width=48)
    code = main(["predict", str(clip), "--out", str(tmp_path / "out"), "--models-dir", str(both), "--model",
                 "ppd.pth", "--area", AREA, "--steps", STEPS, "--no-progress", "--flicker"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "not found" not in out and "was not found" not in out, out
    assert "videos: the image model per frame (--model ppd.pth chose the image model" in out, out
    assert "--flicker: not computed" in out and "--model ppd.pth" in out
    assert cli.find_video_model(cli.build_parser().parse_args(
        ["predict", str(clip), "--out", "x", "--models-dir", str(both)])) is not None   # the video files are there
