"""`python -m comfyui_ppd bench stream`: peak memory of `predict clip.mp4` against the clip's length.

Writes tiny random video models (`bench video`'s `tiny` sizes) and synthetic clips of each `--frames` count,
then runs `python -m comfyui_ppd predict clip.mp4` in a fresh process per clip and reports that process's
peak RSS (getrusage of a one-child wrapper) and wall time. `--checkout DIR` measures another checkout of the
pack the same way in the same run (e.g. a `git worktree` of the commit before streaming), for a before/after.
A benchmark, not a test: the numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .video import SIZES, random_models

WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r)")


def write_models(folder: Path) -> None:
    """ppvd.pth and pi3.safetensors of bench_video's tiny sizes in the release's key layouts."""
    dit, enc = random_models(*SIZES["tiny"], torch.device("cpu"), torch.float32)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"dit_video." + k: v for k, v in dit.state_dict().items()}, folder / "ppvd.pth")
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(folder / "pi3.safetensors"))


def write_clip(path: Path, frames: int, height: int, width: int, fps: int = 24) -> None:
    """A moving gradient with noise, H.264, `frames` frames of height x width."""
    from ..io.video import write_video
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]

    def frame(t: int) -> np.ndarray:
        base = ((x + 3 * t) % width) / width * 200 + (y / height) * 40
        rgb = np.stack([base, np.roll(base, t, axis=0), 255 - base], -1) + rng.normal(0, 8, (height, width, 3))
        return rgb.clip(0, 255).astype(np.uint8)

    write_video(path, (frame(t) for t in range(frames)), fps, overwrite=True)


def measure(checkout: Path, models: Path, clip: Path, out: Path, process: str) -> dict:
    """Peak RSS (MB) and seconds of one `predict` run in a fresh process with `checkout` on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "comfyui_ppd", "predict", str(clip), "--out",
           str(out), "--models-dir", str(models), "--process-size", process, "--steps", "1", "--no-progress",
           "--device", "cpu"]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=checkout)
    seconds = time.perf_counter() - start
    rss_kb, rc = done.stdout.strip().splitlines()[-1].split()
    if rc != "0":
        raise RuntimeError(f"predict failed ({rc}) in {checkout}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return {"peak_rss_mb": int(rss_kb) / 1024, "seconds": seconds}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", default="32,256", help="clip lengths, comma-separated (default 32,256)")
    p.add_argument("--clip-size", default="320x240", help="WIDTHxHEIGHT of the clips (default 320x240)")
    p.add_argument("--process-size", default="64x64", help="processing size (default 64x64)")
    p.add_argument("--checkout", action="append", type=Path, default=[],
                   help="another checkout of the pack to measure too (repeatable)")
    p.add_argument("--work", type=Path, help="folder for models, clips and outputs (default: a temporary one)")
    p.add_argument("--json", type=Path, help="also write the results here")


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Measure every clip length in every checkout; print one line each and the long/short ratios."""
    frames = [int(f) for f in args.frames.split(",")]
    width, height = (int(v) for v in args.clip_size.lower().split("x"))
    here = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        write_models(work / "models")
        rows: list[dict] = []
        for n in frames:
            clip = work / f"clip{n}.mp4"
            write_clip(clip, n, height, width)
            for checkout in [here, *args.checkout]:
                out = work / f"out_{len(rows)}"
                row = {"checkout": str(checkout), "frames": n, "clip": f"{width}x{height}",
                       "process": args.process_size, **measure(checkout, work / "models", clip, out,
                                                               args.process_size)}
                rows.append(row)
                print(f"{row['checkout']}: {n} frames {width}x{height} at {args.process_size}: peak RSS "
                      f"{row['peak_rss_mb']:.0f} MB, {row['seconds']:.1f} s", flush=True)
    for checkout in [here, *args.checkout]:
        mine = [r for r in rows if r["checkout"] == str(checkout)]
        if len(mine) > 1:
            ratio = mine[-1]["peak_rss_mb"] / mine[0]["peak_rss_mb"]
            print(f"{checkout}: peak RSS {mine[-1]['frames']} vs {mine[0]['frames']} frames: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0
