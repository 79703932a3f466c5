"""ComfyUI entry point of the Pixel-Perfect Depth pack (custom_nodes/<pack>/__init__.py).

ComfyUI imports this folder as a package; the nodes reach the engine with relative imports
(`from ..comfyui_ppd import ...`), so the pack always runs its own engine, even when another
`comfyui_ppd` is installed or earlier on sys.path. No sys.path edits.
"""
if __package__:  # ComfyUI imports this folder as a package; pytest may import this file bare
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# The frontend extension in web/ shows each PPD node's `ui.text` under the node.
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
