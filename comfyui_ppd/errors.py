"""The pack's error types. Every message says what went wrong and how to fix it."""
from __future__ import annotations

# ComfyUI names an error by its class's module and name (`exception_type`) and its frontend shows that before
# the message; inside ComfyUI this module is imported under the pack folder's full path, which fills the error
# box. The classes therefore carry the engine's own module name, the one a plain `import comfyui_ppd` gives.
MODULE = "comfyui_ppd.errors"


class PPDError(ValueError):
    """Base class: the message is meant for the user (ComfyUI shows ``str(error)`` in its dialog)."""


class CheckpointError(PPDError):
    """A model file is missing, unreadable or not the model that was asked for."""

    def __init__(self, path: object, expected: str, found: str, fix: str) -> None:
        self.path, self.expected, self.found, self.fix = path, expected, found, fix
        super().__init__(f"{path}: expected {expected}, but found {found}. {fix}")


class InputError(PPDError):
    """An image, depth map or parameter cannot be processed as given."""


for _cls in (PPDError, CheckpointError, InputError):
    _cls.__module__ = MODULE


def error_message(error: BaseException | str) -> str:
    """An error as one line for a run's summary: a PPDError's own message, else `Type: message` (whitespace
    collapsed, so a multi-line torch error stays one line)."""
    if isinstance(error, str):
        return error
    text = str(error) if isinstance(error, PPDError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())
