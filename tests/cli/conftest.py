"""Fixtures shared by the command-line video tests (test_cli_video*.py)."""
from __future__ import annotations

import pytest

from tiny_ppvd import write_tiny_ppvd


@pytest.fixture(scope="session")
def ppvd_models(tmp_path_factory):
    """A models folder with tiny random ppvd.pth and pi3.safetensors (the video model only)."""
    folder = tmp_path_factory.mktemp("ppvd_models")
    write_tiny_ppvd(folder)
    return folder


@pytest.fixture(scope="session")
def example_clip(tmp_path_factory):
    """example_clip("dir/name.mp4", frames) -> path of a 48 x 32 panning clip (scenes.write_example_clip) in a
    session folder, written once."""
    from scenes import write_example_clip
    folder = tmp_path_factory.mktemp("clips")

    def make(name: str, frames: int):
        path = folder / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_example_clip(str(path), frames=frames, height=32, width=48)
        return path
    return make
