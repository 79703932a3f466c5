"""Pixel-Perfect Depth engine (no ComfyUI imports)."""
