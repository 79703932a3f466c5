"""Shared test plumbing: where the golden fixtures live, and loading the pack the way ComfyUI does."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helper modules


def parity_dir() -> Path | None:
    """The official-code golden tensors: $PPD_PARITY_DIR, else ../shared/fixtures/parity beside the clone."""
    env = os.environ.get("PPD_PARITY_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "fixtures" / "parity"
    return path if (path / "README.md").is_file() else None


@pytest.fixture(scope="session")
def parity() -> Path:
    path = parity_dir()
    if path is None:
        msg = ("golden fixtures not found: expected ../shared/fixtures/parity beside the clone "
               "(or set PPD_PARITY_DIR)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; under CI=true they are required")
        pytest.skip(msg)
    return path


def require_fixture_dir(name: str) -> Path:
    """../shared/fixtures/<name> beside the clone (or $PPD_<NAME>_DIR); skip when absent, fail under CI=true."""
    env = os.environ.get(f"PPD_{name.upper()}_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "fixtures" / name
    if (path / "README.md").is_file():
        return path
    msg = f"golden fixtures not found: expected {path} (or set PPD_{name.upper()}_DIR)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + "; under CI=true they are required")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def ppvd_fixtures() -> Path:
    """The PPVD (video model) golden tensors."""
    return require_fixture_dir("ppvd")


@pytest.fixture(scope="session")
def load_fixture(parity):
    """load_fixture("dit_tiny_cases") -> dict of tensors from that safetensors file."""
    from safetensors.torch import load_file

    cache: dict[str, dict] = {}

    def _load(name: str) -> dict:
        if name not in cache:
            cache[name] = load_file(str(parity / f"{name}.safetensors"))
        return cache[name]

    return _load


def load_pack():
    """Import the repository root as ComfyUI does for custom_nodes/<pack>/__init__.py."""
    name = "comfyui_ppd_pack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack():
    return load_pack()


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Tiny random ppd.pth, depth_anything_v2_vitl.pth and moge2_vitl_normal.pt in the official layouts."""
    from tiny_models import write_tiny_models
    return write_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def image_file(tmp_path):
    """A 50x70 RGB PNG of noise."""
    import numpy as np
    from PIL import Image
    path = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype("uint8")).save(path)
    return path


@pytest.fixture()
def comfy_env(pack, tmp_path, monkeypatch):
    """nodes.comfy pointed at a fresh stand-in ComfyUI folder tree with tiny models in models/ppd."""
    from tiny_models import write_tiny_models
    comfy = pack.nodes.comfy
    if comfy.REAL_COMFY:
        pytest.skip("these tests drive the stand-in; the real ComfyUI is checked with the harness")
    fp = comfy.StandinFolderPaths(tmp_path / "comfy")
    monkeypatch.setattr(comfy, "folder_paths", fp)
    pack.nodes.model.register_model_folder()
    write_tiny_models(tmp_path / "comfy" / "models" / "ppd")
    return comfy


@pytest.fixture()
def cancel_at_check(comfy_env, monkeypatch):
    """cancel_at_check(n): the user presses Cancel just before the node's n-th interrupt check."""
    def arm(n: int) -> None:
        calls = {"n": 0}
        real = comfy_env.throw_exception_if_processing_interrupted

        def check() -> None:
            calls["n"] += 1
            if calls["n"] == n:
                comfy_env.mm.interrupt_current_processing(True)
            real()

        monkeypatch.setattr(comfy_env, "throw_exception_if_processing_interrupted", check)
    return arm
