"""The ComfyUI nodes through the classic API, on tiny random checkpoints in a temp models/ppd."""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pack_nodes import display_names, node, node_classes
from tiny_models import tiny_dit_state_dict

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SOCKET_TYPES = {"IMAGE", "MASK", "PPD_MODEL", "PPD_VIDEO_MODEL", "PPD_SEMANTICS", "PPD_DEPTH", "PPD_POINTS",
                "PPD_GEOMETRY_MODEL", "PPD_GEOMETRY", "STRING", "FLOAT", "INT", "MOGE_GEOMETRY", "DA3_GEOMETRY",
                "VIDEO", "*"}


@pytest.fixture()
def depth_packet(pack, comfy_env):
    model, _ = node(pack, "PPD_LoadModel").load("ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, torch.rand(2, 40, 60, 3), "custom long side", 96)
    return model, sem, node(pack, "PPD_DepthSampler").sample(model, sem, 2, 5)["result"]


# --- definitions ---------------------------------------------------------------------------------------
def test_node_definitions_are_well_formed(pack):
    assert node_classes(pack) and set(node_classes(pack)) == set(display_names(pack))
    for node_id, cls in node_classes(pack).items():
        title = display_names(pack)[node_id]
        assert node_id.startswith("PPD_") and "PPD" in title and title.count("PPD") == 1, title
        assert cls.CATEGORY.split("/")[0] == "PPD" and cls.DESCRIPTION.strip()
        if cls.RETURN_NAMES:
            assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
        assert cls.RETURN_TYPES or getattr(cls, "OUTPUT_NODE", False)
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (kind, *opts) in spec.get(section, {}).items():
                opts = opts[0] if opts else {}
                where = f"{node_id}.{name}"
                assert opts.get("tooltip"), f"{where} has no tooltip"
                if isinstance(kind, list):
                    assert kind and opts.get("default", kind[0]) in kind, where
                else:
                    assert kind in WIDGET_TYPES | SOCKET_TYPES, where
                if kind in ("INT", "FLOAT"):
                    assert opts["min"] <= opts["default"] <= opts["max"], where
                    assert isinstance(opts["default"], int if kind == "INT" else (int, float)), where


# Words a user may type into node search (frontend 1.45 also matches search_aliases); each must find some node.
SEARCH_WORDS = ["depth", "normal", "point cloud", "metric", "camera", "video", "flicker", "edge", "pixel", "ply",
                "controlnet depth", "moge"]


def test_every_node_has_search_aliases(pack):
    from comfy_api.latest import io
    if "search_aliases" not in {f.name for f in __import__("dataclasses").fields(io.Schema)}:
        pytest.skip("this ComfyUI has no search_aliases (older than 0.27)")
    infos = {node_id: ref.info for node_id, ref in node_classes(pack).items()}
    for node_id, info in infos.items():
        assert len(info["search_aliases"] or []) >= 5, node_id
    for word in SEARCH_WORDS:
        found = [n for n, info in infos.items()
                 if any(word in alias for alias in info["search_aliases"]) or word in info["display_name"].lower()]
        assert found, f"searching {word!r} finds no PPD node"


def test_node_ids_do_not_clash_with_core_names(pack):
    core = {"LoadImage", "SaveImage", "PreviewImage", "ControlNetLoader", "Preview3D", "SaveGLB"}
    assert not core & set(node_classes(pack))


def test_model_folder_registered_with_extensions(pack, comfy_env):
    paths, exts = comfy_env.folder_paths.folder_names_and_paths["ppd"]
    assert paths[-1].endswith("ppd") and {".pth", ".pt", ".safetensors"} <= exts
    spec = node_classes(pack)["PPD_LoadModel"].INPUT_TYPES()["required"]
    assert spec["dit_name"][0] == ["ppd.pth"]
    assert spec["encoder_name"][0] == ["depth_anything_v2_vitl.pth", "moge2_vitl_normal.pt"]


def test_extra_model_paths_entries_are_kept(pack, comfy_env, tmp_path):
    fp = comfy_env.folder_paths
    fp.folder_names_and_paths["ppd"] = ([str(tmp_path / "shared_models")], set())   # as the YAML loader does
    pack.nodes.common.register_model_folder()
    paths, exts = fp.folder_names_and_paths["ppd"]
    assert paths[0] == str(tmp_path / "shared_models") and len(paths) == 2 and ".pth" in exts


# --- behaviour -----------------------------------------------------------------------------------------
def test_full_chain_shapes_and_controlnet_orientation(pack, depth_packet):
    model, sem, (depth, image) = depth_packet
    assert sem["image"].shape == (2, 3, 64, 96) and sem["input_size"] == (40, 60)
    assert depth["depth"].shape == (2, 1, 64, 96) and depth["spread"] is None
    assert image.shape == (2, 40, 60, 3) and 0 <= image.min() and image.max() <= 1
    # near = white: the farthest (largest) raw depth of each image is black in the ControlNet image
    from comfyui_ppd import imaging
    full = imaging.resize_depth(depth["depth"], (40, 60))
    for b in range(2):
        far = full[b, 0].flatten().argmax()
        assert image[b, ..., 0].flatten()[far] == 0 and image[b].max() == 1


def test_model_goes_through_the_memory_manager(pack, comfy_env, monkeypatch):
    calls = []
    monkeypatch.setattr(comfy_env.mm, "load_models_gpu",
                        lambda models, memory_required=0, **kw: calls.append((models, memory_required, kw)))
    model, _ = node(pack, "PPD_LoadModel").load("ppd.pth", "depth_anything_v2_vitl.pth", "fp32")["result"]
    assert model.patcher.model_size() == sum(p.numel() * 4 for p in model.patcher.model.parameters())
    node(pack, "PPD_SemanticEncoder").encode(model, torch.rand(1, 32, 32, 3), "512x384 area (fastest)", 1024)
    assert calls and calls[0][0] == [model.patcher] and calls[0][1] > 0 and calls[0][2]["force_full_load"]


def test_render_modes_and_batch_normalization(pack, depth_packet):
    _, _, (depth, _) = depth_packet
    base = depth["depth"][:1]
    packet = {**depth, "depth": torch.cat([base, base * 0.5 + 0.3])}   # frame 2 = affine copy of frame 1
    render = node(pack, "PPD_DepthRender")
    per, per_mask = render.render(packet, "depth", "spectral", "per image", "processing")
    whole, _ = render.render(packet, "depth", "spectral", "whole batch", "processing")
    # frame 2 = 0.5*frame 1 + 0.3, both stretched to [0,1] in float32: a few roundings of values < 1 (6e-8
    # each)
    assert torch.allclose(per[0], per[1], atol=1e-6)                  # each frame stretched to its own range
    assert not torch.allclose(whole[0], whole[1], atol=1e-3)          # one range for the batch
    assert per.shape == (2, 64, 96, 3) and per_mask.shape == (2, 64, 96)
    cn, cn_mask = render.render(packet, "controlnet", "spectral", "per image", "input")
    # masks in [0,1] that sum to 1: one float32 rounding (6e-8); atol 1e-6
    assert cn.shape == (2, 40, 60, 3) and torch.allclose(cn_mask[0] + render.render(
        packet, "depth", "spectral", "per image", "input")[1][0], torch.ones(40, 60), atol=1e-6)
    color, _ = render.render(packet, "colormap", "turbo", "per image", "processing")
    assert not torch.allclose(color[..., 0], color[..., 2])


def test_save_writes_numbered_files_and_never_overwrites(pack, depth_packet, comfy_env):
    _, _, (depth, _) = depth_packet
    save = node(pack, "PPD_SaveDepth")
    out = save.save(depth, "ppd/depth", True, "near = white", True, True, "input")
    out2 = save.save(depth, "ppd/depth", True, "near = white", True, False, "processing")
    folder = comfy_env.folder_paths.get_output_directory()
    names = sorted(p.name for p in (Path(folder) / "ppd").iterdir())
    raw = "96x64"                                   # raw files stay at the processing size (W x H in the name)
    assert names == sorted([f"depth_00001_{raw}.exr", f"depth_00001_{raw}.npy", "depth_00001_.png",
                     f"depth_00002_{raw}.exr", f"depth_00002_{raw}.npy", "depth_00002_.png",
                     f"depth_00003_{raw}.npy", "depth_00003_.png", f"depth_00004_{raw}.npy", "depth_00004_.png"])
    png = Image.open(f"{folder}/ppd/depth_00001_.png")
    assert png.size == (60, 40) and png.mode.startswith("I")
    assert np.load(f"{folder}/ppd/depth_00001_{raw}.npy").shape == (64, 96)
    assert np.load(f"{folder}/ppd/depth_00003_{raw}.npy").shape == (64, 96)
    assert len(out["ui"]["images"]) == 2 and out["ui"]["images"][0]["type"] == "temp"
    assert out2["ui"]["images"][0]["filename"] != out["ui"]["images"][0]["filename"]


def test_interrupt_in_the_middle_of_a_save_leaves_whole_files(pack, depth_packet, comfy_env, cancel_at_check):
    _, _, (depth, _) = depth_packet
    cancel_at_check(2)                                                   # Cancel before the 2nd image
    with pytest.raises(comfy_env.InterruptProcessingException):
        node(pack, "PPD_SaveDepth").save(depth, "ppd/cut", True, "near = white", True, False, "input")
    folder = Path(comfy_env.folder_paths.get_output_directory()) / "ppd"
    assert sorted(p.name for p in folder.iterdir()) == ["cut_00001_.png", "cut_00001_96x64.npy"]


def test_interrupt_stops_sampling_between_steps(pack, comfy_env, progress_seen):
    model, _ = node(pack, "PPD_LoadModel").load("ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, torch.rand(1, 32, 32, 3), "custom long side", 64)
    seen = progress_seen(cancel_at=0)                                   # the user presses Cancel
    with pytest.raises(comfy_env.InterruptProcessingException):
        node(pack, "PPD_DepthSampler").sample(model, sem, 4, 0)
    assert [v for v, _ in seen] == [0]      # the bar shows 0 at once; Cancel then stops before the first step ends


def test_ensemble_output_has_spread(pack, comfy_env):
    model, _ = node(pack, "PPD_LoadModel").load("ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, torch.rand(1, 32, 32, 3), "custom long side", 64)
    depth, _ = node(pack, "PPD_DepthSampler").sample(model, sem, 2, 0, ensemble_size=3)["result"]
    assert depth["spread"].shape == depth["depth"].shape and depth["spread"].max() > 0


def test_batch_larger_than_memory_is_chunked(pack, comfy_env, monkeypatch):
    runtime = importlib.import_module(pack.__name__ + ".comfyui_ppd.runtime")   # the pack's own engine
    model, _ = node(pack, "PPD_LoadModel").load("ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    images = torch.rand(3, 32, 32, 3)
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, images, "custom long side", 64)
    whole, _ = node(pack, "PPD_DepthSampler").sample(model, sem, 2, 9)["result"]
    forwards = []
    monkeypatch.setattr(runtime, "available_bytes", lambda device: 1)   # room for one image at a time
    original = model.engine.sample
    monkeypatch.setattr(model.engine, "sample", lambda image, *a, **k: forwards.append(len(image))
                        or original(image, *a, **k))
    sem2, = node(pack, "PPD_SemanticEncoder").encode(model, images, "custom long side", 64)
    chunked, _ = node(pack, "PPD_DepthSampler").sample(model, sem2, 2, 9)["result"]
    assert forwards == [1, 1, 1]
    # same images, batch of 3 vs 3 batches of 1: matmul kernels may block differently (summation order), a few
    # EPS per op through a tiny DiT: DIT_TOL-like (tolerances.py), 1e-5
    assert torch.allclose(whole["depth"], chunked["depth"], atol=1e-5)


# --- bad input -------------------------------------------------------------------------------------------
def test_missing_model_file_names_url_and_folder(pack, comfy_env):
    import os
    os.remove(os.path.join(comfy_env.folder_paths.models_dir, "ppd", "ppd.pth"))
    with pytest.raises(ValueError) as info:
        node(pack, "PPD_LoadModel").load("ppd.pth", "depth_anything_v2_vitl.pth", "auto")
    msg = str(info.value)
    assert "huggingface.co/gangweix/Pixel-Perfect-Depth" in msg and os.path.join("models", "ppd") in msg


def test_da2_encoder_with_moge_dit_is_refused(pack, comfy_env):
    import os
    path = os.path.join(comfy_env.folder_paths.models_dir, "ppd", "ppd_moge_custom.safetensors")
    save_file(tiny_dit_state_dict(), path, metadata={"ppd.semantics": "moge2"})
    with pytest.raises(ValueError, match="trained with moge2"):
        node(pack, "PPD_LoadModel").load("ppd_moge_custom.safetensors", "depth_anything_v2_vitl.pth", "auto")


def test_fp16_on_cpu_warns_and_uses_fp32(pack, comfy_env, caplog):
    with caplog.at_level(logging.WARNING, logger="comfyui_ppd"):
        model, _ = node(pack, "PPD_LoadModel").load("ppd.pth", "depth_anything_v2_vitl.pth", "fp16")["result"]
    assert model.engine.weight_dtype == torch.float32 and "fp32" in caplog.text


def test_rgba_image_is_accepted_and_two_channels_refused(pack, comfy_env):
    model, _ = node(pack, "PPD_LoadModel").load("ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    enc = node(pack, "PPD_SemanticEncoder")
    rgb = torch.rand(1, 32, 32, 3)
    a, = enc.encode(model, torch.cat([rgb, torch.ones(1, 32, 32, 1)], -1), "custom long side", 64)
    b, = enc.encode(model, rgb, "custom long side", 64)
    assert torch.equal(a["semantics"], b["semantics"])
    with pytest.raises(ValueError, match="2 channels"):
        enc.encode(model, torch.rand(1, 32, 32, 2), "custom long side", 64)


def test_steps_zero_is_refused(pack, depth_packet):
    model, sem, _ = depth_packet
    with pytest.raises(ValueError, match="steps"):
        node(pack, "PPD_DepthSampler").sample(model, sem, 0, 0)


def test_encoder_node_resizes_like_the_official_code(pack, comfy_env):
    """886x887 -> 880x880 uses bicubic (the official rule looks at the overall scale, not each side)."""
    from comfyui_ppd import imaging
    model, _ = node(pack, "PPD_LoadModel").load("ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    image = torch.rand(1, 886, 887, 3)
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, image, "1024x768 area (official)", 1024)
    expected = imaging.resize_keep_aspect(image.movedim(-1, 1))
    assert sem["image"].shape == (1, 3, 880, 880) and torch.equal(sem["image"], expected)
    assert not torch.equal(sem["image"], imaging.resize_to(image.movedim(-1, 1), (880, 880), downscale=True))
    small, = node(pack, "PPD_SemanticEncoder").encode(model, image[:, :100, :50], "custom long side", 64)
    assert small["image"].shape == (1, 3, 64, 32)
