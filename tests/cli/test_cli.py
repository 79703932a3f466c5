"""The command line end to end on tiny random checkpoints written to a temp folder."""
from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from cli_run import predict
from comfyui_ppd import imaging, load_dit, load_semantic_encoder
from comfyui_ppd.cli import main


def test_predict_writes_three_files(models, image_file, tmp_path):
    out = tmp_path / "out"
    assert predict(models, image_file, "--out", out) == 0
    raw = np.load(out / "photo_depth.npy")
    assert raw.dtype == np.float32 and raw.shape == (64, 96)          # processing resolution, raw
    png16 = Image.open(out / "photo_depth16.png")
    assert png16.mode.startswith("I") and png16.size == (70, 50)      # input size, 16-bit
    # near = white: the 16-bit PNG is 1 - normalised depth (larger raw depth = farther = darker)
    full = imaging.resize_depth(torch.from_numpy(raw)[None, None], (50, 70))[0, 0]
    expected = 1 - imaging.normalize_depth(full[None, None])[0, 0].numpy()
    assert np.abs(np.asarray(png16, dtype=np.float64) / 65535 - expected).max() <= 1 / 65535 + 1e-6
    color = Image.open(out / "photo_depth_color.png")
    assert color.mode == "RGB" and color.size == (70, 50)


def test_same_seed_same_depth_and_seed_changes_it(models, image_file, tmp_path):
    predict(models, image_file, "--out", tmp_path / "a", "--seed", "1")
    predict(models, image_file, "--out", tmp_path / "b", "--seed", "1")
    predict(models, image_file, "--out", tmp_path / "c", "--seed", "2")
    a, b, c = (np.load(tmp_path / d / "photo_depth.npy") for d in "abc")
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_never_overwrites_without_flag(models, image_file, tmp_path, capsys):
    """A file already in --out is kept (resume semantics: the missing outputs are added and reported)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo_depth16.png").write_bytes(b"mine")
    assert predict(models, image_file, "--out", out) == 0
    assert "1 existing output file(s) were kept" in capsys.readouterr().out
    assert (out / "photo_depth16.png").read_bytes() == b"mine"
    assert (out / "photo_depth.npy").is_file() and (out / "photo_depth_color.png").is_file()
    assert predict(models, image_file, "--out", out, "--overwrite") == 0
    assert (out / "photo_depth16.png").read_bytes() != b"mine"


def test_missing_model_message_names_url_and_folder(image_file, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PPD_MODELS_DIR", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["predict", str(image_file), "--out", str(tmp_path / "o"), "--models-dir", str(empty)])
    err = capsys.readouterr().err
    assert code == 2 and "ppd.pth" in err and "huggingface.co" in err and str(empty) in err


def test_missing_image(models, tmp_path, capsys):
    assert predict(models, tmp_path / "nope.jpg", "--out", tmp_path) == 2
    assert "not found" in capsys.readouterr().err


def test_convert_keeps_only_the_part_and_writes_metadata(models, tmp_path):
    out = tmp_path / "ppd_fp16.safetensors"
    assert main(["convert", str(models["dit"]), str(out), "--dtype", "fp16"]) == 0
    with safe_open(str(out), "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["ppd.part"] == "dit" and meta["ppd.semantics"] == "da2" and all(k.startswith("dit.") for k in keys)
    original, converted = load_dit(models["dit"]), load_dit(out)
    assert converted.semantics_kind_source == "metadata"
    for (k, a), b in zip(original.state_dict().items(), converted.state_dict().values()):
        assert torch.equal(a.half().float(), b), k
    assert main(["convert", str(models["dit"]), str(out)]) == 2       # exists: refused


def test_convert_moge_encoder_keeps_config(models, tmp_path):
    out = tmp_path / "moge.safetensors"
    assert main(["convert", str(models["moge"]), str(out)]) == 0
    with safe_open(str(out), "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert json.loads(meta["model_config"])["encoder"]["intermediate_layers"] == [0, 1]
    assert not any(k.startswith("neck.") for k in keys)
    x = torch.rand(1, 3, 32, 48)
    assert torch.equal(load_semantic_encoder(out)(x), load_semantic_encoder(models["moge"])(x))


def test_python_dash_m_entry_point(models, image_file, tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "comfyui_ppd", "predict", str(image_file), "--out",
                           str(tmp_path / "o"), "--models-dir", str(models["dit"].parent), "--area", "6144",
                           "--steps", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "photo_depth.npy").exists() and "1/1" in proc.stderr   # console progress


def test_download_command_and_flag_use_the_models_folder(models, image_file, tmp_path, monkeypatch):
    from comfyui_ppd import download
    calls = []
    monkeypatch.setattr(download, "download_official", lambda names, target, **kw: calls.append((names, target)) or [])
    assert main(["download", "--dir", str(tmp_path / "m")]) == 0
    assert calls[-1] == (None, tmp_path / "m")
    folder = models["dit"].parent
    assert predict(models, image_file, "--out", tmp_path / "o", "--download") == 0
    assert calls[-1] == ([], folder)     # the first models folder: --models-dir; the image files are all there


def test_download_without_network_lists_urls_and_targets(tmp_path, capsys, monkeypatch):
    """No network: one error that names every URL and where to save it (here the URLs point at a closed port)."""
    import dataclasses

    from comfyui_ppd import download
    closed = {name: dataclasses.replace(f, url=f.url and "http://127.0.0.1:9/" + name)
              for name, f in download.OFFICIAL_FILES.items()}
    monkeypatch.setattr(download, "OFFICIAL_FILES", closed)
    assert main(["download", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    for name, f in closed.items():
        assert name in err and (f.url is None or f.url in err)
    assert str(tmp_path) in err
