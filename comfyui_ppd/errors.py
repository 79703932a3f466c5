"""The pack's error types. Every message says what went wrong and how to fix it."""
from __future__ import annotations


class PPDError(ValueError):
    """Base class: the message is meant for the user (ComfyUI shows ``str(error)`` in its dialog)."""


class CheckpointError(PPDError):
    """A model file is missing, unreadable or not the model that was asked for."""

    def __init__(self, path: object, expected: str, found: str, fix: str) -> None:
        self.path, self.expected, self.found, self.fix = path, expected, found, fix
        super().__init__(f"{path}: expected {expected}, but found {found}. {fix}")


class InputError(PPDError):
    """An image, depth map or parameter cannot be processed as given."""


def error_message(error: BaseException | str) -> str:
    """An error as one line for a run's summary: a PPDError's own message, else `Type: message` (whitespace
    collapsed, so a multi-line torch error stays one line)."""
    if isinstance(error, str):
        return error
    text = str(error) if isinstance(error, PPDError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())
