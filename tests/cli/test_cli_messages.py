"""Rough edges a new user of the command line hits: each test fails on the behaviour before its fix."""
from __future__ import annotations

import shutil

from comfyui_ppd.cli import main


def test_missing_models_are_all_named_in_one_error(image_file, tmp_path, capsys, monkeypatch):
    """With no model at all, the error names the DiT, the encoder and (--metric) MoGe-2, not only ppd.pth:
    a user fetching the first file should not meet the next missing one only on the following run."""
    monkeypatch.delenv("PPD_MODELS_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["predict", str(image_file), "--out", str(tmp_path / "o"), "--models-dir", str(empty),
                 "--pointcloud", "--metric"])
    err = capsys.readouterr().err
    assert code == 2
    for name in ("ppd.pth", "depth_anything_v2_vitl.pth", "moge2_vitl_normal.pt"):
        assert str(empty / name) in err, name


def test_only_the_missing_encoder_is_named(models, image_file, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PPD_MODELS_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(models["dit"], folder / "ppd.pth")
    code = main(["predict", str(image_file), "--out", str(tmp_path / "o"), "--models-dir", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and "depth_anything_v2_vitl.pth" in err and "missing:" not in err
    assert "expected an encoder checkpoint" in err


def test_empty_image_file_is_called_empty(models, image_file, tmp_path, capsys):
    """A 0-byte PNG fails with 'empty (0 bytes)', not Pillow's 'cannot identify image file'; the batch goes on."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(image_file, folder / "good.png")
    (folder / "zero.png").write_bytes(b"")
    code = main(["predict", str(folder), "--out", str(tmp_path / "o"), "--models-dir", str(models["dit"].parent),
                 "--area", "6144", "--steps", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and "zero.png is empty (0 bytes)" in out and "cannot identify" not in out
    assert (tmp_path / "o" / "good_depth.npy").is_file()


def test_modules_named_in_help_texts_exist():
    """`--help` texts point users at engine modules (e.g. for --compile); each named module must import
    (bench's help still named comfyui_ppd.accel after the refactor renamed it to runtime)."""
    import importlib
    import re

    from comfyui_ppd import bench, cli
    parsers = [cli.build_parser(), bench.build_parser()]
    texts = [p.format_help() for p in parsers]
    texts += [sub.format_help() for p in parsers for action in p._subparsers._group_actions  # type: ignore[union-attr]
              for sub in action.choices.values()]
    names = {m.rstrip(".") for t in texts for m in re.findall(r"comfyui_ppd(?:\.\w+)+", t)}
    assert names, "the help texts name no module: the check below would test nothing"
    for name in sorted(names):
        importlib.import_module(name)


def test_download_for_images_fetches_only_the_image_model(models, image_file, tmp_path, monkeypatch):
    """`predict photo.png --download` fetches ppd.pth + its encoder (+ MoGe-2 with --metric), not the video
    model's 3.8 GB Pi3 nor instructions for Google-Drive files it does not use; what is present is not asked."""
    from comfyui_ppd import cli, download
    monkeypatch.delenv("PPD_MODELS_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    asked: list[object] = []

    def fake(names, target, **_):
        asked.append(names)
        return []
    monkeypatch.setattr(download, "download_official", fake)
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["predict", str(image_file), "--out", str(tmp_path / "o"), "--download", "--no-progress"]
    cli.main([*base, "--models-dir", str(empty)])
    cli.main([*base, "--models-dir", str(empty), "--pointcloud", "--metric"])
    cli.main([*base, "--models-dir", str(models["dit"].parent)])
    assert asked == [["ppd.pth", "depth_anything_v2_vitl.pth"],
                     ["ppd.pth", "depth_anything_v2_vitl.pth", "moge2_vitl_normal.pt"], []]


def test_truncated_jpeg_is_called_damaged(image_file, tmp_path):
    """A cut-off JPEG is a JPEG: the fix is to copy it again, not 'use a PNG, JPEG, ... file'."""
    import pytest
    from PIL import Image

    from comfyui_ppd.errors import InputError
    from comfyui_ppd.io.images import load_image
    whole = tmp_path / "whole.jpg"
    Image.open(image_file).save(whole, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match="damaged or incomplete") as err:
        load_image(cut)
    assert "Use a PNG" not in str(err.value)
    with pytest.raises(InputError, match="Use a PNG, JPEG"):      # not an image at all: the format hint stays
        load_image(tmp_path.joinpath("notes.png").write_text("hello") and tmp_path / "notes.png")


def test_every_command_line_argument_has_a_help_text():
    """`convert --help` listed input, output, --dtype, --part and --overwrite with no word of explanation."""
    import argparse

    from comfyui_ppd import bench, cli
    parsers = [sub for top in (cli.build_parser(), bench.build_parser())
               for action in top._subparsers._group_actions      # type: ignore[union-attr]
               for sub in action.choices.values()]
    bare = [f"{p.prog} {a.dest}" for p in parsers for a in p._actions
            if not isinstance(a, argparse._HelpAction) and not a.help]
    assert len(parsers) == 8 and not bare, bare          # predict convert download bench; image video throughput stream


def test_bad_steps_and_devices_stop_the_run_with_a_message(models, image_file, tmp_path, capsys, monkeypatch):
    """--steps 0 failed every input one by one (exit 1); --device cuda on a machine without CUDA failed each with
    torch's 'AssertionError: Torch not compiled with CUDA enabled'; --device bogus (also in bench) was a raw
    RuntimeError traceback. Each is now one message before any input is read (exit 2, nothing written)."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base = ["predict", str(image_file), "--models-dir", str(models["dit"].parent), "--no-progress"]
    for extra, words in ((["--steps", "0"], "--steps must be at least 1"),
                         (["--device", "cuda"], "'cuda' is not available"),
                         (["--device", "bogus"], "unknown device 'bogus'")):
        out = tmp_path / extra[-1]
        assert main([*base, "--out", str(out), *extra]) == 2, extra
        assert words in capsys.readouterr().err
        assert not [p for p in out.rglob("*") if p.is_file()]
    assert main(["bench", "image", "--model", "tiny", "--device", "bogus"]) == 2
    assert "unknown device 'bogus'" in capsys.readouterr().err


def test_process_size_is_checked_when_parsed_in_width_x_height(capsys):
    """--process-size 512x300 was accepted, and refused only when the first video ran (after every image of the
    run), as 'process_size must be (height, width) ... got (300, 512)': the user's numbers swapped."""
    import pytest
    with pytest.raises(SystemExit) as stop:
        main(["predict", "x.mp4", "--out", "o", "--process-size", "512x300"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "'512x300' (width x height)" in err and "multiples of 16 from 32" in err


def test_flicker_without_the_video_model_says_it_was_not_computed(models, tmp_path, capsys, monkeypatch):
    """--flicker on a video that went to the image model per frame printed nothing about flicker at all."""
    import pytest
    pytest.importorskip("av", reason="PyAV (pip install av) writes the test clip")
    from scenes import write_example_clip
    monkeypatch.delenv("PPD_MODELS_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    clip = tmp_path / "pan.mp4"
    write_example_clip(str(clip), frames=2, height=32, width=48)
    assert main(["predict", str(clip), "--out", str(tmp_path / "o"), "--models-dir", str(models["dit"].parent),
                 "--area", "1536", "--steps", "1", "--flicker", "--no-progress"]) == 0
    assert "--flicker: not computed, it needs the video model" in capsys.readouterr().out


def test_ctrl_c_is_a_short_message_and_exit_130(models, image_file, tmp_path, capsys, monkeypatch):
    """Ctrl-C during a run printed a KeyboardInterrupt traceback and then aborted in C++ ('terminate called
    without an active exception'); now a line saying the written files are complete and how to resume."""
    from comfyui_ppd.batch import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "run_sequential", interrupted)
    code = main(["predict", str(image_file), "--out", str(tmp_path / "o"), "--models-dir",
                 str(models["dit"].parent), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "run the same command again" in err


def test_video_line_gives_the_frame_size_as_width_x_height(tmp_path, capsys):
    """The pack writes sizes W x H everywhere; the video line printed a 48-wide, 32-high clip as '32x48'."""
    import pytest
    pytest.importorskip("av", reason="PyAV (pip install av) writes the test clip")
    from scenes import write_example_clip
    from tiny_ppvd import write_tiny_ppvd
    models = write_tiny_ppvd(tmp_path / "m")
    clip = tmp_path / "pan.mp4"
    write_example_clip(str(clip), frames=2, height=32, width=48)
    assert main(["predict", str(clip), "--out", str(tmp_path / "o"), "--models-dir", str(models["ppvd"].parent),
                 "--process-size", "32x32", "--steps", "1", "--no-progress"]) == 0
    assert "2 frames 48x32 (W x H)" in capsys.readouterr().out


def test_scripting_api_names_channels_last_and_folders(models, tmp_path):
    """A ComfyUI-style (B,H,W,3) tensor was refused as having '64 channels'; load_image(folder) said
    'image not found' for a folder that exists."""
    import pytest
    import torch

    from comfyui_ppd import PPDPipeline, load_dit, load_semantic_encoder
    from comfyui_ppd.errors import InputError
    from comfyui_ppd.io.images import load_image
    pipe = PPDPipeline(load_dit(models["dit"]), load_semantic_encoder(models["da2"]))
    for shape in ((1, 64, 48, 3), (2, 64, 48, 4)):
        with pytest.raises(InputError, match=r"channels last.*permute\(0, 3, 1, 2\)"):
            pipe(torch.rand(shape), steps=1)
    with pytest.raises(InputError, match="5 channels"):                  # other layouts keep the old message
        pipe(torch.rand(1, 5, 64, 48), steps=1)
    with pytest.raises(InputError, match="is a folder"):
        load_image(tmp_path)


def test_out_naming_a_file_is_a_message_not_a_traceback(models, image_file, tmp_path, capsys):
    """--out pointing at an existing file raised a raw FileExistsError traceback from Path.mkdir."""
    taken = tmp_path / "taken"
    taken.write_text("a file")
    code = main(["predict", str(image_file), "--out", str(taken), "--models-dir", str(models["dit"].parent),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot use {taken} as the output folder" in err and "choose another --out" in err


def test_a_custom_encoder_named_beside_the_video_model_is_used(tmp_path, capsys):
    """`--model ppvd.pth --encoder my_pi3.safetensors` silently ran pi3.safetensors from the models folder: a
    name that is not an official one was never given to the video model."""
    import pytest
    pytest.importorskip("av", reason="PyAV (pip install av) writes the test clip")
    from scenes import write_example_clip
    from tiny_ppvd import write_tiny_ppvd
    models = write_tiny_ppvd(tmp_path / "m")
    mine = tmp_path / "my_pi3_copy.safetensors"
    shutil.copy(models["pi3"], mine)
    clip = tmp_path / "pan.mp4"
    write_example_clip(str(clip), frames=2, height=32, width=48)
    base = ["predict", str(clip), "--models-dir", str(models["ppvd"].parent), "--process-size", "32x32",
            "--steps", "1", "--no-progress", "--model", "ppvd.pth"]
    assert main([*base, "--out", str(tmp_path / "o"), "--encoder", str(mine)]) == 0
    assert "videos: the video model (ppvd.pth + my_pi3_copy.safetensors)" in capsys.readouterr().out
    mine.write_bytes(b"")                                     # and a broken one is refused, not replaced
    assert main([*base, "--out", str(tmp_path / "o2"), "--encoder", str(mine)]) == 2
    assert "my_pi3_copy.safetensors" in capsys.readouterr().err
