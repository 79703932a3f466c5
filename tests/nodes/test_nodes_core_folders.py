"""MoGe-2 where ComfyUI users put it: core's models/geometry_estimation (registered as core 0.27.0 does, also
on older cores), in the official model.pt layout and in the layout core's LoadMoGeModel loads."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from plumbing import REAL_COMFY
from tiny_models import tiny_moge2_full_checkpoint

pytestmark = pytest.mark.skipif(not REAL_COMFY, reason="needs a real ComfyUI (set COMFY_DIR): the nodes are V3 "
                                                       "nodes of comfy_api")
FOLDER = "geometry_estimation"


@pytest.fixture()
def geo(pack, comfy_env, monkeypatch):
    """models/geometry_estimation registered by the pack on a core that lacks it (the fixture removes core's)."""
    fp = comfy_env.folder_paths
    monkeypatch.delitem(fp.folder_names_and_paths, FOLDER, raising=False)
    pack.nodes.common.register_model_folder()
    folder = Path(fp.models_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_folder_is_registered_as_core_does(pack, geo, comfy_env):
    fp = comfy_env.folder_paths
    assert fp.folder_names_and_paths[FOLDER] == ([str(geo)], set(fp.supported_pt_extensions))


def test_a_yaml_entry_of_an_old_core_keeps_its_path_and_gets_core_extensions(pack, comfy_env, monkeypatch, tmp_path):
    fp = comfy_env.folder_paths
    monkeypatch.delitem(fp.folder_names_and_paths, FOLDER, raising=False)
    fp.add_model_folder_path(FOLDER, str(tmp_path / "shared"))     # what extra_model_paths.yaml does first
    pack.nodes.common.register_model_folder()
    paths, exts = fp.folder_names_and_paths[FOLDER]
    assert paths == [str(tmp_path / "shared"), os.path.join(fp.models_dir, FOLDER)]
    assert exts == set(fp.supported_pt_extensions)


def test_geometry_files_there_are_offered_and_load_others_are_not(pack, geo, comfy_env):
    model = pack.nodes.common
    torch.save(tiny_moge2_full_checkpoint(), geo / "moge2_official.pt")
    torch.save({"head.depth.weight": torch.zeros(2)}, geo / "da3_like.pt")          # another model of the folder
    choices = model.model_choices("geometry")
    assert "moge2_official.pt" in choices and "da3_like.pt" not in choices
    assert "moge2_vitl_normal.pt" in choices                                       # models/ppd's still first
    assert choices.index("moge2_vitl_normal.pt") < choices.index("moge2_official.pt")
    assert "moge2_official.pt" not in model.model_choices("dit")
    assert model.model_paths({"geometry": "moge2_official.pt"})["geometry"] == str(geo / "moge2_official.pt")
    loaded = pack.nodes.geometry.PPD_LoadGeometryModel.execute("moge2_official.pt").result[0]
    assert loaded.engine.has_normal and loaded.names == ("moge2_official.pt",)


@pytest.mark.skipif(not REAL_COMFY, reason="needs a real ComfyUI 0.27+ (COMFY_DIR): core's remap makes the layout")
def test_a_file_in_cores_layout_is_offered_and_loads(pack, geo, comfy_env):
    model_py = pytest.importorskip("comfy.ldm.moge.model", reason="this ComfyUI has no native MoGe (0.27.0 added it)")
    ckpt = tiny_moge2_full_checkpoint()
    torch.save(model_py._remap_state_dict(dict(ckpt["model"])), geo / "moge2_core.pt")
    torch.save(ckpt["model"], geo / "moge2_plain.pt")      # the same weights, official keys, no model_config either
    assert "moge2_core.pt" in pack.nodes.common.model_choices("geometry")
    load = pack.nodes.geometry.PPD_LoadGeometryModel.execute
    image = torch.rand(1, 40, 60, 3)
    args = {"resolution_level": 0, "fov_x": 0.0, "apply_mask": True,
            "normal_convention": "ControlNet NormalBae (R left, G up, B toward camera)"}
    run = pack.nodes.geometry.PPD_MoGe2Geometry.execute
    a = run(load("moge2_core.pt").result[0], image, **args).result[0]
    b = run(load("moge2_plain.pt").result[0], image, **args).result[0]
    assert torch.equal(a["depth"], b["depth"]) and torch.equal(a["intrinsics"], b["intrinsics"])
