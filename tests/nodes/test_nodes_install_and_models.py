"""Nodes on a fresh install and with missing / mismatched model files: examples, the models folder, dropdowns,
clear messages in the UI (issue 9, items 3-4)."""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pack_nodes import load, node_classes
from tiny_models import tiny_da2_state_dict, tiny_dit_state_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "example_inputs"


def ppd_dir(comfy_env) -> Path:
    return Path(comfy_env.folder_paths.models_dir) / "ppd"


# --- 3. fresh install ----------------------------------------------------------------------------------------
def test_examples_are_copied_into_an_empty_input_folder(pack, comfy_env):
    target = Path(comfy_env.folder_paths.get_input_directory())
    copied = pack.nodes.examples.copy_examples()
    expected = sorted(p.name for p in EXAMPLES.iterdir() if p.is_file())
    assert "ppd_example.png" in expected and copied == expected
    for name in expected:
        assert (target / name).read_bytes() == (EXAMPLES / name).read_bytes()
    assert pack.nodes.examples.copy_examples() == []                       # second start-up: nothing to do


def test_a_users_file_with_an_example_name_is_never_replaced(pack, comfy_env):
    target = Path(comfy_env.folder_paths.get_input_directory())
    (target / "ppd_example.png").write_bytes(b"the user's own picture")
    copied = pack.nodes.examples.copy_examples()
    assert "ppd_example.png" not in copied and (target / "ppd_frames.webp").is_file()
    assert (target / "ppd_example.png").read_bytes() == b"the user's own picture"


def test_copy_failure_is_logged_and_start_up_goes_on(pack, comfy_env, tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert pack.nodes.examples.copy_examples(target=str(blocker / "input")) == []
    assert "could not copy the example inputs" in caplog.text


# --- 4. missing and mismatched models ------------------------------------------------------------------------
def test_models_folder_is_created_at_start_up(pack, comfy_env):
    import shutil
    shutil.rmtree(ppd_dir(comfy_env))
    pack.nodes.common.register_model_folder()
    assert ppd_dir(comfy_env).is_dir()


def test_empty_folder_shows_one_clear_entry_and_names_every_missing_file(pack, comfy_env):
    for f in ppd_dir(comfy_env).iterdir():
        f.unlink()
    spec = node_classes(pack)["PPD_LoadModel"].INPUT_TYPES()["required"]
    assert spec["dit_name"][0] == ["ppd.pth (missing: see README)"]
    assert spec["encoder_name"][0] == ["depth_anything_v2_vitl.pth (missing: see README)"]
    with pytest.raises(ValueError) as info:
        load(pack, spec["dit_name"][0][0], spec["encoder_name"][0][0], "auto")
    msg = str(info.value)
    for name in ("ppd.pth", "depth_anything_v2_vitl.pth"):               # both at once, each with URL and path
        assert str(ppd_dir(comfy_env) / name) in msg
    assert "huggingface.co/gangweix/Pixel-Perfect-Depth/resolve/main/ppd.pth" in msg
    assert "huggingface.co/depth-anything/Depth-Anything-V2-Large" in msg


def test_dropdowns_tell_roles_apart_by_keys_not_names(pack, comfy_env):
    folder = ppd_dir(comfy_env)
    torch.save(tiny_da2_state_dict(), folder / "ppd_looks_like_a_dit.pth")          # an encoder, DiT-like name
    save_file(tiny_dit_state_dict(), str(folder / "vitl_encoder.safetensors"))       # a DiT, encoder-like name
    (folder / "broken.pth").write_bytes(b"not a checkpoint")                        # unknown: listed in both
    spec = node_classes(pack)["PPD_LoadModel"].INPUT_TYPES()["required"]
    assert spec["dit_name"][0] == ["broken.pth", "ppd.pth", "vitl_encoder.safetensors"]
    assert spec["encoder_name"][0] == ["broken.pth", "depth_anything_v2_vitl.pth", "moge2_vitl_normal.pt",
                                       "ppd_looks_like_a_dit.pth"]


def test_a_full_moge2_file_is_both_an_encoder_and_a_geometry_model(pack, comfy_env):
    """moge2_vitl_normal.pt (encoder, neck and heads) serves ppd_moge.pth as encoder and the geometry node."""
    load = node_classes(pack)["PPD_LoadModel"].INPUT_TYPES()["required"]
    geometry = node_classes(pack)["PPD_LoadGeometryModel"].INPUT_TYPES()["required"]
    assert "moge2_vitl_normal.pt" in load["encoder_name"][0]
    assert geometry["model_name"][0] == ["moge2_vitl_normal.pt"]                # DiT and DA2 are not listed
    assert pack.comfyui_ppd.inventory.file_kind(ppd_dir(comfy_env) / "moge2_vitl_normal.pt").semantics == "moge2"


def test_key_scan_is_cached_per_file_version(pack, comfy_env, monkeypatch):
    inventory = pack.comfyui_ppd.inventory
    path = ppd_dir(comfy_env) / "ppd.pth"
    assert inventory.file_kind(path).slot == "dit"
    monkeypatch.setattr(inventory, "_classify", lambda p: pytest.fail("re-read an unchanged file"))
    assert inventory.file_kind(path).family == "ppd"
    monkeypatch.undo()
    torch.save(tiny_da2_state_dict(), path)                              # same name, new content
    os.utime(path, ns=(1, 1))
    assert inventory.file_kind(path).slot == "encoder"


def test_validate_inputs_lets_a_missing_google_drive_file_reach_our_message(pack, comfy_env):
    cls = node_classes(pack)["PPD_LoadModel"]
    # ComfyUI skips "value not in list" for inputs named in validate_inputs' arguments (execution.validate_inputs)
    assert {"dit_name", "encoder_name"} <= set(inspect.getfullargspec(cls.cls.validate_inputs).args)
    assert cls.VALIDATE_INPUTS("ppd_moge.pth", "moge2_vitl_normal.pt") is True
    with pytest.raises(ValueError) as info:
        load(pack, "ppd_moge.pth", "moge2_vitl_normal.pt", "auto")
    msg = str(info.value)
    assert "Google Drive" in msg and "github.com/gangweix/pixel-perfect-depth" in msg
    assert str(ppd_dir(comfy_env) / "ppd_moge.pth") in msg


def test_name_guessed_mismatch_is_shown_in_the_ui(pack, comfy_env):
    out = load(pack, "ppd.pth", "moge2_vitl_normal.pt", "auto")
    text = out["ui"]["text"][0]
    assert out["result"][1] == text
    assert "pairing: ppd.pth expects Depth Anything v2 semantics, got MoGe-2" in text and "file name" in text
    good = load(pack, "ppd.pth", "depth_anything_v2_vitl.pth", "auto")["ui"]["text"][0]
    assert "pairing" not in good and "WARNING" not in good


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 falls back only on the CPU")
def test_fp16_on_cpu_is_shown_in_the_ui(pack, comfy_env):
    text = load(pack, "ppd.pth", "depth_anything_v2_vitl.pth", "fp16")["ui"]["text"][0]
    assert "fp16 is not supported well on the CPU; using fp32 instead" in text


def test_memory_manager_sees_a_named_model_bundle(pack, comfy_env):
    model, _ = load(pack, "ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    assert type(model.patcher.model).__name__ == "ModelBundle"
    assert model.patcher.model.dit is model.engine.dit
