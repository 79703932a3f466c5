"""Running the command line on the tests' tiny models."""
from __future__ import annotations

from comfyui_ppd.cli import main


def predict(models, *args) -> int:
    """`predict` with the tiny models of the `models` fixture, small and quick (area 6144, 2 steps)."""
    return main(["predict", *map(str, args), "--models-dir", str(models["dit"].parent),
                 "--area", "6144", "--steps", "2", "--no-progress"])
