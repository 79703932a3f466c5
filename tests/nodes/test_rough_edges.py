"""Issue 16's rough edges, each checked on the real ComfyUI modules: the missing-file message of the metric
workflow, video progress and Cancel, sizes written W x H, the pairing wording, the depth preview's size,
and the one line an older core prints."""
from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pack_nodes import load, node, node_classes
from plumbing import REPO, require_comfyui
from tiny_ppvd import write_tiny_ppvd

MISSING = " (missing: see README)"


def ppd_dir(comfy_env) -> Path:
    return Path(comfy_env.folder_paths.get_folder_paths("ppd")[-1])


def metric_prompt(moge: str, dit: str = "ppd.pth", encoder: str = "depth_anything_v2_vitl.pth") -> dict:
    """The loaders of workflows/ppd_metric_point_cloud.json as ComfyUI hands the prompt to a node."""
    return {"2": {"class_type": "PPD_LoadModel", "inputs": {"dit_name": dit, "encoder_name": encoder,
                                                             "precision": "auto", "compile": False}},
            "5": {"class_type": "PPD_LoadGeometryModel", "inputs": {"model_name": moge}},
            "1": {"class_type": "LoadImage", "inputs": {"image": "ppd_example.png"}}}


def test_missing_geometry_model_gets_the_packs_message_naming_every_missing_file(pack, comfy_env):
    for file in ppd_dir(comfy_env).iterdir():                    # a fresh install: models/ppd is empty
        file.unlink()
    geometry = node_classes(pack)["PPD_LoadGeometryModel"]
    choice = geometry.INPUT_TYPES()["required"]["model_name"][0][0]
    assert choice == "moge2_vitl_normal.pt" + MISSING
    # ComfyUI skips "Value not in list" for inputs validate_inputs takes (execution.validate_inputs)
    assert "model_name" in inspect.getfullargspec(geometry.cls.validate_inputs).args
    assert geometry.VALIDATE_INPUTS(model_name=choice) is True
    prompt = metric_prompt(choice, "ppd.pth" + MISSING, "depth_anything_v2_vitl.pth" + MISSING)
    with pytest.raises(ValueError) as info:
        node_classes(pack, prompt)["PPD_LoadGeometryModel"]().load(choice)
    msg = str(info.value)
    assert "3 missing" in msg and "huggingface.co/Ruicheng/moge-2-vitl-normal" in msg
    assert str(ppd_dir(comfy_env) / "moge2_vitl_normal.pt") in msg
    assert "ppd.pth" in msg and "depth_anything_v2_vitl.pth" in msg      # the other loader's files, named too
    assert "Value not in list" not in msg


def test_the_other_loaders_files_are_named_only_when_missing(pack, comfy_env):
    (ppd_dir(comfy_env) / "moge2_vitl_normal.pt").unlink()
    with pytest.raises(ValueError) as info:
        node_classes(pack, metric_prompt("moge2_vitl_normal.pt"))["PPD_LoadGeometryModel"]().load(
            "moge2_vitl_normal.pt")
    msg = str(info.value)
    assert "1 missing" in msg and "ppd.pth" not in msg


def test_video_progress_from_the_first_window_and_cancel_within_a_block(pack, comfy_env, cancel_at_check,
                                                                         progress_seen):
    write_tiny_ppvd(ppd_dir(comfy_env))
    model, = node(pack, "PPD_LoadVideoModel").load("ppvd.pth", "pi3.safetensors", "auto")
    ran: list[int] = []
    seen = progress_seen()
    blocks = [m for name, m in model.patcher.model.named_modules() if name.split(".")[-2:-1] == ["blocks"]]
    assert blocks
    hooks = [b.register_forward_hook(lambda *_: ran.append(1)) for b in blocks]
    cancel_at_check(2)                                           # Cancel just before the 2nd check
    try:
        with pytest.raises(comfy_env.InterruptProcessingException):
            node(pack, "PPD_VideoDepth").predict(model, torch.rand(20, 20, 28, 3), 2, 0, process_width=32,
                                                 process_height=32)
    finally:
        for h in hooks:
            h.remove()
    assert [v for v, _ in seen] == [0]    # the bar showed the run at once, before the first window's encoder
    assert len(ran) == 1                  # one block ran after the first check; Cancel stopped the next one
    assert all(not b._forward_pre_hooks for b in blocks)         # the checks are removed again


def test_moge2_summary_writes_w_x_h(pack, comfy_env):
    m = node_classes(pack)
    model, = m["PPD_LoadGeometryModel"]().load("moge2_vitl_normal.pt")
    out = m["PPD_MoGe2Geometry"]().estimate(model, torch.rand(1, 40, 60, 3), 0, 0.0, True,
                                            "ControlNet NormalBae (R left, G up, B toward camera)")
    summary = out[4]
    assert summary.startswith("image 1: 60 x 40 (W x H)") and out["ui"]["text"] == [summary]


def test_pairing_warning_reads_well(pack, comfy_env):
    text = load(pack, "ppd.pth", "moge2_vitl_normal.pt", "auto")["ui"]["text"][0]
    assert "decided guessed" not in text
    assert "(guessed from the file name" in text


@pytest.mark.parametrize("output_size, png", [("input", (64, 48)), ("processing", (128, 96))])
def test_save_depth_preview_has_the_size_of_the_png_it_lists(pack, comfy_env, output_size, png):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    packet = {"depth": (0.6 * yy + 0.4 * xx)[None, None], "spread": None, "image": torch.rand(1, 3, 96, 128),
              "input_size": (48, 64), "kind": "ppd"}                 # PPD worked at twice the input size
    out = node(pack, "PPD_SaveDepth").save(packet, "sized/d", True, "near = white", False, False, output_size)
    saved = Image.open(Path(comfy_env.folder_paths.get_output_directory()) / "sized" / "d_00001_.png")
    preview, = out["ui"]["images"]
    shown = Image.open(Path(comfy_env.folder_paths.get_temp_directory()) / preview["subfolder"] / preview["filename"])
    assert saved.size == shown.size == png
    assert f"d_00001_.png: {png[0]} x {png[1]}" in out["ui"]["text"][0]
    grey = np.asarray(shown, dtype=np.float64)[..., 0] / 255
    assert np.abs(grey - np.asarray(saved, dtype=np.float64) / 65535).max() <= 0.5 / 255 + 1 / 65535


def test_each_summary_is_shown_once_through_core_progress_text(pack, comfy_env):
    """The text goes to the node once, through core's progress text; the UI output carries no copy that a
    frontend drawing ui.text would show a second time."""
    model, info = load(pack, "ppd.pth", "depth_anything_v2_vitl.pth", "auto")
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, torch.rand(1, 32, 48, 3), "custom long side", 64)
    sampled = node(pack, "PPD_DepthSampler").sample(model, sem, 1, 0)
    saved = node(pack, "PPD_SaveDepth").save(sampled[0], "once/d", True, "near = white", True, False, "input")
    for out in (sampled, saved):
        assert len(out.texts) == 1 and "text" not in out.node_ui
    assert saved.node_ui.keys() == {"images"}


def test_an_older_core_gets_one_line_naming_the_version(monkeypatch, caplog):
    require_comfyui()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "comfy_api.latest" else real(name, *a))
    name = "ppd_pack_on_an_old_core"
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    with caplog.at_level(logging.ERROR, logger="comfyui_ppd"):
        spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {} and not hasattr(module, "comfy_entrypoint")
    lines = [r.getMessage() for r in caplog.records if r.name == "comfyui_ppd"]
    assert len(lines) == 1 and "need ComfyUI 0.3.64 or newer" in lines[0]
    assert name + ".nodes" not in sys.modules                       # nothing of the V3 nodes was imported
