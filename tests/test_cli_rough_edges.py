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
