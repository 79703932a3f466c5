"""The shipped workflows: UI format converted to API format, wiring checked, PPD parts executed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import comfy_workflow as cw

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))


@pytest.fixture()
def env(comfy_env):
    """The stand-in ComfyUI with tiny models and the workflows' input files (a photo, 3 animated frames)."""
    fp = comfy_env.folder_paths
    inputs = Path(fp.get_input_directory())
    inputs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((60, 80, 3)) * 255).astype("uint8")).save(inputs / "ppd_example.png")
    frames = [Image.fromarray((rng.random((48, 64, 3)) * 255).astype("uint8")) for _ in range(3)]
    frames[0].save(inputs / "ppd_frames.webp", save_all=True, append_images=frames[1:], lossless=True)
    return fp


def defs(pack):
    return {**cw.load_core_node_defs(),
            **cw.node_defs_from_classes(pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS)}


def test_expected_workflows_ship_with_thumbnails():
    names = {p.stem for p in WORKFLOWS}
    assert {"ppd_depth_basic", "ppd_controlnet_depth", "ppd_batch_video_frames", "ppd_point_cloud",
            "ppd_edge_metric", "ppd_metric_point_cloud", "ppd_video_depth"} <= names
    for path in WORKFLOWS:
        assert path.with_suffix(".jpg").is_file(), f"{path.name} has no thumbnail"


# Folder names ComfyUI (app/custom_node_manager.py) serves as a pack's workflow templates, in its order; each
# found folder gets the same /api/workflow_templates/<pack> route, so an earlier one would shadow workflows/.
TEMPLATE_FOLDERS = ["example_workflows", "example", "examples", "workflow", "workflows"]


def test_only_workflows_folder_is_a_template_folder():
    """The template browser must find the workflows: no other folder of the pack may carry a template name."""
    root = Path(__file__).resolve().parents[2]
    present = [name for name in TEMPLATE_FOLDERS if (root / name).is_dir()]
    assert present == ["workflows"], present
    assert {p.suffix for p in (root / "workflows").iterdir()} <= {".json", ".jpg"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_wiring(pack, path):
    workflow = json.loads(path.read_text())
    assert workflow.get("version") == 0.4 and "definitions" not in workflow        # no subgraphs
    assert cw.check_wiring(workflow, defs(pack)) == []
    prompt = cw.ui_to_api(workflow, defs(pack))
    assert any(e["class_type"].startswith("PPD_") for e in prompt.values())
    third_party = {e["class_type"] for e in prompt.values()} - set(defs(pack))
    assert not third_party, f"nodes from other packs: {third_party}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_is_fresh_install_friendly(path):
    """Fixed seeds (a colour-map tweak must not re-run the sampler), and no download metadata the
    frontend refuses: its Missing Models dialog only accepts .safetensors/.sft URLs."""
    workflow = json.loads(path.read_text())
    for node in workflow["nodes"]:
        assert "randomize" not in (node.get("widgets_values") or []), f"{path.name}: node {node['id']} randomizes"
        for model in (node.get("properties") or {}).get("models", []):
            assert model["url"].endswith((".safetensors", ".sft")), f"{path.name}: {model['name']}"


def run(pack, name, env):
    workflow = json.loads((Path(__file__).resolve().parents[2] / "workflows" / f"{name}.json").read_text())
    prompt = cw.ui_to_api(workflow, defs(pack))
    result = cw.run_api_prompt(prompt, pack.NODE_CLASS_MAPPINGS, cw.image_loader(env.get_input_directory()),
                               skip_core=True)
    return prompt, result


def by_type(prompt, kind):
    return [i for i, e in prompt.items() if e["class_type"] == kind]


def test_basic_workflow_runs(pack, env):
    prompt, result = run(pack, "ppd_depth_basic", env)
    sampler, = by_type(prompt, "PPD_DepthSampler")
    depth, image = result.outputs[sampler]
    assert depth["depth"].shape == (1, 1, 768, 1024) and image.shape == (1, 60, 80, 3)   # 1024x768 area
    render, = by_type(prompt, "PPD_DepthRender")
    assert result.outputs[render][0].shape == (1, 60, 80, 3)
    save, = by_type(prompt, "PPD_SaveDepth")
    assert result.ui[save]["images"]
    written = sorted(p.name for p in (Path(env.get_output_directory()) / "ppd").iterdir())
    assert written == ["depth_00001_.png", "depth_00001_1024x768.npy"]     # raw at the processing size
    assert set(result.skipped) == set(by_type(prompt, "PreviewImage"))


def test_batch_workflow_runs_on_all_frames_with_one_range(pack, env):
    prompt, result = run(pack, "ppd_batch_video_frames", env)
    sampler, = by_type(prompt, "PPD_DepthSampler")
    depth, _ = result.outputs[sampler]
    assert depth["depth"].shape[0] == 3
    render, = by_type(prompt, "PPD_DepthRender")
    assert prompt[render]["inputs"]["normalization"] == "whole batch"
    grey = result.outputs[render][1]
    assert float(grey.min()) == 0.0 and float(grey.max()) == 1.0
    per_frame_max = grey.flatten(1).max(1).values
    assert (per_frame_max < 1).any() or (grey.flatten(1).min(1).values > 0).any()   # not stretched per frame
    files = sorted(p.name for p in (Path(env.get_output_directory()) / "ppd").iterdir())
    w, h = depth["depth"].shape[-1], depth["depth"].shape[-2]           # raw files at the processing size
    assert [f for f in files if f.endswith(".exr")] == [f"frames_0000{i}_{w}x{h}.exr" for i in (1, 2, 3)]


def test_controlnet_workflow_feeds_near_white_depth_to_core_controlnet(pack, env):
    prompt, result = run(pack, "ppd_controlnet_depth", env)
    apply, = by_type(prompt, "ControlNetApplyAdvanced")
    sampler, = by_type(prompt, "PPD_DepthSampler")
    assert prompt[apply]["inputs"]["image"] == [sampler, 1]                   # the depth_image output
    assert sampler in result.outputs and apply in result.skipped              # PPD ran; core only wired
    loader, = by_type(prompt, "ControlNetLoader")
    assert "depth" in prompt[loader]["inputs"]["control_net_name"]


def run_with_overrides(pack, name, env, **values):
    """Run a workflow after changing widget values of PPD nodes (tiny random models give depth far outside
    the real model's ~[0, 1], so the point-cloud range is widened to keep every point in front of the camera)."""
    workflow = json.loads((Path(__file__).resolve().parents[2] / "workflows" / f"{name}.json").read_text())
    prompt = cw.ui_to_api(workflow, defs(pack))
    for entry in prompt.values():
        for key, value in values.items():
            if key in entry["inputs"] and entry["class_type"].startswith("PPD_"):
                entry["inputs"][key] = value
    return prompt, cw.run_api_prompt(prompt, pack.NODE_CLASS_MAPPINGS, cw.image_loader(env.get_input_directory()),
                                     skip_core=True)


def test_point_cloud_workflow_saves_files_for_preview3d(pack, env):
    prompt, result = run_with_overrides(pack, "ppd_point_cloud", env, near=5.0, far=6.0)
    save, = by_type(prompt, "PPD_SavePointCloud")
    glb, ply, _ = result.outputs[save]
    preview, = by_type(prompt, "Preview3D")
    assert prompt[preview]["inputs"]["model_file"] == [save, 0]               # the GLB path goes to Preview 3D
    out = Path(env.get_output_directory())
    assert glb.endswith(".glb") and (out / glb).is_file() and (out / ply).is_file()
    header = (out / ply).read_bytes()[:200].decode("ascii", "replace")
    assert "element vertex 786432" in header                                 # 1024 x 768: the native grid


def test_metric_point_cloud_workflow_uses_moge2_scale_and_camera(pack, env):
    prompt, result = run(pack, "ppd_metric_point_cloud", env)
    geometry, = by_type(prompt, "PPD_MoGe2Geometry")
    to_points, = by_type(prompt, "PPD_DepthToPointCloud")
    assert prompt[to_points]["inputs"]["geometry"] == [geometry, 0]
    packet, normal_map, *_ = result.outputs[geometry]
    assert packet["depth"].shape == (1, 60, 80) and normal_map.shape == (1, 60, 80, 3)
    assert [i for i in by_type(prompt, "PreviewImage") if prompt[i]["inputs"]["images"] == [geometry, 1]]
    frame = result.outputs[to_points][0]["frames"][0]
    assert frame["depth"].shape == (768, 1024)                                # the PPD grid, in metres
    ref = packet["depth"][0][packet["mask"][0]]
    assert float(frame["depth"].max()) <= float(ref.max()) + 1e-3             # clipped to MoGe-2's range
    save, = by_type(prompt, "PPD_SavePointCloud")
    glb, ply, _ = result.outputs[save]
    assert prompt[by_type(prompt, "Preview3D")[0]]["inputs"]["model_file"] == [save, 0]
    out = Path(env.get_output_directory())
    assert (out / glb).is_file() and (out / ply).is_file()


def test_edge_metric_workflow_reports_numbers(pack, env):
    prompt, result = run_with_overrides(pack, "ppd_edge_metric", env, near=5.0, far=6.0)
    metric, = by_type(prompt, "PPD_EdgeMetricPreview")
    heatmap, edge_ratio, image_ratio, count, chamfer, *_, summary = result.outputs[metric]
    assert heatmap.shape[-1] == 3 and 0 <= edge_ratio <= 1 and 0 <= image_ratio <= 1
    assert chamfer != chamfer                                                 # NaN without ground truth
    assert isinstance(summary, str) and summary
    preview_any, = by_type(prompt, "PreviewAny")
    assert prompt[preview_any]["inputs"]["source"] == [metric, 7]


def video_stand_ins(input_dir: Path) -> dict:
    """Core LoadVideo and GetVideoComponents for the executor: the file decoded with PyAV, its frames as an
    IMAGE batch (N,H,W,3) in [0,1] and its frame rate, as the real nodes give them."""
    from comfyui_ppd.io.video import read_video

    class LoadVideo:
        FUNCTION, RETURN_TYPES = "load", ("VIDEO",)

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"file": (sorted(p.name for p in input_dir.iterdir()),)}}

        def load(self, file):
            return (read_video(input_dir / file),)

    class GetVideoComponents:
        FUNCTION, RETURN_TYPES = "split", ("IMAGE", "AUDIO", "FLOAT")

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"video": ("VIDEO",)}}

        def split(self, video):
            return (video.rgb.float() / 255, None, video.fps)

    return {"LoadVideo": LoadVideo, "GetVideoComponents": GetVideoComponents}


def test_video_workflow_runs_the_video_model_on_the_clip(pack, env):
    """The shipped clip (24 frames, 256x192) through the video nodes; the processing size is lowered to 64x64
    for speed (tiny random models; the real-ComfyUI harness runs the workflow as shipped)."""
    pytest.importorskip("av", reason="the video workflow test decodes example_inputs/ppd_clip.mp4 with PyAV")
    import shutil

    from tiny_ppvd import write_tiny_ppvd
    inputs = Path(env.get_input_directory())
    shutil.copy(Path(__file__).resolve().parents[2] / "example_inputs" / "ppd_clip.mp4", inputs / "ppd_clip.mp4")
    write_tiny_ppvd(Path(env.get_folder_paths("ppd")[-1]))
    workflow = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "ppd_video_depth.json").read_text())
    prompt = cw.ui_to_api(workflow, defs(pack))
    video, = by_type(prompt, "PPD_VideoDepth")
    assert (prompt[video]["inputs"]["process_width"], prompt[video]["inputs"]["process_height"]) == (512, 512)
    prompt[video]["inputs"].update(process_width=64, process_height=64)
    result = cw.run_api_prompt(prompt, {**pack.NODE_CLASS_MAPPINGS, **video_stand_ins(inputs)}, skip_core=True)
    packet, depth_image, summary, per_frame = result.outputs[video]
    assert packet["depth"].shape == (24, 1, 192, 256) and depth_image.shape == (24, 192, 256, 3)
    assert "24 frames 256x192, 2 window(s)" in summary and len(per_frame.splitlines()) == 25
    render, = by_type(prompt, "PPD_DepthRender")
    assert (prompt[render]["inputs"]["mode"], prompt[render]["inputs"]["normalization"]) == ("controlnet",
                                                                                          "whole batch")
    assert result.outputs[render][0].shape == (24, 192, 256, 3)
    components, = by_type(prompt, "GetVideoComponents")
    for create in by_type(prompt, "CreateVideo"):                             # the clip's own frame rate
        assert prompt[create]["inputs"]["fps"] == [components, 2]
    stitch, = by_type(prompt, "ImageStitch")
    assert prompt[stitch]["inputs"]["image1"] == [components, 0] and prompt[stitch]["inputs"]["image2"] == [render, 0]
    assert set(result.skipped) == set(by_type(prompt, "CreateVideo") + by_type(prompt, "SaveVideo")
                                      + [stitch] + by_type(prompt, "PreviewAny"))
