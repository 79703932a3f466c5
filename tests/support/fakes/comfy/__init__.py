"""Fake of the parts of ComfyUI's `comfy` package the nodes use (installed by tests/support/plumbing.py)."""
