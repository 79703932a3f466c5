"""Fake of `comfy.utils.ProgressBar`; each update checks for an interrupt like ComfyUI's server hook does."""
from __future__ import annotations

from .model_management import throw_exception_if_processing_interrupted as _check_interrupt


class ProgressBar:
    """Stand-in for comfy.utils.ProgressBar; each update checks for an interrupt like ComfyUI's server hook."""

    def __init__(self, total, node_id=None) -> None:
        self.total = total
        self.current = 0
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        _check_interrupt()

    def update(self, value) -> None:
        self.update_absolute(self.current + value)
