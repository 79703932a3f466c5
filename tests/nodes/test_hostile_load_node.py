"""Load PPD Model with a DiT whose `model_config` metadata is corrupt (issue 18): the engine's clean message,
naming the file, not a JSONDecodeError, AttributeError or RecursionError."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hostile_files import BAD_CONFIGS, dit_with_config

from pack_nodes import node_classes


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_load_node_shows_the_clean_message_for_corrupt_metadata(pack, comfy_env, case):
    folder = Path(comfy_env.folder_paths.get_folder_paths("ppd")[0])
    path = dit_with_config(folder / "ppd_bad.safetensors", BAD_CONFIGS[case])
    pack_error = importlib.import_module(pack.__name__ + ".comfyui_ppd.errors").CheckpointError
    with pytest.raises(pack_error) as info:
        node_classes(pack)["PPD_LoadModel"]().load(path.name, "depth_anything_v2_vitl.pth", "auto")
    msg = str(info.value)
    assert str(path) in msg and "model_config" in msg and "Error" not in msg.replace(str(path), ""), msg
