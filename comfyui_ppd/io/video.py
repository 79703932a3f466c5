"""Video files through PyAV (optional: `pip install av`; ComfyUI ships it): decode to frames, encode a preview."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg")


def _av() -> Any:
    try:
        import av
    except ImportError as e:
        raise InputError("reading and writing video needs PyAV, which is not installed: `pip install av` "
                         "(ComfyUI already ships it), or extract the frames to images first.") from e
    return av


def float_frames(rgb: Tensor | np.ndarray) -> Tensor:
    """uint8 RGB (..., H, W, 3) -> float (..., 3, H, W) in [0,1], the form the models take."""
    x = torch.as_tensor(rgb)
    return x.movedim(-1, -3).float() / 255


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
        return float_frames(self.rgb[i])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])


def read_video(path: str | os.PathLike) -> VideoFrames:
    """Every frame of the first video stream, RGB, as `VideoFrames` (uint8 storage) with the stream's frame rate;
    for short clips (long ones stream through `VideoSource`)."""
    source = VideoSource(path)
    frames = [torch.from_numpy(f) for f in source.frames()]
    return VideoFrames(torch.stack(frames), source.fps)


class DecodeError(InputError):
    """The decoder stopped mid-way: `frame` is the index of the first frame that could not be decoded."""

    def __init__(self, message: str, frame: int) -> None:
        super().__init__(message)
        self.frame = frame


class VideoSource:
    """A video file read one frame at a time: `fps`, `size` (H, W), `frame_count` (the container's count, None
    when it does not say) and `frames(skip)`, uint8 (H,W,3) RGB arrays; no more than one decoded frame is held."""

    def __init__(self, path: str | os.PathLike) -> None:
        av = _av()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"video not found: {self.path}")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    kinds = sorted({s.type for s in container.streams}) or ["no streams"]
                    raise InputError(f"{self.path} holds no video stream (only {', '.join(kinds)}); give a video "
                                     "file (e.g. H.264 .mp4).")
                stream = container.streams.video[0]
                self.fps = float(stream.average_rate or stream.guessed_rate or 24)
                base = float(stream.base_rate or 0)
                self.frame_count: int | None = int(stream.frames) or None
                self.size = (int(stream.codec_context.height), int(stream.codec_context.width))
        except InputError:
            raise
        except (av.FFmpegError, ValueError, OSError) as e:
            raise InputError(f"could not decode the video {self.path}: {e}. Check that it is a complete video file "
                             "(re-encode it with e.g. `ffmpeg -i in.mov -c:v libx264 out.mp4`).") from e
        self.variable_rate = base > 0 and abs(base - self.fps) > 0.01 * self.fps

    def frames(self, skip: int = 0) -> Iterator[np.ndarray]:
        """Frames `skip`, `skip` + 1, ... as uint8 (H,W,3) RGB; a frame of another size or a decoder failure
        raises InputError (DecodeError) naming the frame, after every earlier frame was yielded."""
        av = _av()
        index, size = 0, None
        try:
            with av.open(str(self.path)) as container:
                for frame in container.decode(container.streams.video[0]):
                    if size is None:
                        size = (frame.height, frame.width)
                    elif (frame.height, frame.width) != size:
                        raise InputError(f"frame {index} of {self.path} is {frame.width}x{frame.height} but the "
                                         f"frames before it are {size[1]}x{size[0]} (W x H); re-encode the clip "
                                         "at one size (e.g. `ffmpeg -i in.mp4 -vf scale=W:H out.mp4`).")
                    if index >= skip:
                        yield frame.to_ndarray(format="rgb24")
                    index += 1
        except InputError:
            raise
        except (av.FFmpegError, ValueError, OSError) as e:
            if index == 0:
                raise InputError(f"could not decode the video {self.path}: {e}. Check that it is a complete video "
                                 "file (re-encode it with e.g. `ffmpeg -i in.mov -c:v libx264 out.mp4`).") from e
            raise DecodeError(f"decoding {self.path} stopped at frame {index} ({e}); frames 0..{index - 1} were "
                              "read. Re-encode the clip (e.g. `ffmpeg -i in.mp4 -c:v libx264 out.mp4`) to repair "
                              "it.", index) from e
        if index == 0:
            raise InputError(f"the video {self.path} has no frames; give a video with at least one frame.")


class VideoWriter:
    """H.264 .mp4 (yuv420p, crf 18) encoded frame by frame from uint8 (H,W,3) RGB: `write(rgb)`, then `close()`
    renames the finished file into place (atomic); leaving by an exception removes the partial file. Odd sides
    are padded by repeating the last row/column (the encoder needs even sides)."""

    def __init__(self, path: str | os.PathLike, fps: float, *, overwrite: bool = False) -> None:
        self.path, self.fps = Path(path), fps
        if self.path.exists() and not overwrite:
            raise InputError(f"{self.path} already exists; pass overwrite=True or choose another file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.container = _av().open(str(self.tmp), "w", format="mp4")
        self.stream: Any = None

    def write(self, rgb: np.ndarray) -> None:
        av = _av()
        h, w = rgb.shape[:2]
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self.stream is None:
            self.stream = self.container.add_stream("libx264", rate=round(self.fps) or 1)
            self.stream.width, self.stream.height, self.stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
            self.stream.options = {"crf": "18"}
        self.container.mux(self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))

    def close(self) -> Path:
        if self.stream is None:
            self.abort()
            raise InputError("no frames to write to the video.")
        try:
            self.container.mux(self.stream.encode())
            self.container.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abort()
            raise InputError(f"could not write {self.path}: {e.strerror or e}. Check that the folder is writable "
                             "and the disk has free space.") from e
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - closing a half-written container may fail; the file goes anyway
            pass
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, *,
                overwrite: bool = False) -> Path:
    """H.264 .mp4 (VideoWriter) from uint8 (H,W,3) RGB frames, written atomically."""
    with VideoWriter(path, fps, overwrite=overwrite) as writer:
        for rgb in frames:
            writer.write(rgb)
    return writer.path
