"""The video model's steps the CLI and the nodes share: load the pipeline, predict a clip or a file, estimate
its run time, measure flicker, write the depth video's files."""
from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import torch
from torch import Tensor

from ...checkpoints import Source
from ...encoders.pi3 import PI3_EXPECTED, PI3_FIX
from ...flicker import FlickerReport, measure_flicker
from ...loaders import load
from ...registry import in_slots
from ...runtime import Precision
from . import EXPECTED, FIX, Pi3Semantics, VideoDepthPipeline, VideoDepthResult, VideoDiT, window_plan
from .flops import window_flop
from .pipeline import WINDOW, Frames, ProgressCallback


def load_video_pipeline(dit: Source, encoder: Source, precision: Precision, *, device: torch.device | str = "cpu",
                        process_size: tuple[int, int] = (512, 512)) -> VideoDepthPipeline:
    """The video DiT (ppvd.pth) and Pi3 (pi3.safetensors) in the policy's weight dtype, run under its autocast;
    image-model files are refused with their advice (use the image nodes)."""
    w = precision.weights
    return VideoDepthPipeline(cast(VideoDiT, load(dit, in_slots("video_dit"), EXPECTED, FIX, device=device, dtype=w)),
                              cast(Pi3Semantics, load(encoder, in_slots("video_encoder"), PI3_EXPECTED, PI3_FIX,
                                                      device=device, dtype=w)),
                              process_size=process_size, autocast=precision.autocast)


def video_noise(pipe: VideoDepthPipeline, seed: int) -> Tensor:
    """The (16,1,h,w) initial latent every window starts from, drawn on the CPU so a seed means the same noise
    on every device."""
    return torch.randn((WINDOW, 1, *pipe.process_size), generator=torch.Generator().manual_seed(seed))


def predict_video(pipe: VideoDepthPipeline, frames: Frames, *, steps: int = 4, seed: int = 0,
                  progress: ProgressCallback | None = None) -> VideoDepthResult:
    """Depth (N,1,H,W) for frames (N,3,H,W) RGB in [0,1] (or a sequence of (3,H,W)), aligned across windows;
    `progress(done, total)` after every DiT evaluation (windows x evaluations) may raise to stop."""
    return pipe.run(frames, steps, noise=video_noise(pipe, seed), callback=progress)


def matmul_rate(device: torch.device) -> float:
    """FLOP/s of a 512x512 fp32 matmul on `device`, measured now (a few ms)."""
    a = torch.ones(512, 512, device=device)
    a @ a                                                                                # warm-up
    start = time.perf_counter()
    for _ in range(4):
        a @ a
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 4 * 2 * 512 ** 3 / max(time.perf_counter() - start, 1e-9)


def video_seconds(pipe: VideoDepthPipeline, num_frames: int, steps: int = 4) -> float:
    """A rough run time: the clip's FLOP (families/ppvd/flops.py) over this device's measured matmul rate."""
    h, w = pipe.process_size
    per_window = window_flop(pipe.dit.config, cast(Pi3Semantics, pipe.encoder).config, h, w, steps)
    return len(window_plan(num_frames)) * per_window / matmul_rate(pipe.device)


def long_video_warning(pipe: VideoDepthPipeline, num_frames: int, steps: int = 4,
                       limit_s: float = 600.0) -> str | None:
    """A warning with a time estimate when a clip would take more than `limit_s` on a CPU; None otherwise."""
    if pipe.device.type != "cpu":
        return None
    seconds = video_seconds(pipe, num_frames, steps)
    if seconds <= limit_s:
        return None
    return (f"PPD video: {num_frames} frames on the CPU will take roughly {_duration(seconds)} "
            f"({len(window_plan(num_frames))} windows of 16 frames, {steps} steps each). A GPU is ~100x faster; "
            "fewer frames, fewer steps or a smaller process size also help. Cancel stops between steps.")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def flicker_report(depth: Tensor) -> FlickerReport | None:
    """Flicker figures of a depth video (every pixel treated as static: right for a still camera; a moving
    camera's figure includes real depth change); None for a single frame."""
    return measure_flicker(depth) if depth.shape[0] >= 2 else None


def flicker_text(report: FlickerReport | None) -> tuple[str, str]:
    """(one-line summary, per-frame values as lines 'frame  log-scale  shift  change  residual')."""
    if report is None:
        return "flicker: one frame, nothing to compare", ""
    lines = ["frame\tlog_scale_vs_frame0\tshift_vs_frame0\tchange_to_previous\tresidual_to_previous"]
    for t in range(len(report.frame_log_scale)):
        change = f"{report.change[t - 1].item():.6g}" if t else ""
        residual = f"{report.residual[t - 1].item():.6g}" if t else ""
        lines.append(f"{t}\t{report.frame_log_scale[t].item():.6g}\t{report.frame_shift[t].item():.6g}\t"
                     f"{change}\t{residual}")
    return report.summary, "\n".join(lines)


def video_output_paths(out_dir: Path, stem: str, num_frames: int) -> dict[str, Path | list[Path]]:
    """Where clip.predict_video_file writes: a 16-bit PNG per frame in <stem>_depth16/, the colour preview .mp4 and
    the raw depth .npz."""
    folder = out_dir / f"{stem}_depth16"
    return {"png16": [folder / f"{stem}_{i:05d}.png" for i in range(num_frames)],
            "preview": out_dir / f"{stem}_depth_color.mp4", "npz": out_dir / f"{stem}_depth.npz"}
