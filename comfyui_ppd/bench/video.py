"""`python -m comfyui_ppd bench video`: the video model (PPVD: video DiT + Pi3) on this device.

Random weights of the released shapes (`full`, the default on CUDA) or a tiny model (`tiny`, the default
elsewhere). Times Pi3 on one window, one DiT evaluation on one window and a whole clip (`--frames`; 29 frames
= 2 windows), each `--repeats` times after `--warmup` runs (medians), with peak memory as bench/harness.py
measures it. Whatever runs, the full-size cost is also given by calculation (families/ppvd/flops.py): FLOP per DiT
step, Pi3 and window at the chosen size, per new frame, weights and the activation estimate.
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path

import torch

from .. import runtime
from ..encoders.pi3 import Pi3Config, Pi3Semantics
from ..families.ppvd import VideoDepthPipeline, window_plan
from ..families.ppvd.dit import VideoDiT, VideoDiTConfig
from ..families.ppvd.flops import dit_step_work, pi3_work, window_work
from ..families.ppvd.pipeline import WINDOW
from ..nn.dinov2 import ViTConfig
from ..sampling import sampling_timesteps
from . import harness
from .harness import NAMES, MemoryMeter, Sample, describe_device, measure, random_init

SIZES: dict[str, tuple[VideoDiTConfig, Pi3Config]] = {
    "full": (VideoDiTConfig(), Pi3Config()),
    "tiny": (VideoDiTConfig(hidden_size=32, depth=8, num_heads=2, mlp_hidden=64, semantic_dim=64, temporal_depth=2),
             Pi3Config(encoder=ViTConfig(embed_dim=32, depth=2, num_heads=1, mlp_hidden=64, num_register_tokens=4,
                                         interpolate_offset=0.0, interpolate_antialias=True, mask_token=False),
                       width=32, depth=2, num_heads=1, mlp_hidden=64)),
}
PARTS = {"pi3": "Pi3 (one window)", "step": "DiT step (one window)", "clip": "whole clip"}


def random_models(dit_cfg: VideoDiTConfig, pi3_cfg: Pi3Config, device: torch.device, dtype: torch.dtype,
                  seed: int = 0) -> tuple[VideoDiT, Pi3Semantics]:
    """N(0, 0.02) matrices, zero biases, unit norm weights, 1e-5 layer scale; the sin-cos table kept."""
    torch.manual_seed(seed)
    with torch.device(device):
        dit, enc = VideoDiT(dit_cfg), Pi3Semantics(pi3_cfg)
    return random_init(dit, dtype, keep=("pos_embed",)), random_init(enc, dtype)


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' (multiples of 16) -> (height, width)."""
    return harness.parse_size(text, 16, "512x512")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=list(SIZES), help="model size, random weights (default: full on CUDA, "
                                                        "tiny elsewhere)")
    p.add_argument("--size", type=parse_size, default=(512, 512), metavar="WxH",
                   help="processing size, multiples of 16 from 32 (default 512x512, the trained size)")
    p.add_argument("--frames", type=int, default=29, help="frames of the timed clip (default 29 = 2 windows)")
    p.add_argument("--steps", type=int, default=4, help="sampling steps per window (default 4)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=runtime.CHOICES, help="the precision policy's choice")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per part, median reported (default 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per part first (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", type=Path, help="also write the results here")


def calculation(dit_cfg: VideoDiTConfig, pi3_cfg: Pi3Config, height: int, width: int, steps: int) -> dict:
    """FLOP of the parts of one window and per new frame (13 per later window), from the formula."""
    window = window_work(dit_cfg, pi3_cfg, height, width, steps).flop
    return {"dit_step_flop": dit_step_work(dit_cfg, height, width).flop,
            "pi3_flop": pi3_work(pi3_cfg, height, width).flop,
            "window_flop": window, "flop_per_new_frame": window / (WINDOW - 3)}


def parameters(dit_cfg: VideoDiTConfig, pi3_cfg: Pi3Config) -> tuple[int, int]:
    """Parameter counts (video DiT with pos_embed, Pi3's semantic path), built on the meta device."""
    with torch.device("meta"):
        return (sum(p.numel() for p in VideoDiT(dit_cfg).parameters()),
                sum(p.numel() for p in Pi3Semantics(pi3_cfg).parameters()))


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = runtime.pick_device(args.device)
    model = args.model or ("full" if device.type == "cuda" else "tiny")
    policy = runtime.precision(args.precision, device)
    (h, w), steps = args.size, args.steps
    dit_cfg, pi3_cfg = SIZES[model]
    dit, enc = random_models(dit_cfg, pi3_cfg, device, policy.weights)
    pipe = VideoDepthPipeline(dit, enc, process_size=(h, w), autocast=policy.autocast)
    gen = torch.Generator().manual_seed(0)
    frames = torch.rand(args.frames, 3, h, w, generator=gen)
    window = frames[:WINDOW].to(device) if args.frames >= WINDOW else frames[[0] * WINDOW].to(device)
    noise = torch.randn(WINDOW, 1, h, w, generator=gen).to(device)
    t = torch.tensor(500, device=device)
    with torch.inference_mode(), pipe.autocast():
        semantics = enc(window)
    x = torch.cat([noise, window - 0.5], dim=1)

    def in_context(fn):
        def call():
            with torch.inference_mode(), pipe.autocast():
                return fn()
        return call

    calls = {"pi3": in_context(lambda: enc(window)), "step": in_context(lambda: dit(x, semantics, t)),
             "clip": lambda: pipe.run(frames, steps, noise=noise.cpu())}
    windows = len(window_plan(args.frames))
    flop = {"pi3": pi3_work(pi3_cfg, h, w).flop, "step": dit_step_work(dit_cfg, h, w).flop,
            "clip": windows * window_work(dit_cfg, pi3_cfg, h, w, steps).flop}
    meter = MemoryMeter(device)
    samples: dict[str, list[Sample]] = {p: [] for p in PARTS}
    for r in range(args.warmup + args.repeats):
        for part, fn in calls.items():
            s = measure(fn, device, meter)
            if r >= args.warmup:
                samples[part].append(s)
    parts = {}
    for part, ss in samples.items():
        secs = statistics.median(s.seconds for s in ss)
        peaks = [s.peak for s in ss if s.peak is not None]
        parts[part] = {"seconds": secs, "flop": flop[part], "tflops": flop[part] / secs / 1e12,
                       "peak_bytes": max(peaks) if peaks else None}
    parts["clip"]["seconds_per_frame"] = parts["clip"]["seconds"] / args.frames
    full_dit, full_pi3 = SIZES["full"]
    dit_params, pi3_params = parameters(full_dit, full_pi3)
    return {"device": describe_device(device), "torch": torch.__version__, "model": model,
            "dit_config": asdict(dit_cfg), "height": h, "width": w, "frames": args.frames, "windows": windows,
            "steps": steps, "evaluations": len(sampling_timesteps(steps)),
            "precision": NAMES[policy.autocast or policy.weights], "parts": parts,
            "weight_bytes": sum(p.numel() * p.element_size() for p in [*dit.parameters(), *enc.parameters()]),
            "activation_estimate_bytes": pipe.activation_bytes(),
            "full_size": {**calculation(full_dit, full_pi3, h, w, steps), "dit_parameters": dit_params,
                          "pi3_parameters": pi3_params, "weight_bytes_fp32": 4 * (dit_params + pi3_params)}}


def format_table(res: dict) -> str:
    head = (f"PPVD {res['model']} model (random weights), {res['width']}x{res['height']}, {res['frames']} frames "
            f"= {res['windows']} window(s), {res['steps']} steps, {res['precision']} | {res['device']} | "
            f"torch {res['torch']}")
    lines = [head, f"{'part':<24}{'ms':>12}{'GFLOP':>12}{'TFLOP/s':>9}{'peak MiB':>10}"]
    for key, r in res["parts"].items():
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2 ** 20:,.0f}"
        lines.append(f"{PARTS[key]:<24}{1e3 * r['seconds']:>12.1f}{r['flop'] / 1e9:>12.2f}{r['tflops']:>9.3f}"
                     f"{peak:>10}")
    lines.append(f"per frame: {1e3 * res['parts']['clip']['seconds_per_frame']:.1f} ms; weights "
                 f"{res['weight_bytes'] / 2 ** 20:,.0f} MiB; activation estimate "
                 f"{res['activation_estimate_bytes'] / 2 ** 20:,.0f} MiB per window")
    f = res["full_size"]
    lines.append(f"full size by calculation at {res['width']}x{res['height']}: DiT step "
                 f"{f['dit_step_flop'] / 1e12:.1f} TFLOP, Pi3 {f['pi3_flop'] / 1e12:.1f} TFLOP, "
                 f"window of {res['steps']} steps "
                 f"{f['window_flop'] / 1e12:.1f} TFLOP ({f['flop_per_new_frame'] / 1e12:.1f} TFLOP per new frame); "
                 f"parameters: video DiT {f['dit_parameters']:,}, Pi3 semantic path {f['pi3_parameters']:,} "
                 f"({f['weight_bytes_fp32'] / 2 ** 30:.1f} GiB fp32)")
    return "\n".join(lines)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check what argparse cannot, run, print the table (and write --json)."""
    if args.repeats < 1 or args.warmup < 0 or args.frames < 1 or args.steps < 1:
        parser.error("--repeats, --frames and --steps must be >= 1 and --warmup >= 0")
    res = run(args)
    print(format_table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0
