"""PPD Tiled Depth on the real ComfyUI modules: the full-size packet the other nodes take, the cost shown on the
node, one progress bar over every pass, Cancel, a bad overlap refused."""
from __future__ import annotations

import pytest
import torch

from comfyui_ppd.tiling import pass_count
from pack_nodes import node

TILE_W, TILE_H = 128, 96


@pytest.fixture()
def model(pack, comfy_env):
    return node(pack, "PPD_LoadModel").load("ppd.pth", "depth_anything_v2_vitl.pth", "fp32")["result"][0]


def tiled(pack, model, image, **kw):
    args = {"steps": 1, "seed": 0, "tile_width": TILE_W, "tile_height": TILE_H, "overlap": 0.25, **kw}
    return node(pack, "PPD_TiledDepth").run(model, image, **args)


def test_a_batch_gives_full_size_depth_the_cost_and_one_progress_bar(pack, model, monkeypatch):
    bars = []
    real_progress = pack.nodes.tiled.progress
    monkeypatch.setattr(pack.nodes.tiled, "progress", lambda total, nid: bars.append(total) or real_progress(total,
                                                                                                           nid))
    image = torch.rand(2, 100, 170, 3, generator=torch.Generator().manual_seed(0))
    out = tiled(pack, model, image, ensemble_size=2)
    packet, depth_image = out["result"]
    passes = pass_count(100, 170, (TILE_H, TILE_W), 0.25)
    assert packet["depth"].shape == (2, 1, 100, 170) and packet["input_size"] == (100, 170)
    assert packet["image"].shape == (2, 3, 100, 170) and packet["kind"] == "ppd" and packet["spread"] is None
    assert depth_image.shape == (2, 100, 170, 3)
    assert f"{passes - 1} tiles, ~{passes}x the time of one pass" in out.texts[0] and "ensemble of 2" in out.texts[0]
    assert bars == [2 * passes * 2 * 1]                    # images x passes x seeds x steps
    metric = node(pack, "PPD_EdgeMetricPreview").run("PPD log-depth", 60.0, 0.0, 1.0, 10.0, ppd_depth=packet)
    assert metric["result"][0].shape[1:3] == (100, 170)    # the Edge Metric reads the full-size packet


def test_cancel_stops_the_node(pack, model, cancel_at_check, comfy_env):
    cancel_at_check(3)
    with pytest.raises(comfy_env.InterruptProcessingException):
        tiled(pack, model, torch.rand(1, 100, 170, 3))
    comfy_env.mm.interrupt_current_processing(False)


def test_bad_tiling_is_refused(pack, model):
    with pytest.raises(pack.comfyui_ppd.errors.InputError, match="overlap"):     # the pack's own copy
        tiled(pack, model, torch.rand(1, 100, 170, 3), overlap=0.9)
