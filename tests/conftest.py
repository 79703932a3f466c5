"""The tests' fixtures; the plumbing they share with test modules and subprocesses is tests/support/plumbing.py."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))  # test helper modules (not tests)
from plumbing import REAL_COMFY, load_pack, require_fixture_dir, tensor_loader  # noqa: E402


@pytest.fixture(scope="session")
def parity() -> Path:
    """The PPD image-model golden tensors."""
    return require_fixture_dir("parity")


@pytest.fixture(scope="session")
def ppvd_fixtures() -> Path:
    """The PPVD (video model) golden tensors."""
    return require_fixture_dir("ppvd")


@pytest.fixture(scope="session")
def load_fixture(parity):
    """load_fixture("dit_tiny_cases") -> dict of tensors from that safetensors file."""
    return tensor_loader(parity)


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
    """The real ComfyUI's modules pointed at a fresh folder tree with tiny models in models/ppd."""
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
    pack.nodes.common.register_model_folder()
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


@pytest.fixture()
def progress_seen(comfy_env, monkeypatch):
    """progress_seen(cancel_at=None): the list that records every (value, total) the node's progress bar is set
    to; the user presses Cancel when it is set to `cancel_at`."""
    def watch(cancel_at: int | None = None) -> list[tuple[int, int | None]]:
        seen: list[tuple[int, int | None]] = []
        real = comfy_env.ProgressBar.update_absolute

        def update(self, value, total=None, preview=None):
            seen.append((value, total))
            if value == cancel_at:
                comfy_env.mm.interrupt_current_processing(True)
            return real(self, value, total, preview)

        monkeypatch.setattr(comfy_env.ProgressBar, "update_absolute", update)
        return seen
    yield watch
    comfy_env.mm.interrupt_current_processing(False)
