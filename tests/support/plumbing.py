"""Test plumbing shared by conftest.py, the tests and their subprocesses: the repository, the golden fixtures,
and the real ComfyUI's modules made importable before the pack loads."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Model lookups must see only the tests' own tiny files, never a user's real checkpoints ($PPD_MODELS_DIR, the
# user cache): a real ppvd.pth there would switch the per-frame video tests to the video model.
os.environ.pop("PPD_MODELS_DIR", None)
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ppd-tests-cache-")


def _install_comfyui() -> bool:
    """Make the real `folder_paths`, `comfy.*`, `comfy_api` and `server` importable for the node tests: a ComfyUI
    checkout named by $COMFY_DIR (`bash ../shared/comfyui/setup.sh DEST` makes one; run pytest with DEST/venv's
    python), or one already importable. Returns False when there is none (node tests skip, or fail under CI)."""
    if os.environ.get("COMFY_DIR"):
        sys.path.insert(0, os.path.abspath(os.environ["COMFY_DIR"]))
    try:
        import comfy.cli_args
        import torch
        if not torch.cuda.is_available():          # what `python main.py --cpu` sets on a machine without CUDA
            comfy.cli_args.args.cpu = True
        import comfy.model_management  # noqa: F401
        import comfy_api.latest  # noqa: F401
        import folder_paths  # noqa: F401
        importlib.import_module("utils.extra_config")  # ComfyUI's utils package first, as main.py binds it
        import server  # noqa: F401  (now, while the checkout leads sys.path: the pack's nodes/ must not shadow nodes.py)
        return True
    except ImportError as e:
        print(f"PPD tests: no real ComfyUI ({e})", file=sys.stderr)
        for name in [m for m in sys.modules if m.split(".")[0] in ("comfy", "comfy_api", "folder_paths", "server")]:
            del sys.modules[name]
        return False


REAL_COMFY = _install_comfyui()
if REAL_COMFY:  # the pack copies its examples into the input folder at import: never into the checkout's own
    import folder_paths as _fp
    _fp.set_input_directory(tempfile.mkdtemp(prefix="ppd_test_input_"))


def require_comfyui() -> None:
    """Skip (fail under CI=true) a test that needs a real ComfyUI when none is importable."""
    if REAL_COMFY:
        return
    msg = ("no real ComfyUI: set COMFY_DIR to a checkout (`bash ../shared/comfyui/setup.sh DEST` makes one) and run "
           "pytest with its venv's python (DEST/venv/bin/python)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + "; under CI=true the node tests are required")
    pytest.skip(msg)


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


def tensor_loader(folder: Path):
    """loader("name") -> dict of tensors of folder/name.safetensors, each file read once."""
    from safetensors.torch import load_file

    cache: dict[str, dict] = {}

    def _load(name: str) -> dict:
        if name not in cache:
            cache[name] = load_file(str(folder / f"{name}.safetensors"))
        return cache[name]

    return _load


def load_pack():
    """Import the repository root as ComfyUI does for custom_nodes/<pack>/__init__.py (needs a real ComfyUI)."""
    require_comfyui()
    name = "comfyui_ppd_pack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
