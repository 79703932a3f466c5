"""The shipped workflows against the real node definitions (what /object_info serves), their layout, and one
workflow saved by the previous release. .ci/workflows.sh runs them all through a real ComfyUI server."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pack_nodes import node_classes
from plumbing import REPO

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
PREVIOUS = sorted((REPO / "tests" / "support" / "data" / "previous_release").glob("*.json"))


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
def test_workflow_is_fresh_install_friendly(path):
    """Fixed seeds (a colour-map tweak must not re-run the sampler), and only download metadata that frontend
    1.45 offers (model suffixes of its isModelDownloadable; 1.27 would accept only .safetensors/.sft)."""
    workflow = json.loads(path.read_text())
    for node in workflow["nodes"]:
        assert "randomize" not in (node.get("widgets_values") or []), f"{path.name}: node {node['id']} randomizes"
        for model in (node.get("properties") or {}).get("models", []):
            assert model.get("url", ".sft").endswith((".safetensors", ".sft", ".ckpt", ".pth", ".pt")), \
                f"{path.name}: {model['name']}"


WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def ppd_specs(pack) -> dict[str, dict]:
    """{node id: {"widgets": [names], "inputs": {name: type}, "outputs": [types]}} from the real V1 info."""
    specs = {}
    for node_id, ref in node_classes(pack).items():
        widgets, sockets = [], {}
        for section in ("required", "optional"):
            for name, (kind, *_) in ref.info["input"].get(section, {}).items():
                kind = "COMBO" if isinstance(kind, list) else kind
                if kind in WIDGETS:
                    widgets.append(name)
                else:
                    sockets[name] = kind
        specs[node_id] = {"widgets": widgets, "inputs": sockets, "outputs": list(ref.info["output"])}
    return specs


def widget_count(spec: dict) -> int:
    """The number of widget values the frontend stores for a node: one per widget, plus the
    control_after_generate value after a seed."""
    return len(spec["widgets"]) + spec["widgets"].count("seed")


@pytest.mark.parametrize("path", WORKFLOWS + PREVIOUS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_ppd_nodes_match_the_real_definitions(pack, path):
    """Every PPD node of the workflow (shipped, or saved by the previous release) has the node's widgets and
    sockets: the same ids, input names and types keep saved workflows loading."""
    workflow = json.loads(path.read_text())
    specs = ppd_specs(pack)
    links = {link[0]: link for link in workflow["links"]}
    checked = 0
    for node in workflow["nodes"]:
        if not node["type"].startswith("PPD_"):
            continue
        spec = specs[node["type"]]
        assert len(node.get("widgets_values") or []) == widget_count(spec), (path.name, node["type"])
        for slot in node.get("inputs", []):
            if slot.get("link") is None or slot.get("widget"):
                continue
            assert slot["name"] in spec["inputs"], (node["type"], slot["name"])
            assert links[slot["link"]][5] in (spec["inputs"][slot["name"]], "*"), (node["type"], slot["name"])
            checked += 1
        for i, slot in enumerate(node.get("outputs", [])):
            assert slot["type"] == spec["outputs"][i], (node["type"], slot["name"])
    assert checked


def test_previous_release_workflow_is_the_one_it_shipped():
    """tests/support/data/previous_release holds the metric workflow as release d3c10a4 saved it (V1 nodes)."""
    assert [p.name for p in PREVIOUS] == ["ppd_metric_point_cloud.json"]
    nodes = json.loads(PREVIOUS[0].read_text())["nodes"]
    assert {"PPD_LoadGeometryModel", "PPD_MoGe2Geometry", "PPD_DepthToPointCloud"} <= {n["type"] for n in nodes}


# After a run a node is taller than saved: the text a PPD node shows (core's progress text) and image
# previews are drawn inside it. These allowances (px) are generous; the test asks for clear space around each.
TITLE = 30
TEXT_ROOM = 120
PREVIEW_ROOM = 220
SHOWS_TEXT = {"PPD_LoadModel", "PPD_DepthSampler", "PPD_SaveDepth", "PPD_DepthToPointCloud", "PPD_SavePointCloud",
              "PPD_EdgeMetricPreview", "PPD_MoGe2Geometry", "PPD_VideoDepth", "PPD_FlickerMetric",
              "PPD_TiledDepth"}
SHOWS_IMAGES = {"PPD_SaveDepth", "PPD_EdgeMetricPreview", "PPD_SavePointCloud"}
GAP = 20


def boxes_after_run(workflow: dict) -> list[tuple[str, float, float, float, float]]:
    """(label, left, top, right, bottom) of every node including its title bar, grown as after a run."""
    out = []
    for node in workflow["nodes"]:
        x, y = node["pos"]
        w, h = node["size"]
        h += TEXT_ROOM if node["type"] in SHOWS_TEXT else 0
        h += PREVIEW_ROOM if node["type"] in SHOWS_IMAGES else 0
        out.append((f"{node['id']} {node['type']}", x, y - TITLE, x + w, y + h))
    return out


def overlaps(workflow: dict) -> list[str]:
    boxes = boxes_after_run(workflow)
    found = []
    for i, (a, l1, t1, r1, b1) in enumerate(boxes):
        for b, l2, t2, r2, b2 in boxes[i + 1:]:
            if not (l1 >= r2 + GAP or l2 >= r1 + GAP or t1 >= b2 + GAP or t2 >= b1 + GAP):
                found.append(f"{a} / {b}")
    return found


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_no_node_covers_another_after_a_run(path):
    assert overlaps(json.loads(path.read_text())) == [], f"{path.name}: nodes closer than {GAP} px after a run"


def test_overlap_check_sees_an_overlap():
    workflow = {"nodes": [{"id": 1, "type": "PPD_DepthRender", "pos": [0, 0], "size": [300, 170]},
                          {"id": 2, "type": "CreateVideo", "pos": [310, 0], "size": [300, 100]},
                          {"id": 3, "type": "PPD_SaveDepth", "pos": [0, 250], "size": [300, 300]}]}
    assert overlaps(workflow) == ["1 PPD_DepthRender / 2 CreateVideo"]
