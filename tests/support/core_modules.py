"""ComfyUI's own top-level `nodes` module, for core modules that `import nodes` (execution, core's 3D nodes): with
PYTHONPATH=<repo> that name would resolve to this repository's nodes/ folder."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def use_comfy_nodes() -> None:
    """Load ComfyUI's nodes.py as `nodes` (once); the real ComfyUI must be importable (tests/conftest.py)."""
    if hasattr(sys.modules.get("nodes"), "NODE_CLASS_MAPPINGS"):
        return
    import folder_paths
    spec = importlib.util.spec_from_file_location("nodes", Path(folder_paths.__file__).parent / "nodes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["nodes"] = module
    spec.loader.exec_module(module)
