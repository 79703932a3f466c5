"""A video file streamed through PPVD to disk in constant memory, resumable at every window boundary.

Pass 1 decodes one window at a time (stream.py) and appends each window's raw float32 depth to
<stem>_depth.partial.f32, then saves the carry (keyframes, their depth, the fits, the running depth range)
in <stem>_depth.resume.safetensors. Pass 2 reads the raw depth back frame by frame and writes the finished
files, normalised over the whole clip: the 16-bit PNG sequence (near = white), the colour preview .mp4
(encoded as it goes) and <stem>_depth.npz; then the two working files go. A killed run starts again at the
window after the last saved carry and gives the same files as an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor

from ... import imaging
from ...errors import InputError
from ...flicker import measure_flicker_frames
from ...io import images
from ...io.files import atomic_write
from ...io.overlap import WriteBehind, read_ahead
from ...io.video import DecodeError, VideoSource, VideoWriter
from .pipeline import WINDOW, VideoDepthPipeline
from .steps import flicker_text, long_video_warning, video_noise, video_output_paths
from .stream import Carry, ProgressCallback, stream_depth, windows_for

STATE_VERSION = "1"


def working_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    """The working files beside the outputs while a clip runs: raw depth so far and the resume state."""
    return {"raw": out_dir / f"{stem}_depth.partial.f32", "state": out_dir / f"{stem}_depth.resume.safetensors"}


def settings(pipe: VideoDepthPipeline, path: Path, steps: int, seed: int) -> dict[str, str]:
    """What must not change between a run and its resumption: the file, the settings and the weights."""
    st = path.stat()
    digest = hashlib.sha1()
    for module in (pipe.dit, pipe.encoder):
        params = list(module.parameters())
        for p in (params[0], params[-1]):
            digest.update(p.detach().cpu().float().contiguous().numpy().tobytes())
    return {"video": str(path.resolve()), "bytes": str(st.st_size), "mtime_ns": str(st.st_mtime_ns),
            "steps": str(steps), "seed": str(seed), "process_size": "x".join(map(str, pipe.process_size)),
            "weights": str(pipe.weight_dtype), "autocast": str(pipe.autocast_dtype()), "device": pipe.device.type,
            "model": digest.hexdigest()[:16]}


@dataclass
class Progress:
    """Pass 1 so far: the carry into the next window, the frame size and the depth range of the frames written."""

    carry: Carry
    size: tuple[int, int]
    lo: float = float("inf")
    hi: float = float("-inf")

    def update(self, depth: Tensor) -> None:
        ok = depth[torch.isfinite(depth)]
        if ok.numel():
            self.lo, self.hi = min(self.lo, ok.min().item()), max(self.hi, ok.max().item())


def save_state(path: Path, done: Progress, fingerprint: dict[str, str], fps: float, finished: bool) -> None:
    """The resume state, atomically: the carry's tensors plus the settings, counts and range as metadata."""
    c = done.carry
    assert c.keyframes is not None and c.references is not None
    tensors = {"keyframes": torch.from_numpy(np.ascontiguousarray(c.keyframes)),
               "references": c.references.float().contiguous(),
               "scale_shift": torch.tensor(c.scale_shift, dtype=torch.float64).reshape(-1, 2)}
    meta = {"version": STATE_VERSION, "settings": json.dumps(fingerprint, sort_keys=True), "window": str(c.window),
            "written": str(c.written), "height": str(done.size[0]), "width": str(done.size[1]),
            "lo": done.lo.hex(), "hi": done.hi.hex(), "fps": fps.hex(), "finished": str(int(finished))}

    blob = save(tensors, metadata=meta)
    atomic_write(path, lambda f: f.write(blob), overwrite=True)


def load_state(path: Path, fingerprint: dict[str, str]) -> tuple[Progress, float, bool]:
    """(progress, fps, pass 1 finished) from a resume state made with the same settings; else InputError."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}                                   # noqa: SIM118
        ok = meta.get("version") == STATE_VERSION and json.loads(meta["settings"]) == fingerprint
    except Exception as e:  # noqa: BLE001 - any unreadable state is reported the same way
        raise InputError(f"the resume file {path} cannot be read ({e}); pass --overwrite to start the clip again "
                         "(or delete it and the .partial.f32 file beside it).") from e
    if not ok:
        raise InputError(f"{path} belongs to an unfinished run of this clip with other settings (file, steps, seed, "
                         "processing size, precision or model); run with those settings to resume it, or pass "
                         "--overwrite to start again.")
    carry = Carry(int(meta["window"]), int(meta["written"]), t["keyframes"].numpy(), t["references"],
                  [(float(s), float(b)) for s, b in t["scale_shift"].tolist()])
    done = Progress(carry, (int(meta["height"]), int(meta["width"])), float.fromhex(meta["lo"]),
                    float.fromhex(meta["hi"]))
    return done, float.fromhex(meta["fps"]), meta["finished"] == "1"


def run_windows(pipe: VideoDepthPipeline, source: VideoSource, work: dict[str, Path], fingerprint: dict[str, str],
                done: Progress | None, *, steps: int, seed: int, progress: ProgressCallback | None) -> Progress:
    """Pass 1: every window not yet done, its raw depth appended and the state saved at each boundary."""
    carry = done.carry if done else Carry()
    total = windows_for(source.frame_count) if source.frame_count else None
    raw = work["raw"]
    if done is None:
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_bytes(b"")
    with open(raw, "r+b") as f, WriteBehind() as behind:      # window w is written while window w+1 runs
        if done is not None:                    # drop what a window that did not finish appended
            f.truncate(done.carry.written * done.size[0] * done.size[1] * 4)
        f.seek(0, os.SEEK_END)

        def persist(depth: np.ndarray, state: Progress) -> None:
            f.write(depth.tobytes())
            f.flush()
            os.fsync(f.fileno())
            save_state(work["state"], state, fingerprint, source.fps, False)

        try:
            with closing(read_ahead(source.frames(carry.next_frame), WINDOW)) as frames:   # next window decodes
                for w in stream_depth(pipe, frames, video_noise(pipe, seed), steps, carry, progress, total):
                    if done is None:
                        done = Progress(w.carry, (w.depth.shape[1], w.depth.shape[2]))
                    done.carry = w.carry
                    done.update(w.depth)
                    behind.submit(persist, w.depth.numpy(), replace(done))
            behind.finish()
        except DecodeError as e:
            futures.wait(behind.pending)
            kept = done.carry.written if done else 0
            raise DecodeError(f"{e} The depth of frames 0..{kept - 1} is kept in {raw.name}; a run on the repaired "
                              "file starts again.", e.frame) from e
        except OSError as e:
            raise InputError(f"could not write {raw}: {e.strerror or e}. Free disk space (the raw depth needs "
                             f"{4 * source.size[0] * source.size[1]} bytes a frame) and run again: it resumes from "
                             "the last finished window.") from e
    assert done is not None
    save_state(work["state"], done, fingerprint, source.fps, True)
    return done


def raw_frames(raw: Path, n: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """The raw depth of pass 1, frame by frame as (H, W) float32, read with plain reads (a memory map would keep
    every page it touched resident, growing with the clip)."""
    count = size[0] * size[1]
    with open(raw, "rb") as f:
        for _ in range(n):
            frame = np.fromfile(f, dtype=np.float32, count=count)
            if frame.size != count:
                raise InputError(f"{raw} ends before frame {n - 1}; pass --overwrite to compute the clip again.")
            yield frame.reshape(size)


PREVIEWS = ("colormap", "controlnet")


def preview_frame(grey: Tensor, style: str) -> np.ndarray:
    """A normalised depth frame (H,W), far = 1 -> uint8 (H,W,3): the spectral colour map, or ControlNet grey
    (near = white)."""
    if style == "colormap":
        return (imaging.colormap(grey, "spectral") * 255).round().byte().numpy()
    return ((1 - grey) * 255).round().byte()[..., None].expand(*grey.shape, 3).numpy()


def output_paths(out_dir: Path, stem: str, num_frames: int, preview: str = "colormap") -> dict[str, Path | list[Path]]:
    """steps.video_output_paths, the preview named by its style: <stem>_depth_color.mp4 or <stem>_depth_grey.mp4."""
    paths = video_output_paths(out_dir, stem, num_frames)
    if preview == "controlnet":
        paths["preview"] = out_dir / f"{stem}_depth_grey.mp4"
    return paths


def write_outputs(done: Progress, work: dict[str, Path], out_dir: Path, stem: str, fps: float,
                  preview: str | None = "colormap") -> dict[str, Path | list[Path]]:
    """Pass 2: the PNG16 sequence and the preview video in `preview` style (normalised over the whole clip),
    then the .npz, one frame at a time; each file atomic (replacing only files of this run)."""
    n = done.carry.written
    paths = output_paths(out_dir, stem, n, preview or "colormap")
    lo, hi = torch.tensor(done.lo, dtype=torch.float32), torch.tensor(done.hi, dtype=torch.float32)
    writer = VideoWriter(cast(Path, paths["preview"]), fps, overwrite=True) if preview else None
    try:
        for path, depth in zip(cast(list[Path], paths["png16"]), raw_frames(work["raw"], n, done.size)):
            grey = imaging.normalize_range(torch.from_numpy(depth), lo, hi)                   # far = 1
            images.write_png16(path, (1 - grey).numpy(), overwrite=True)
            if writer is not None:
                writer.write(preview_frame(grey, preview or "colormap"))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        paths.pop("preview")
    else:
        writer.close()

    def npz(f) -> None:                    # np.savez's layout (depth.npy, fps.npy), the depth written frame by frame
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            with z.open("depth.npy", "w", force_zip64=True) as e:
                np.lib.format.write_array_header_1_0(e, {"descr": "<f4", "fortran_order": False,
                                                         "shape": (n, *done.size)})
                for depth in raw_frames(work["raw"], n, done.size):
                    e.write(depth.tobytes())
            with z.open("fps.npy", "w") as e:
                np.save(e, np.float32(fps))

    atomic_write(cast(Path, paths["npz"]), npz, overwrite=True)
    return paths


def predict_video_file(pipe: VideoDepthPipeline, path: Path, out_dir: Path, *, steps: int = 4, seed: int = 0,
                       overwrite: bool = False, flicker: bool = False, progress: ProgressCallback | None = None,
                       warn: Callable[[str], None] | None = None, stem: str | None = None,
                       preview: str = "colormap") -> dict:
    """Stream a video file through PPVD into out_dir: <stem>_depth16/<stem>_00000.png..., <stem>_depth_color.mp4
    (`preview`: "colormap" spectral, or "controlnet" grey near = white), <stem>_depth.npz (and
    <stem>_flicker.json / .txt with `flicker`). A state file left by a killed run with the same settings resumes
    it; otherwise existing outputs are refused before any work (unless `overwrite`)."""
    if preview not in PREVIEWS:
        raise InputError(f"unknown preview style {preview!r}; choose one of {PREVIEWS}.")
    stem = stem or path.stem
    source = VideoSource(path)
    work = working_paths(out_dir, stem)
    fingerprint = settings(pipe, path, steps, seed)
    paths = output_paths(out_dir, stem, 0, preview)
    extra = {"flicker_json": out_dir / f"{stem}_flicker.json",
             "flicker_txt": out_dir / f"{stem}_flicker.txt"} if flicker else {}
    done, finished = None, False
    if overwrite:
        for p in work.values():
            p.unlink(missing_ok=True)
    elif work["state"].exists():
        done, _, finished = load_state(work["state"], fingerprint)
    else:
        folder = cast(list[Path], paths["png16"])[0].parent if paths["png16"] else out_dir / f"{stem}_depth16"
        existing = [p for p in (paths["preview"], paths["npz"], *extra.values()) if Path(str(p)).exists()]
        existing += sorted(folder.glob(f"{stem}_*.png")) if folder.is_dir() else []
        if existing:
            raise InputError(f"{len(existing)} output file(s) already exist (e.g. {existing[0]}); pass --overwrite "
                             "or choose another --out folder.")
    if source.variable_rate and warn is not None:
        warn(f"{path.name} has a variable frame rate; every decoded frame gets a depth frame and the preview "
             f"plays at the average {source.fps:.3g} fps.")
    if done is None and source.frame_count:
        note = long_video_warning(pipe, source.frame_count, steps)
        if note and warn is not None:
            warn(note)
    if not finished:
        done = run_windows(pipe, source, work, fingerprint, done, steps=steps, seed=seed, progress=progress)
    assert done is not None
    written = write_outputs(done, work, out_dir, stem, source.fps, preview)
    out: dict = {"frames": done.carry.written, "size": done.size, "fps": source.fps, "paths": written}
    if flicker:
        n = done.carry.written                         # read back frame by frame: CHUNK + 1 frames in memory
        frames = (torch.from_numpy(f) for f in raw_frames(work["raw"], n, done.size))
        report = measure_flicker_frames(frames) if n >= 2 else None
        summary, table = flicker_text(report)
        data = {"summary": summary, **(report.as_dict() if report is not None else {})}
        atomic_write(extra["flicker_json"], lambda f: f.write(json.dumps(data, indent=1).encode()), True)
        atomic_write(extra["flicker_txt"], lambda f: f.write((summary + "\n\n" + table + "\n").encode()), True)
        out.update(flicker=summary, paths={**written, **extra})
    for p in work.values():
        p.unlink(missing_ok=True)
    return out
