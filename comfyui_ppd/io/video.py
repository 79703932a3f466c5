"""Video files through PyAV (optional: `pip install av`; ComfyUI ships it): decode to frames, encode a preview."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .files import atomic_write

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg")


def _av() -> Any:
    try:
        import av
    except ImportError as e:
        raise InputError("reading and writing video needs PyAV, which is not installed: `pip install av` "
                         "(ComfyUI already ships it), or extract the frames to images first.") from e
    return av


class VideoFrames(Sequence[Tensor]):
    """Decoded frames kept as uint8 (N,H,W,3); item i is a float (3,H,W) RGB tensor in [0,1], made on access,
    so a long clip costs 3 bytes per pixel instead of 12."""

    def __init__(self, rgb: Tensor, fps: float) -> None:
        self.rgb, self.fps = rgb, fps

    def __len__(self) -> int:
        return self.rgb.shape[0]

    @overload
    def __getitem__(self, i: int) -> Tensor: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Tensor]: ...

    def __getitem__(self, i: int | slice) -> Tensor | Sequence[Tensor]:
        if isinstance(i, slice):
            return VideoFrames(self.rgb[i], self.fps)
        return self.rgb[i].permute(2, 0, 1).float() / 255

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])


def read_video(path: str | os.PathLike) -> VideoFrames:
    """Every frame of the first video stream, RGB, as `VideoFrames` (uint8 storage) with the stream's frame rate."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} holds no video stream; give a video file (e.g. H.264 .mp4).")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 24)
            frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    except InputError:
        raise
    except (av.FFmpegError, ValueError, OSError) as e:
        raise InputError(f"could not decode the video {path}: {e}. Check that it is a complete video file "
                         "(re-encode it with e.g. `ffmpeg -i in.mov -c:v libx264 out.mp4`).") from e
    if not frames:
        raise InputError(f"the video {path} has no frames; give a video with at least one frame.")
    sizes = {tuple(f.shape) for f in frames}
    if len(sizes) > 1:
        raise InputError(f"the frames of {path} change size ({sorted(sizes)[:3]}); re-encode it at one size.")
    return VideoFrames(torch.stack(frames), fps)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, *,
                overwrite: bool = False) -> Path:
    """H.264 .mp4 (yuv420p, crf 18) from uint8 (H,W,3) RGB frames, written atomically; odd sides are padded by
    repeating the last row/column (the encoder needs even sides)."""
    av = _av()

    def encode(f) -> None:
        with av.open(f, "w", format="mp4") as container:
            stream = None
            for rgb in frames:
                h, w = rgb.shape[:2]
                rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                if stream is None:
                    stream = container.add_stream("libx264", rate=round(fps) or 1)
                    stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
                    stream.options = {"crf": "18"}
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
            if stream is None:
                raise InputError("no frames to write to the video.")
            container.mux(stream.encode())

    return atomic_write(path, encode, overwrite=overwrite)
