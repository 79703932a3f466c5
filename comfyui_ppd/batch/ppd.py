"""The batch processor for the PPD image model: what `predict` writes for one image or video frame.

Images: OUT/<stem>_depth.npy, _depth16.png, _depth_color.png (+ _points.ply with --pointcloud, _normals.png
with --normals). Videos without the video model (image model per frame): OUT/<stem>/frame_000000_depth.npy, ...
and OUT/<stem>/frames.json, written last, which records the frame count so a finished video is recognised on a
re-run. The steps are the families' and outputs.py's (load_pipeline, save_depth, the point clouds), so a
batch writes what a single `predict` always wrote.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import imaging, loaders, outputs, runtime
from ..errors import PPDError
from ..families.moge2 import steps as moge2_steps
from ..families.ppd import steps as ppd_steps
from ..families.ppd.pipeline import Prepared, validate_image
from ..io.files import atomic_write, remove_stale_temps
from ..io.images import load_image
from ..io.meshes import write_ply
from ..io.video import VideoSource, float_frames
from .inputs import Item
from .runner import FatalError

SUFFIXES = {"png16": "_depth16.png", "color": "_depth_color.png", "npy": "_depth.npy", "ply": "_points.ply",
            "normals": "_normals.png"}
MANIFEST = "frames.json"


@dataclass(frozen=True)
class PredictOptions:
    """What `predict` asks of each image (the CLI's flags of the same names; the defaults are the CLI's)."""

    out: Path                            # output folder; outputs mirror the input folders below it
    steps: int = 4                       # sampling steps
    seed: int = 0                        # noise seed
    area: int = imaging.DEFAULT_AREA     # processing area in pixels
    precision: str = "auto"              # runtime.CHOICES
    batch_size: int | None = 4           # images per model call; None: as many as fit (pipe.max_batch)
    overwrite: bool = False              # replace existing output files (else they are kept)
    pointcloud: bool = False             # also write <stem>_points.ply
    normals: bool = False                # also write <stem>_normals.png (needs the MoGe-2 geometry model)
    fov: float = 60.0                    # point cloud: horizontal field of view in degrees (not with --metric)
    near: float = 1.0                    # point cloud: metres at PPD's near end (not with --metric)
    far: float = 10.0                    # point cloud: metres at PPD's far end (not with --metric)
    outlier_filter: str = "window"       # metric point cloud: window, exact or off
    tiles: bool = False                  # full-resolution depth by tiles (ppd_steps.predict_depth_tiled)
    tile_size: tuple[int, int] = (768, 1024)   # with tiles: (height, width) of a tile in input pixels
    overlap: float = 0.25                # with tiles: fraction of a tile shared with each neighbour


class PPDProcessor:
    """PPD depth per image; the models are built on first use, so the object pickles cheaply to Ray workers.

    `device` is a torch device name; `geometry` the MoGe-2 file for --metric/--normals (its presence makes the
    point cloud metric)."""

    def __init__(self, options: PredictOptions, dit_path: Path, enc_path: Path, device: str,
                 geometry: Path | None = None) -> None:
        self.options, self.device = options, device
        # Absolute, so Ray workers starting in another folder read and write the same files.
        self.dit_path, self.enc_path = Path(dit_path).resolve(), Path(enc_path).resolve()
        self.geo_path = Path(geometry).resolve() if geometry else None
        self.out = Path(options.out).resolve()
        self._pipe: Any = None
        self._geometry: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pipe": None, "_geometry": None, "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    @property
    def pipe(self) -> Any:
        """The PPD pipeline in runtime.precision's policy; a model that cannot load stops the run (exit 2)."""
        with self._lock:
            if self._pipe is None:
                device = torch.device(self.device)
                try:
                    self._pipe = ppd_steps.load_pipeline(self.dit_path, self.enc_path,
                                                     runtime.precision(self.options.precision, device), device=device,
                                                     area=self.options.area)
                except PPDError as e:
                    raise FatalError(str(e)) from e
                except Exception as e:              # noqa: BLE001 - whatever else stops loading stops the run once
                    raise FatalError(f"could not load {self.dit_path} + {self.enc_path}: "
                                     f"{type(e).__name__}: {e}") from e
        return self._pipe

    @property
    def geometry(self) -> Any:
        """MoGe-2 for --metric/--normals (None without them)."""
        with self._lock:
            if self._geometry is None and self.geo_path is not None:
                try:
                    model = loaders.load_geometry_model(self.geo_path, device=self.device)
                except PPDError as e:
                    raise FatalError(str(e)) from e
                if self.options.normals and not model.has_normal:
                    raise FatalError(f"--normals: {self.geo_path.name} has no normal head, so it gives no normals; "
                                     "use the MoGe-2 model with normals (Ruicheng/moge-2-vitl-normal) or drop "
                                     "--normals.")
                self._geometry = model
        return self._geometry

    def check(self) -> None:
        """Load every model now, so a bad file stops the run before any item is read."""
        _ = self.pipe, self.geometry

    # -- names ---------------------------------------------------------------------------------
    def wanted(self) -> list[str]:
        return (["png16", "color", "npy"] + (["ply"] if self.options.pointcloud else [])
                + (["normals"] if self.options.normals else []))

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

    def remove_stale_temps(self, items: list[Item]) -> int:
        """Remove the temp files a killed run left for these items' outputs (only ours: see io.files)."""
        names: dict[Path, set[str]] = {}
        frames: set[Path] = set()
        for item in items:
            if item.kind == "image":
                for path in self.sample_outputs(item, 0).values():
                    names.setdefault(path.parent, set()).add(path.name)
            else:
                frames.add(self.out / item.stem)
        frame_name = re.compile(r"frame_\d{6}(" + "|".join(map(re.escape, SUFFIXES.values())) + ")|"
                                + re.escape(MANIFEST))
        return (sum(remove_stale_temps(folder, wanted) for folder, wanted in names.items())
                + sum(remove_stale_temps(folder, lambda name: bool(frame_name.fullmatch(name))) for folder in frames))

    # -- work ----------------------------------------------------------------------------------
    def load(self, item: Item) -> Iterator[tuple[int, Hashable, Any]]:
        frames = ([load_image(item.path)] if item.kind == "image"                      # a video streams frame by frame
                  else (float_frames(f)[None] for f in VideoSource(item.path).frames()))
        keep = self.geo_path is not None                    # MoGe-2 and the metric cloud use the input image
        tiles = self.options.tiles
        for tag, image in enumerate(frames):
            x = validate_image(image, imaging.DEFAULT_MULTIPLE) if tiles else resize(image, self.options.area)
            payload = {"image": x, "input_size": (image.shape[-2], image.shape[-1])}
            if keep:
                payload["original"] = image
            yield tag, tuple(x.shape[-2:]), payload

    def infer(self, payloads: list[Any]) -> list[Any]:
        """Depth (1,h,w) per payload (with --metric/--normals: (depth, MoGe-2 outputs))."""
        pipe = self.pipe
        x = torch.cat([p["image"] for p in payloads])                       # (B,3,h,w), one size
        if self.options.tiles:                                               # full size: (1,H,W) per image
            depths = [ppd_steps.predict_depth_tiled(pipe, x[i:i + 1], tile_size=self.options.tile_size,
                                                    overlap=self.options.overlap, steps=self.options.steps,
                                                    seed=self.options.seed, area=self.options.area)[0]
                      for i in range(len(payloads))]
        else:
            chunk = self.options.batch_size or pipe.max_batch(*x.shape[-2:])
            semantics = torch.cat([pipe.encode(x[i:i + chunk]) for i in range(0, len(x), chunk)])
            result = pipe.predict(Prepared(x, semantics, (x.shape[-2], x.shape[-1])), steps=self.options.steps,
                                  seed=self.options.seed, batch_size=chunk)
            depths = [result.depth[i] for i in range(len(payloads))]
        model = self.geometry
        if model is None:
            return depths
        device = torch.device(self.device)
        return [(d, moge2_steps.estimate_geometry(model, p["original"].to(device))) for d, p in zip(depths, payloads)]

    def write(self, item: Item, tag: int, payload: Any, result: Any) -> int:
        depth, geo = result if isinstance(result, tuple) else (result, None)
        paths = self.sample_outputs(item, tag)
        keep = set() if self.options.overwrite else {k for k, p in paths.items() if p.exists()}
        cloud = None
        if "ply" in paths and "ply" not in keep:      # built before any write: a bad --near/--far writes nothing
            if outputs.scale_source("ppd", reference=False, moge2=geo is not None) == "log_fit":
                assert geo is not None                # the official metric chain: MoGe-2 scale and camera
                cloud, _, _ = moge2_steps.metric_cloud(
                    depth[0], geo["depth"][0], geo["mask"][0], geo["intrinsics"][0], convention="official",
                    colors=payload["original"][0].permute(1, 2, 0).cpu(), outlier_filter=self.options.outlier_filter)
            else:                                     # pixels mapped behind the camera are dropped, as in the nodes
                cloud, metric, _ = outputs.depth_to_cloud(depth[0], "ppd", near=self.options.near,
                                                          far=self.options.far, fov_deg=self.options.fov,
                                                          drop_invalid=True,
                                                          colors=payload["image"][0].permute(1, 2, 0))
                dropped = int(torch.isnan(metric).sum())
                if dropped:
                    print(f"warning: {paths['ply'].name}: {dropped:,} of {metric.numel():,} pixels left out: their "
                          "depth maps to <= 0 or infinity with --near/--far (raise --near or lower --far to keep "
                          "them)", file=sys.stderr)
        overwrite = self.options.overwrite
        at_input: dict[str, str | os.PathLike] = {k: paths[k] for k in ("png16", "color") if k not in keep}
        if at_input:
            outputs.save_depth(depth, at_input, size=payload["input_size"], overwrite=overwrite)
        if "npy" not in keep:                         # raw depth at the processing size (--tiles: input size)
            outputs.save_depth(depth, {"npy": paths["npy"]}, overwrite=overwrite)
        if cloud is not None:
            write_ply(paths["ply"], cloud, overwrite=overwrite)
        if "normals" in paths and "normals" not in keep and geo is not None:
            moge2_steps.save_normals(geo["normal"][0], paths["normals"], overwrite=overwrite)
        return len(keep)

    def finish(self, item: Item, count: int) -> None:
        if item.kind == "video":
            data = json.dumps({"frames": count, "source": item.path.name}).encode()
            atomic_write(self.out / item.stem / MANIFEST, lambda f: f.write(data), overwrite=True)


def resize(image: torch.Tensor, area: int) -> torch.Tensor:
    """The pipeline's preprocessing (validate, official resize to `area`, sides multiples of PPD's 16 px token),
    done on the loader thread."""
    return imaging.resize_keep_aspect(validate_image(image, imaging.DEFAULT_MULTIPLE), area,
                                      multiple=imaging.DEFAULT_MULTIPLE)
