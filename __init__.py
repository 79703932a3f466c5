"""ComfyUI entry point of the Pixel-Perfect Depth pack (custom_nodes/<pack>/__init__.py).

The engine (`comfyui_ppd`) is a plain package; when the pack is not pip-installed we make it
importable by appending this folder to sys.path (appended, so nothing of ComfyUI is shadowed).
"""
import os
import sys

try:
    import comfyui_ppd  # noqa: F401
except ImportError:
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    import comfyui_ppd  # noqa: F401

if __package__:  # ComfyUI imports this folder as a package; pytest may import this file bare
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
