"""Shared test plumbing: where the golden fixtures live, and loading the pack the way ComfyUI does."""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Model lookups must see only the tests' own tiny files, never a user's real checkpoints ($PPD_MODELS_DIR, the
# user cache): a real ppvd.pth there would switch the per-frame video tests to the video model.
os.environ.pop("PPD_MODELS_DIR", None)
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ppd-tests-cache-")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helper modules


def _install_comfyui() -> bool:
    """Make `folder_paths` and `comfy.*` importable for the nodes: a real ComfyUI checkout named by $COMFY_DIR
    (or already importable), else the fakes in tests/fakes. Returns True for a real ComfyUI."""
    if os.environ.get("COMFY_DIR"):
        sys.path.insert(0, os.path.abspath(os.environ["COMFY_DIR"]))
    try:
        import comfy.cli_args
        import torch
        if not torch.cuda.is_available():          # what `python main.py --cpu` sets on a machine without CUDA
            comfy.cli_args.args.cpu = True
        import comfy.model_management  # noqa: F401
        import folder_paths  # noqa: F401
        return True
    except ImportError:
        for name in [m for m in sys.modules if m == "comfy" or m.startswith("comfy.") or m == "folder_paths"]:
            del sys.modules[name]                      # a half-imported real ComfyUI must not shadow the fakes
        sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))
        return False


REAL_COMFY = _install_comfyui()
if REAL_COMFY:  # the pack copies its examples into the input folder at import: never into the checkout's own
    import folder_paths as _fp
    _fp.set_input_directory(tempfile.mkdtemp(prefix="ppd_test_input_"))


def fixture_path(name: str) -> Path:
    """Where ../shared/fixtures/<name> is: $PPD_<NAME>_DIR, else beside $PPD_PARITY_DIR, else beside the clone."""
    env = os.environ.get(f"PPD_{name.upper()}_DIR")
    if env:
        return Path(env)
    parity_env = os.environ.get("PPD_PARITY_DIR")
    return (Path(parity_env).parent if parity_env else REPO.parent / "shared" / "fixtures") / name


def require_fixture_dir(name: str) -> Path:
    """The fixture folder `name` (with its README.md); skip when absent, fail under CI=true."""
    path = fixture_path(name)
    if (path / "README.md").is_file():
        return path
    msg = (f"golden fixtures not found: expected {path} (../shared/fixtures/{name} beside the clone, "
           f"or set PPD_{name.upper()}_DIR)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + "; under CI=true they are required")
    pytest.skip(msg)


def fixture_json(name: str, file: str = "real_checkpoint_shapes.json") -> dict:
    """A JSON file of the fixture folder `name` (skips/fails like require_fixture_dir)."""
    import json
    return json.loads((require_fixture_dir(name) / file).read_text())


@pytest.fixture(scope="session")
def parity() -> Path:
    """The PPD image-model golden tensors."""
    return require_fixture_dir("parity")


@pytest.fixture(scope="session")
def ppvd_fixtures() -> Path:
    """The PPVD (video model) golden tensors."""
    return require_fixture_dir("ppvd")


def tensor_loader(folder: Path):
    """loader("name") -> dict of tensors of folder/name.safetensors, each file read once."""
    from safetensors.torch import load_file

    cache: dict[str, dict] = {}

    def _load(name: str) -> dict:
        if name not in cache:
            cache[name] = load_file(str(folder / f"{name}.safetensors"))
        return cache[name]

    return _load


@pytest.fixture(scope="session")
def load_fixture(parity):
    """load_fixture("dit_tiny_cases") -> dict of tensors from that safetensors file."""
    return tensor_loader(parity)


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
    """ComfyUI's modules (real or fake) pointed at a fresh folder tree with tiny models in models/ppd."""
    import comfy.model_management as mm
    import comfy.utils
    import folder_paths
    base = tmp_path / "comfy"
    monkeypatch.setattr(folder_paths, "models_dir", str(base / "models"))
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", dict(folder_paths.folder_names_and_paths))
    monkeypatch.delitem(folder_paths.folder_names_and_paths, "ppd", raising=False)
    for kind in ("output", "temp", "input"):
        (base / kind).mkdir(parents=True, exist_ok=True)
        monkeypatch.setattr(folder_paths, f"{kind}_directory", str(base / kind))
    from tiny_models import write_tiny_models
    pack.nodes.model.register_model_folder()
    write_tiny_models(base / "models" / "ppd")
    return types.SimpleNamespace(folder_paths=folder_paths, mm=mm, ProgressBar=comfy.utils.ProgressBar,
                                 InterruptProcessingException=mm.InterruptProcessingException, real=REAL_COMFY)


@pytest.fixture()
def cancel_at_check(comfy_env, monkeypatch):
    """cancel_at_check(n): the user presses Cancel just before the node's n-th interrupt check."""
    def arm(n: int) -> None:
        calls = {"n": 0}
        real = comfy_env.mm.throw_exception_if_processing_interrupted

        def check() -> None:
            calls["n"] += 1
            if calls["n"] == n:
                comfy_env.mm.interrupt_current_processing(True)
            real()

        monkeypatch.setattr(comfy_env.mm, "throw_exception_if_processing_interrupted", check)
    return arm
