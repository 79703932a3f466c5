"""A new user's first hour (issue 9, items 3-6): fresh install, missing / mismatched models, big saves, feedback."""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from tiny_models import tiny_da2_state_dict, tiny_dit_state_dict

EXAMPLES = Path(__file__).resolve().parents[1] / "example_inputs"


def node(pack, name):
    return pack.NODE_CLASS_MAPPINGS[name]()


def load(pack, *args):
    return node(pack, "PPD_LoadModel").load(*args)


def ppd_dir(comfy_env) -> Path:
    return Path(comfy_env.folder_paths.models_dir) / "ppd"


# --- 3. fresh install ----------------------------------------------------------------------------------------
def test_examples_are_copied_into_an_empty_input_folder(pack, comfy_env):
    target = Path(comfy_env.folder_paths.get_input_directory())
    copied = pack.nodes.setup.copy_examples()
    expected = sorted(p.name for p in EXAMPLES.iterdir() if p.is_file())
    assert "ppd_example.png" in expected and copied == expected
    for name in expected:
        assert (target / name).read_bytes() == (EXAMPLES / name).read_bytes()
    assert pack.nodes.setup.copy_examples() == []                       # second start-up: nothing to do


def test_a_users_file_with_an_example_name_is_never_replaced(pack, comfy_env):
    target = Path(comfy_env.folder_paths.get_input_directory())
    (target / "ppd_example.png").write_bytes(b"the user's own picture")
    copied = pack.nodes.setup.copy_examples()
    assert "ppd_example.png" not in copied and (target / "ppd_frames.webp").is_file()
    assert (target / "ppd_example.png").read_bytes() == b"the user's own picture"


def test_copy_failure_is_logged_and_start_up_goes_on(pack, comfy_env, tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert pack.nodes.setup.copy_examples(target=str(blocker / "input")) == []
    assert "could not copy the example inputs" in caplog.text


# --- 4. missing and mismatched models ------------------------------------------------------------------------
def test_models_folder_is_created_at_start_up(pack, comfy_env):
    import shutil
    shutil.rmtree(ppd_dir(comfy_env))
    pack.nodes.model.register_model_folder()
    assert ppd_dir(comfy_env).is_dir()


def test_empty_folder_shows_one_clear_entry_and_names_every_missing_file(pack, comfy_env):
    for f in ppd_dir(comfy_env).iterdir():
        f.unlink()
    spec = pack.NODE_CLASS_MAPPINGS["PPD_LoadModel"].INPUT_TYPES()["required"]
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
    spec = pack.NODE_CLASS_MAPPINGS["PPD_LoadModel"].INPUT_TYPES()["required"]
    assert spec["dit_name"][0] == ["broken.pth", "ppd.pth", "vitl_encoder.safetensors"]
    assert spec["encoder_name"][0] == ["broken.pth", "depth_anything_v2_vitl.pth", "moge2_vitl_normal.pt",
                                       "ppd_looks_like_a_dit.pth"]


def test_a_full_moge2_file_is_both_an_encoder_and_a_geometry_model(pack, comfy_env):
    """moge2_vitl_normal.pt (encoder, neck and heads) serves ppd_moge.pth as encoder and the geometry node."""
    load = pack.NODE_CLASS_MAPPINGS["PPD_LoadModel"].INPUT_TYPES()["required"]
    geometry = pack.NODE_CLASS_MAPPINGS["PPD_LoadGeometryModel"].INPUT_TYPES()["required"]
    assert "moge2_vitl_normal.pt" in load["encoder_name"][0]
    assert geometry["model_name"][0] == ["moge2_vitl_normal.pt"]                # DiT and DA2 are not listed
    assert pack.comfyui_ppd.inventory.file_kind(ppd_dir(comfy_env) / "moge2_vitl_normal.pt").semantics == "moge2"


def test_key_scan_is_cached_per_file_version(pack, comfy_env, monkeypatch):
    inventory = pack.comfyui_ppd.inventory
    path = ppd_dir(comfy_env) / "ppd.pth"
    assert inventory.file_kind(path).role == "dit"
    monkeypatch.setattr(inventory, "_classify", lambda p: pytest.fail("re-read an unchanged file"))
    assert inventory.file_kind(path).family == "ppd"
    monkeypatch.undo()
    torch.save(tiny_da2_state_dict(), path)                              # same name, new content
    os.utime(path, ns=(1, 1))
    assert inventory.file_kind(path).role == "encoder"


def test_validate_inputs_lets_a_missing_google_drive_file_reach_our_message(pack, comfy_env):
    cls = pack.NODE_CLASS_MAPPINGS["PPD_LoadModel"]
    # ComfyUI skips "value not in list" for inputs named in VALIDATE_INPUTS' arguments (execution.validate_inputs)
    assert {"dit_name", "encoder_name"} <= set(inspect.getfullargspec(cls.VALIDATE_INPUTS).args)
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
    assert type(model.patcher.model).__name__ == "PPDModelBundle"
    assert model.patcher.model.dit is model.pipeline.dit


# --- 5. big images and slow saves ----------------------------------------------------------------------------
def big_packet(h=96, w=128, input_size=(1500, 2000)):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return {"depth": (0.7 * yy + 0.3 * xx)[None, None], "spread": None, "image": torch.rand(1, 3, h, w),
            "input_size": input_size, "kind": "ppd"}


def test_save_keeps_raw_depth_at_the_processing_size_and_previews_small(pack, comfy_env):
    out = node(pack, "PPD_SaveDepth").save(big_packet(), "big/d", True, "near = white", True, True, "input")
    folder = Path(comfy_env.folder_paths.get_output_directory()) / "big"
    assert sorted(p.name for p in folder.iterdir()) == ["d_00001_.png", "d_00001_128x96.exr", "d_00001_128x96.npy"]
    assert np.load(folder / "d_00001_128x96.npy").shape == (96, 128)
    assert Image.open(folder / "d_00001_.png").size == (2000, 1500)
    preview, = out["ui"]["images"]
    shown = Image.open(Path(comfy_env.folder_paths.get_temp_directory()) / preview["subfolder"] / preview["filename"])
    assert max(shown.size) <= 1024
    text = out["ui"]["text"][0]
    assert "processed 128 x 96 (W x H) from a 2000 x 1500 input" in text
    assert "d_00001_.png: 2000 x 1500" in text and "d_00001_128x96.npy: 128 x 96" in text
    assert " MB" in text and " kB" in text


def test_raw_size_input_upsamples_on_request(pack, comfy_env):
    node(pack, "PPD_SaveDepth").save(big_packet(input_size=(150, 200)), "up/d", False, "near = white", True,
                                     False, "processing", raw_size="input")
    folder = Path(comfy_env.folder_paths.get_output_directory()) / "up"
    assert np.load(folder / "d_00001_200x150.npy").shape == (150, 200)


@pytest.mark.parametrize("orientation", ["near = white", "far = white"])
def test_preview_shows_the_grey_png_as_saved(pack, comfy_env, orientation):
    out = node(pack, "PPD_SaveDepth").save(big_packet(input_size=(96, 128)), "look/d", True, orientation, False,
                                           False, "input")
    saved = np.asarray(Image.open(Path(comfy_env.folder_paths.get_output_directory()) / "look" / "d_00001_.png"),
                       dtype=np.float64) / 65535
    preview, = out["ui"]["images"]
    shown = np.asarray(Image.open(Path(comfy_env.folder_paths.get_temp_directory()) / preview["subfolder"]
                                  / preview["filename"]), dtype=np.float64) / 255
    assert shown.shape == (*saved.shape, 3) and np.all(shown[..., 0] == shown[..., 2])      # grey, not a colour map
    assert np.abs(shown[..., 0] - saved).max() <= 0.5 / 255 + 1 / 65535                  # 8-bit rounding of the PNG


def test_display_names_say_ppd_once_and_keys_are_unchanged(pack):
    names = pack.NODE_DISPLAY_NAME_MAPPINGS
    assert names["PPD_DepthSampler"] == "PPD Depth Sampler" and names["PPD_LoadModel"] == "Load PPD Model"
    assert names["PPD_SavePointCloud"] == "Save Point Cloud (PPD)"
    assert all(n.count("PPD") == 1 for n in names.values())


# --- 3. point clouds and edge metrics drop pixels behind the camera instead of refusing the image -------------
def ramp(h=32, w=48, lo=-1.0, hi=1.0):
    return torch.linspace(lo, hi, w).expand(h, w)[None].clone()            # (1,h,w) PPD log-depth


def test_pixels_behind_the_camera_are_dropped_and_counted(pack, comfy_env):
    import math
    depth = ramp()
    near, far = 1.0, 10.0
    mapped = math.log1p(near) + depth * (math.log1p(far) - math.log1p(near))   # log(1 + metres)
    behind = int((mapped <= 0).sum())
    assert 0 < behind < depth.numel() // 2
    points, summary = node(pack, "PPD_DepthToPointCloud").unproject(
        "PPD log-depth", 60.0, 0.0, near, far, 1, 0.0, depth_map=depth)
    frame, = points["frames"]
    assert frame["cloud"].points.shape[0] == depth.numel() - behind and frame["dropped"] == behind
    assert f"{behind:,} pixels dropped" in summary and bool((frame["cloud"].points[:, 2] > 0).all())
    out = node(pack, "PPD_SavePointCloud").save(points, "drop/p", True, True, True, 0.0)    # the mesh too
    assert out["result"][2].endswith("mesh.glb")
    measured = node(pack, "PPD_EdgeMetricPreview").measure("PPD log-depth", 60.0, 0.0, near, far, depth_map=depth)
    assert f"{behind:,} pixels left out" in measured["ui"]["text"][0]
    assert bool(torch.isfinite(measured["result"][0]).all())                   # the heat map has no NaN


def test_nearly_nothing_left_is_still_refused(pack, comfy_env):
    with pytest.raises(ValueError, match="almost nothing is left.*raise near above"):
        node(pack, "PPD_DepthToPointCloud").unproject("PPD log-depth", 60.0, 0.0, 1.0, 10.0, 1, 0.0,
                                                      depth_map=ramp(lo=-3.0, hi=-0.42))


# --- 6. cancel and feedback ----------------------------------------------------------------------------------
def test_cancel_in_an_ensemble_stops_within_one_block(pack, comfy_env, cancel_at_check):
    model, _ = load(pack, "ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, torch.rand(1, 32, 32, 3), "custom long side", 64)
    ran = []
    hooks = [b.register_forward_hook(lambda *_: ran.append(1)) for b in model.pipeline.dit.blocks]
    cancel_at_check(2)                                          # Cancel just before the 2nd check
    try:
        with pytest.raises(comfy_env.InterruptProcessingException):
            node(pack, "PPD_DepthSampler").sample(model, sem, 4, 0, ensemble_size=4)
    finally:
        for h in hooks:
            h.remove()
    assert len(ran) == 1                 # one DiT block ran; before, a whole step of all 4 members ran first
    assert not model.pipeline.dit.blocks[0]._forward_pre_hooks                 # the checks are removed again


def test_edge_metric_preview_is_an_output_node_with_a_preview(pack, comfy_env):
    cls = pack.NODE_CLASS_MAPPINGS["PPD_EdgeMetricPreview"]
    assert cls.OUTPUT_NODE is True
    out = cls().measure("depth (far = larger)", 60.0, 0.0, 1.0, 10.0, depth_map=ramp(lo=1.0, hi=3.0))
    assert out["ui"]["images"][0]["type"] == "temp" and out["ui"]["text"][0] == out["result"][-1]


def test_save_point_cloud_shows_files_points_and_a_preview(pack, comfy_env):
    points, _ = node(pack, "PPD_DepthToPointCloud").unproject(
        "depth (far = larger)", 60.0, 0.0, 1.0, 10.0, 2, 0.0, depth_map=ramp(lo=1.0, hi=3.0))
    out = node(pack, "PPD_SavePointCloud").save(points, "pc/p", True, True, False, 0.04)
    text = out["ui"]["text"][0]
    assert "384 points (48 x 32 grid, stride 2)" in text and "p_00001_.ply (" in text and "p_00001_.glb (" in text
    shot = out["ui"]["images"][0]
    img = Image.open(Path(comfy_env.folder_paths.get_temp_directory()) / shot["subfolder"] / shot["filename"])
    assert img.size == (512, 256)


def test_cloud_views_front_keeps_the_nearest_and_top_the_highest(pack):
    views = pack.comfyui_ppd.preview.cloud_views
    cloud = pack.comfyui_ppd.geometry.PointCloud(
        torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]),
        torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]]), torch.zeros(4, 2), 2, 2)
    img = views(cloud, size=12)                 # 0 m -> pixel round(0.55) = 1, 1 m -> round(0.55 + 9.9) = 10
    front, top = img[:, :12], img[:, 12:]
    assert front[1, 1].tolist() == [1.0, 0, 0]             # the red point at z=1 hides the green one at z=2
    assert front[10, 10].tolist() == [0, 0, 1.0] and front[1, 10].tolist() == [1.0, 1.0, 1.0]
    assert top[1, 1].tolist() == [0, 1.0, 0] and top[10, 1].tolist() == [1.0, 0, 0]   # far side (z=2) up
    assert top[10, 10].tolist() == [1.0, 1.0, 1.0]         # white (y=0) is above blue (y=1): white wins


def test_sampler_says_what_size_was_processed_and_warns_for_huge_inputs(pack, comfy_env):
    model, _ = load(pack, "ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    sampler = node(pack, "PPD_DepthSampler")
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, torch.rand(1, 48, 64, 3), "custom long side", 64)
    text = sampler.sample(model, sem, 1, 0)["ui"]["text"][0]
    assert "processed 64 x 48 (W x H) for a 64 x 48 input" in text and "scale the image down" not in text
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, torch.rand(1, 150, 200, 3), "custom long side", 64)
    text = sampler.sample(model, sem, 1, 0)["ui"]["text"][0]
    assert "processed 64 x 48 (W x H) for a 200 x 150 input" in text and "scale the image down" in text
