"""ComfyUI's error box starts with `exception_type` (module + class name): the pack's errors must read as the
engine's short name there, not as the pack folder's full path under which ComfyUI imports the pack."""
from __future__ import annotations

import importlib
import pickle

import pytest

from comfyui_ppd import errors
from plumbing import REAL_COMFY


def type_name(klass: type) -> str:
    """core's execution.full_type_name, for checks without a ComfyUI (the real one is used below when present)."""
    return klass.__qualname__ if klass.__module__ == "builtins" else f"{klass.__module__}.{klass.__qualname__}"


def test_pack_errors_carry_the_engines_module_name_inside_comfyui(pack):
    loaded = importlib.import_module(pack.__name__ + ".comfyui_ppd.errors")   # as ComfyUI imports it, in the pack
    assert loaded.__name__ != "comfyui_ppd.errors"
    for name in ("PPDError", "CheckpointError", "InputError"):
        assert type_name(getattr(loaded, name)) == f"comfyui_ppd.errors.{name}"


def test_errors_still_pickle_by_reference_for_batch_workers():
    e = errors.InputError("bad image")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is errors.InputError and str(back) == "bad image"


@pytest.mark.skipif(not REAL_COMFY, reason="needs a real ComfyUI (COMFY_DIR): core's own type naming")
def test_cores_execution_error_names_the_error_shortly(pack):
    from core_modules import use_comfy_nodes
    use_comfy_nodes()
    import execution
    name = execution.full_type_name(importlib.import_module(pack.__name__ + ".comfyui_ppd.errors").CheckpointError)
    assert name == "comfyui_ppd.errors.CheckpointError" and "/" not in name
