"""The pack runs its own engine: ComfyUI-style loading with a decoy `comfyui_ppd` first on sys.path."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from plumbing import REPO, require_comfyui


def test_pack_uses_its_own_engine_with_a_decoy_first_on_sys_path(tmp_path, monkeypatch):
    require_comfyui()
    decoy = tmp_path / "site" / "comfyui_ppd"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy comfyui_ppd was imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "comfyui_ppd" or m.startswith("comfyui_ppd.")]:
        monkeypatch.delitem(sys.modules, name)            # as in a fresh ComfyUI process

    name = "ppd_pack_under_decoy"                          # ComfyUI: the custom_nodes folder's name
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)

    assert "PPD_LoadModel" in {cls.GET_SCHEMA().node_id for cls in module.nodes.NODES}
    engine = sys.modules[name + ".nodes.model"].ppd_steps
    assert Path(engine.__file__).resolve() == REPO / "comfyui_ppd" / "families" / "ppd" / "steps.py"
    assert engine.__name__ == name + ".comfyui_ppd.families.ppd.steps"
    assert "comfyui_ppd" not in sys.modules                # nothing imported the top-level (decoy) name
