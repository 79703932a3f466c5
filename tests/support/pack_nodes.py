"""Calling the pack's nodes by their ComfyUI keys, as ComfyUI does (a fresh instance per call)."""
from __future__ import annotations


def node(pack, name: str):
    """A new instance of the node class registered under `name`."""
    return pack.NODE_CLASS_MAPPINGS[name]()


def load(pack, *args):
    """Load PPD Model's `load(*args)`."""
    return node(pack, "PPD_LoadModel").load(*args)
