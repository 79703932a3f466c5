"""PPD Tiled Depth (a V3 node): the full-size packet, the cost on the node, progress, Cancel. Needs a core with
the V3 API (run with COMFY_DIR pointing at ComfyUI 0.3.64 or newer) and the pack's V3 nodes (nodes/common.py)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("comfy_api.latest")

from comfyui_ppd.tiling import pass_count  # noqa: E402  (pure arithmetic: either copy of the engine)

TILE_W, TILE_H = 128, 96


@pytest.fixture()
def model(pack, monkeypatch, request):
    if not hasattr(pack.nodes, "tiled"):
        pytest.skip("PPD Tiled Depth is registered with the V3 nodes (nodes/__init__.py NODES, branch v3-nodes)")
    if not hasattr(pack.nodes.model, "register_model_folder"):   # until conftest follows the V3 move to common
        monkeypatch.setattr(pack.nodes.model, "register_model_folder", pack.nodes.common.register_model_folder,
                            raising=False)
    request.getfixturevalue("comfy_env")
    return pack.nodes.model.PPD_LoadModel.execute("ppd.pth", "depth_anything_v2_vitl.pth", "fp32").result[0]


def run(pack, model, image, **kw):
    args = {"steps": 1, "seed": 0, "tile_width": TILE_W, "tile_height": TILE_H, "overlap": 0.25, **kw}
    return pack.nodes.tiled.PPD_TiledDepth.execute(model, image, **args).result


def test_a_batch_gives_full_size_depth_the_cost_and_progress(pack, model, monkeypatch):
    shown, bars = [], []
    monkeypatch.setattr(pack.nodes.tiled, "show_text", lambda cls, text: shown.append(text))
    real_progress = pack.nodes.tiled.progress
    monkeypatch.setattr(pack.nodes.tiled, "progress", lambda total, node: bars.append(total) or real_progress(total,
                                                                                                            node))
    image = torch.rand(2, 100, 170, 3, generator=torch.Generator().manual_seed(0))
    packet, depth_image = run(pack, model, image, ensemble_size=2)
    passes = pass_count(100, 170, (TILE_H, TILE_W), 0.25)
    assert packet["depth"].shape == (2, 1, 100, 170) and packet["input_size"] == (100, 170)
    assert packet["image"].shape == (2, 3, 100, 170) and packet["kind"] == "ppd" and packet["spread"] is None
    assert depth_image.shape == (2, 100, 170, 3)
    assert f"{passes - 1} tiles, ~{passes}x the time of one pass" in shown[0] and "ensemble of 2" in shown[0]
    assert bars == [2 * passes * 2 * 1]                    # images x passes x seeds x steps


def test_cancel_stops_the_node(pack, model, cancel_at_check, comfy_env):
    cancel_at_check(3)
    with pytest.raises(comfy_env.InterruptProcessingException):
        run(pack, model, torch.rand(1, 100, 170, 3))
    comfy_env.mm.interrupt_current_processing(False)


def test_bad_tiling_is_refused(pack, model):
    with pytest.raises(pack.comfyui_ppd.errors.InputError, match="overlap"):     # the pack's own copy
        run(pack, model, torch.rand(1, 100, 170, 3), overlap=0.9)
