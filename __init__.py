"""ComfyUI entry point of the Pixel-Perfect Depth pack (custom_nodes/<pack>/__init__.py).

ComfyUI imports this folder as a package and calls `comfy_entrypoint` (V3 nodes, ComfyUI 0.3.64 or newer).
The nodes reach the engine with relative imports (`from ..comfyui_ppd import ...`), so the pack always runs
its own engine, even when another `comfyui_ppd` is installed or earlier on sys.path. No sys.path edits.
"""
import importlib.util
import logging

MIN_COMFYUI = "0.3.64"


def _has_v3_api() -> bool:
    try:
        return importlib.util.find_spec("comfy_api.latest") is not None
    except ImportError:        # no comfy_api package at all
        return False


if __package__ and _has_v3_api():  # ComfyUI imports this folder as a package; pytest may import this file bare
    from .nodes import PPDExtension

    async def comfy_entrypoint() -> PPDExtension:
        return PPDExtension()

    __all__ = ["comfy_entrypoint"]
elif __package__:  # an older core: one clear line instead of an import error, and no nodes
    logging.getLogger("comfyui_ppd").error(
        "PPD: the Pixel-Perfect Depth nodes need ComfyUI %s or newer (this core has no comfy_api.latest, the V3 "
        "node API); update ComfyUI to use them.", MIN_COMFYUI)
    NODE_CLASS_MAPPINGS: dict = {}
    __all__ = ["NODE_CLASS_MAPPINGS"]
