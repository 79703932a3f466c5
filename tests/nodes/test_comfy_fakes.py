"""tests/support/fakes: the ComfyUI fakes match real ComfyUI's signatures and keep the behaviour nodes rely on.

The fakes are installed by conftest.py only when no real ComfyUI is importable ($COMFY_DIR); the
comfy.* behaviour tests then run on the installed fakes, folder_paths on a fresh copy per test.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import os
from pathlib import Path

import pytest
import torch

from plumbing import REAL_COMFY

REPO = Path(__file__).resolve().parents[2]
FAKES = REPO / "tests" / "support" / "fakes"
SIGNATURES = json.loads((REPO / "tests" / "support" / "data" / "comfy_signatures.json").read_text())["signatures"]
needs_fakes = pytest.mark.skipif(REAL_COMFY, reason="a real ComfyUI is installed; the fakes are not used")


def fresh_folder_paths(base: Path | None = None, monkeypatch=None):
    """A new copy of the fake folder_paths module (module-level state, like ComfyUI's), rooted at `base`."""
    if base is not None:
        monkeypatch.setenv("PPD_COMFY_BASE", str(base))
    spec = importlib.util.spec_from_file_location("fake_folder_paths_under_test", FAKES / "folder_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def describe(fn) -> list:
    """[name, kind, repr(default) or None] per parameter, the format of comfy_signatures.json."""
    return [[p.name, p.kind.name, None if p.default is inspect.Parameter.empty else repr(p.default)]
            for p in inspect.signature(fn).parameters.values()]


def resolve(key: str, owners: dict):
    owner, name = key.split(".")
    return getattr(owners[owner], name)


def owners(folder_paths) -> dict:
    import comfy.model_management
    import comfy.model_patcher
    import comfy.utils
    return {"folder_paths": folder_paths, "model_management": comfy.model_management,
            "ModelPatcher": comfy.model_patcher.ModelPatcher, "ProgressBar": comfy.utils.ProgressBar}


@needs_fakes
@pytest.mark.parametrize("key", sorted(SIGNATURES))
def test_fake_signature_matches_comfyui(key):
    import folder_paths
    assert describe(resolve(key, owners(folder_paths))) == SIGNATURES[key]


@pytest.mark.skipif(not REAL_COMFY, reason="needs a ComfyUI checkout ($COMFY_DIR)")
def test_stored_signatures_match_the_running_comfyui():
    import folder_paths
    real = owners(folder_paths)
    drift = {k: describe(resolve(k, real)) for k in SIGNATURES if describe(resolve(k, real)) != SIGNATURES[k]}
    assert drift == {}


def test_fakes_are_only_installed_without_comfyui():
    import folder_paths
    assert (Path(folder_paths.__file__).parent == FAKES) != REAL_COMFY


def test_default_fake_base_is_outside_the_repository(monkeypatch):
    monkeypatch.delenv("PPD_COMFY_BASE", raising=False)
    base = Path(fresh_folder_paths().get_output_directory()).parent
    assert REPO not in base.parents and base != REPO
    assert fresh_folder_paths(Path("/somewhere/else"), monkeypatch).models_dir == \
        os.path.join(os.path.abspath("/somewhere/else"), "models")


# --------------------------------------------------------------------------- folder_paths behaviour


@pytest.fixture
def fp(tmp_path, monkeypatch):
    return fresh_folder_paths(tmp_path, monkeypatch)


def test_save_path_counter_never_overwrites(fp):
    out = fp.get_output_directory()
    written = []
    for expected in (1, 2, 3):
        folder, name, counter, subfolder, _ = fp.get_save_image_path("ppd/depth", out, 64, 48)
        assert (counter, subfolder) == (expected, "ppd")
        path = Path(folder) / f"{name}_{counter:05}_.png"
        assert not path.exists()
        path.write_bytes(b"x")
        written.append(path)
    assert len(set(written)) == 3


def test_save_path_counter_follows_the_highest_existing_file(fp):
    out = fp.get_output_directory()
    os.makedirs(os.path.join(out, "ppd"))
    for name in ("depth_00041_.png", "depth_00007_.exr", "depthmap_00099_.png", "other_00500_.png"):
        Path(out, "ppd", name).write_bytes(b"x")
    assert fp.get_save_image_path("ppd/depth", out)[2] == 42
    assert fp.get_save_image_path("ppd/fresh", out)[2] == 1


def test_save_path_creates_subfolders_and_expands_size_tokens(fp):
    out = fp.get_output_directory()
    folder, name, counter, subfolder, prefix = fp.get_save_image_path("a/b/cloud_%width%x%height%", out, 640, 480)
    assert os.path.isdir(folder) and folder == os.path.join(out, "a", "b")
    assert (name, counter, prefix) == ("cloud_640x480", 1, "a/b/cloud_640x480")


def test_save_path_refuses_to_leave_the_output_folder(fp):
    with pytest.raises(Exception, match="outside the output folder"):
        fp.get_save_image_path("../escape/depth", fp.get_output_directory())


def test_annotated_paths(fp, tmp_path):
    assert fp.get_annotated_filepath("x.png [output]") == os.path.join(fp.get_output_directory(), "x.png")
    assert fp.get_annotated_filepath("x.png [temp]") == os.path.join(fp.get_temp_directory(), "x.png")
    assert fp.get_annotated_filepath("x.png") == os.path.join(fp.get_input_directory(), "x.png")
    assert fp.get_annotated_filepath("x.png", str(tmp_path)) == os.path.join(str(tmp_path), "x.png")
    fp.set_input_directory(str(tmp_path / "in"))
    assert fp.get_annotated_filepath("x.png [input]") == str(tmp_path / "in" / "x.png")


def test_registration_keeps_yaml_paths_and_sets_extensions(pack, fp, tmp_path, monkeypatch):
    monkeypatch.setattr(pack.nodes.model, "folder_paths", fp)
    yaml_dir = str(tmp_path / "shared_models" / "ppd")
    fp.add_model_folder_path("ppd", yaml_dir)  # what extra_model_paths.yaml does before packs load
    assert fp.folder_names_and_paths["ppd"][1] == set()

    paths = pack.nodes.model.register_model_folder()
    default = os.path.join(fp.models_dir, "ppd")
    assert paths == [yaml_dir, default] == fp.get_folder_paths("ppd")
    assert pack.nodes.model.register_model_folder() == paths  # idempotent

    os.makedirs(yaml_dir)
    os.makedirs(os.path.join(default, "sub"))
    for path in (os.path.join(yaml_dir, "a.safetensors"), os.path.join(yaml_dir, "readme.txt"),
                 os.path.join(default, "sub", "b.PTH")):
        Path(path).write_bytes(b"x")
    assert fp.get_filename_list("ppd") == ["a.safetensors", os.path.join("sub", "b.PTH")]
    assert fp.get_full_path("ppd", os.path.join("sub", "b.PTH")) == os.path.join(default, "sub", "b.PTH")


def test_registration_without_yaml_uses_the_models_folder(pack, fp, monkeypatch):
    monkeypatch.setattr(pack.nodes.model, "folder_paths", fp)
    assert pack.nodes.model.register_model_folder() == [os.path.join(fp.models_dir, "ppd")]
    assert fp.folder_names_and_paths["ppd"][1] == {".pth", ".pt", ".safetensors"}


def test_add_model_folder_path_is_default_moves_to_front(fp):
    fp.add_model_folder_path("x", "/a")
    fp.add_model_folder_path("x", "/b")
    fp.add_model_folder_path("x", "/b", is_default=True)
    fp.add_model_folder_path("x", "/c", is_default=True)
    assert fp.get_folder_paths("x") == ["/c", "/b", "/a"]


def test_full_path_lookup(fp, tmp_path):
    fp.add_model_folder_path("ppd", str(tmp_path / "m"))
    (tmp_path / "m").mkdir()
    (tmp_path / "secret.pth").write_bytes(b"x")
    assert fp.get_full_path("ppd", "../secret.pth") is None
    assert fp.get_full_path("unknown", "a.pth") is None
    with pytest.raises(FileNotFoundError, match="Model in folder 'ppd' with filename 'missing.pth' not found."):
        fp.get_full_path_or_raise("ppd", "missing.pth")


# --------------------------------------------------------------------------- model_management, patcher, progress


@needs_fakes
def test_progress_bar_update_raises_after_an_interrupt():
    import comfy.model_management as mm
    import comfy.utils
    bar = comfy.utils.ProgressBar(4, node_id="7")
    bar.update(1)
    mm.interrupt_current_processing()
    assert mm.processing_interrupted()
    with pytest.raises(mm.InterruptProcessingException):
        bar.update(1)
    assert not mm.processing_interrupted()  # the flag is consumed, as in ComfyUI
    bar.update_absolute(10)
    assert (bar.current, bar.total) == (4, 4)


@needs_fakes
def test_throw_without_interrupt_is_silent_and_interrupt_can_be_cleared():
    import comfy.model_management as mm
    mm.throw_exception_if_processing_interrupted()              # no interrupt: returns quietly
    mm.interrupt_current_processing()
    assert mm.processing_interrupted()
    mm.interrupt_current_processing(False)
    assert not mm.processing_interrupted()
    mm.throw_exception_if_processing_interrupted()              # cleared: quiet again


class _RecordingModule(torch.nn.Module):
    """A Linear whose .to() only records the device, so a fake accelerator can be used on CPU."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)  # 15 float32 values = 60 bytes
        self.moves: list = []

    def to(self, *args, **kwargs):
        self.moves.append(args[0])
        return self


@needs_fakes
def test_load_models_gpu_moves_patchers_to_their_load_device_and_free_memory_offloads(monkeypatch):
    import comfy.model_management as mm
    import comfy.model_patcher
    monkeypatch.setattr(mm, "get_free_memory", lambda dev=None, torch_free_too=False: 0)
    monkeypatch.setattr(mm, "current_loaded_models", [])
    model = _RecordingModule()
    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=gpu, offload_device=cpu)
    assert (patcher.model_size(), patcher.loaded_size(), patcher.current_loaded_device()) == (60, 0, cpu)

    mm.load_models_gpu([patcher], memory_required=1024, force_full_load=True)
    assert model.moves == [gpu] and patcher.current_loaded_device() == gpu
    assert patcher.loaded_size() == 60 and mm.current_loaded_models == [patcher]

    assert mm.free_memory(1e9, gpu, keep_loaded=[patcher]) == []
    assert mm.free_memory(1e9, gpu) == [patcher]
    assert model.moves == [gpu, cpu] and patcher.loaded_size() == 0 and mm.current_loaded_models == []


@needs_fakes
def test_patcher_clone_shares_the_model():
    import comfy.model_patcher
    patcher = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
    twin = patcher.clone()
    assert twin.model is patcher.model and twin.parent is patcher and patcher.is_clone(twin)
    assert patcher.model_dtype() is None


@needs_fakes
def test_device_queries_on_cpu():
    import comfy.model_management as mm
    cpu = torch.device("cpu")
    assert mm.module_size(torch.nn.Linear(4, 3)) == 60
    assert not mm.should_use_fp16(cpu) and not mm.should_use_bf16(cpu)
    assert mm.is_device_mps(torch.device("mps")) and not mm.is_device_mps(cpu)
    assert mm.intermediate_device() == cpu == mm.unet_offload_device()
    free, torch_free = mm.get_free_memory(cpu, torch_free_too=True)
    assert 0 < free <= mm.get_total_memory(cpu)
