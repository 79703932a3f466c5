"""The batch processor for the PPD image model: what `predict` writes for one image or video frame.

Images: OUT/<stem>_depth.npy, _depth16.png, _depth_color.png (+ _points.ply with --pointcloud).
Videos (image model per frame, PyAV): OUT/<stem>/frame_000000_depth.npy, ... and OUT/<stem>/frames.json,
written last, which records the frame count so a finished video is recognised on a re-run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Hashable, Iterator

import numpy as np
import torch

from .. import imaging
from ..errors import InputError, PPDError
from .inputs import Item
from .runner import FatalError

SUFFIXES = {"png16": "_depth16.png", "color": "_depth_color.png", "npy": "_depth.npy", "ply": "_points.ply"}
MANIFEST = "frames.json"


class PPDProcessor:
    """PPD depth per image; the model is built on first use, so the object pickles cheaply to Ray workers.

    `args` is the predict namespace (out, steps, seed, area, overwrite, pointcloud, fov, near, far,
    precision); `device` a torch device name."""

    def __init__(self, args: argparse.Namespace, dit_path: Path, enc_path: Path, device: str) -> None:
        self.args, self.device = args, device
        # Absolute, so Ray workers starting in another folder read and write the same files.
        self.dit_path, self.enc_path = Path(dit_path).resolve(), Path(enc_path).resolve()
        self.out = Path(args.out).resolve()
        self._pipe = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pipe": None}

    @property
    def pipe(self):
        if self._pipe is None:
            from .. import load_dit, load_semantic_encoder
            from ..cli import weight_dtype
            from ..pipeline import PPDPipeline
            device = torch.device(self.device)
            dtype = weight_dtype(self.args.precision, device)
            try:
                self._pipe = PPDPipeline(load_dit(self.dit_path, device=device, dtype=dtype),
                                         load_semantic_encoder(self.enc_path, device=device, dtype=dtype),
                                         area=self.args.area)
            except PPDError as e:                  # a model that cannot load stops the run (exit 2)
                raise FatalError(str(e)) from e
        return self._pipe

    # -- names ---------------------------------------------------------------------------------
    def wanted(self) -> list[str]:
        return ["png16", "color", "npy"] + (["ply"] if self.args.pointcloud else [])

    def sample_outputs(self, item: Item, tag: int) -> dict[str, Path]:
        base = self.out / item.stem if item.kind == "image" else self.out / item.stem / f"frame_{tag:06d}"
        return {k: base.with_name(base.name + SUFFIXES[k]) for k in self.wanted()}

    def expected_outputs(self, item: Item) -> list[Path] | None:
        if item.kind == "image":
            return list(self.sample_outputs(item, 0).values())
        manifest = self.out / item.stem / MANIFEST
        try:
            count = int(json.loads(manifest.read_text())["frames"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return [manifest] + [p for t in range(count) for p in self.sample_outputs(item, t).values()]

    # -- work ----------------------------------------------------------------------------------
    def load(self, item: Item) -> Iterator[tuple[int, Hashable, Any]]:
        frames = [imaging.load_image(item.path)] if item.kind == "image" else video_frames(item.path)
        for tag, image in enumerate(frames):
            x = resize(image, self.args.area)
            yield tag, tuple(x.shape[-2:]), {"image": x, "input_size": tuple(image.shape[-2:])}

    def infer(self, payloads: list[Any]) -> list[Any]:
        from ..pipeline import Prepared
        pipe = self.pipe
        x = torch.cat([p["image"] for p in payloads])                       # (B,3,h,w), one size
        chunk = self.args.batch_size or pipe.max_batch(*x.shape[-2:])
        semantics = torch.cat([pipe.encode(x[i:i + chunk]) for i in range(0, len(x), chunk)])
        result = pipe.predict(Prepared(x, semantics, tuple(x.shape[-2:])), steps=self.args.steps,
                              seed=self.args.seed, batch_size=chunk)
        return [result.depth[i] for i in range(len(payloads))]             # (1,h,w) each

    def write(self, item: Item, tag: int, payload: Any, depth: torch.Tensor) -> int:
        from ..cli import make_pointcloud, write_depth_outputs
        paths = self.sample_outputs(item, tag)
        keep = set() if self.args.overwrite else {k for k, p in paths.items() if p.exists()}
        cloud = None
        if "ply" in paths and "ply" not in keep:      # built before any write: a bad --near/--far writes nothing
            cloud = make_pointcloud(depth, payload["image"][0], self.args)
        write_depth_outputs(depth, payload["input_size"], paths, self.args, skip=keep)
        if cloud is not None:
            from ..geometry import write_ply
            write_ply(paths["ply"], cloud, overwrite=self.args.overwrite)
        return len(keep)

    def finish(self, item: Item, count: int) -> None:
        if item.kind == "video":
            data = json.dumps({"frames": count, "source": item.path.name}).encode()
            imaging.atomic_write(self.out / item.stem / MANIFEST, lambda f: f.write(data), overwrite=True)


def resize(image: torch.Tensor, area: int) -> torch.Tensor:
    """The pipeline's preprocessing (validate, official resize to `area`), done on the loader thread."""
    from ..pipeline import validate_image
    return imaging.resize_keep_aspect(validate_image(image), area)


def video_frames(path: Path) -> Iterator[torch.Tensor]:
    """Frames (1,3,H,W) float32 in [0,1] decoded with PyAV; a clear message when it is missing."""
    try:
        import av
    except ImportError:
        raise InputError(f"{path.name} is a video; reading videos needs PyAV: pip install av") from None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            count = 0
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")                       # (H,W,3) uint8
                count += 1
                yield torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
            if count == 0:
                raise InputError(f"{path} has no video frames.")
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise InputError(f"cannot read {path} as a video ({e}). Use an MP4, MOV, MKV, WebM or AVI file.") from e
