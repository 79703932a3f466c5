"""`python -m comfyui_ppd bench image`: time the encoder, one DiT step and a whole image on this device.

Models have the released shapes (`full`) or a named smaller size, with random weights. Every part is
run `--warmup` times, then `--repeats` times interleaved with the other parts; the table shows medians.

The FLOP formula is in comfyui_ppd.families.ppd.flops.

Roofline: every distinct GEMM shape of a part is timed as a bare `torch.mm` in the compute dtype in the
same run; the part's roofline is its GEMM FLOP / sum(count * bare time). "% roofline" = achieved FLOP/s
(all FLOP above, attention included) / that rate. Peak memory and "activation": see bench/harness.py.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .. import runtime
from ..encoders.da2 import DepthAnythingV2Encoder
from ..families.ppd.dit import DiTConfig, PPDDiT
from ..families.ppd.flops import Gemm, Work, condition_work, dit_step_work, encoder_work
from ..families.ppd.pipeline import PPDPipeline, activation_bytes
from ..nn.dinov2 import ViTConfig
from ..sampling import sampling_timesteps
from . import harness
from .harness import NAMES, MemoryMeter, Sample, describe_device, measure, random_init, synchronize

SIZES: dict[str, tuple[DiTConfig, ViTConfig]] = {
    "full": (DiTConfig(), ViTConfig()),
    "small": (DiTConfig(hidden_size=384, depth=12, num_heads=6, mlp_hidden=1536, semantic_dim=384),
              ViTConfig(embed_dim=384, depth=12, num_heads=6, mlp_hidden=1536)),
    "tiny": (DiTConfig(hidden_size=32, depth=2, num_heads=2, mlp_hidden=64, semantic_dim=64),
             ViTConfig(embed_dim=64, depth=2, num_heads=1, mlp_hidden=128)),
}
PARTS = ("encoder", "condition", "step", "flat", "e2e")
TOKEN_PX = DiTConfig().token_px   # --size must be a whole number of coarse DiT tokens
COMPILE_MODES = ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def time_matmuls(gemms: list[Gemm], device: torch.device, dtype: torch.dtype) -> dict[tuple, float]:
    """Seconds of one bare torch.mm per distinct (m, k, n), each averaged over >= ~5 ms of calls."""
    out = {}
    for shape in sorted({(g.m, g.k, g.n) for g in gemms}):
        m, k, n = shape
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(k, n, device=device).to(dtype)
        torch.mm(a, b)
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        calls = max(1, min(1000, int(0.005 / max(time.perf_counter() - start, 1e-7))))
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b)
        synchronize(device)
        out[shape] = (time.perf_counter() - start) / calls
    return out


def roofline(work: Work, mm_seconds: dict[tuple, float]) -> float:
    """FLOP/s of the part's GEMMs run back to back as bare matmuls."""
    seconds = sum(mm_seconds[(g.m, g.k, g.n)] * g.count for g in work.gemms)
    return sum(g.flop for g in work.gemms) / seconds


# --- the benchmarked model ----------------------------------------------------------------------
def random_models(dit_cfg: DiTConfig, vit_cfg: ViTConfig, device: torch.device, dtype: torch.dtype,
                  seed: int = 0) -> tuple[PPDDiT, DepthAnythingV2Encoder]:
    """Models with random weights: N(0, 0.02) matrices, zero biases, unit norm weights, 1e-5 layer scale."""
    torch.manual_seed(seed)
    with torch.device(device):
        dit, enc = PPDDiT(dit_cfg), DepthAnythingV2Encoder(vit_cfg)
    return random_init(dit, dtype), random_init(enc, dtype)


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' (multiples of the coarse DiT token, 16) -> (height, width)."""
    return harness.parse_size(text, TOKEN_PX, "1024x768")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="full", choices=list(SIZES), help="model size, random weights (default full)")
    p.add_argument("--depth", type=int, help="override the DiT and encoder depth (even; e.g. 4 to explore)")
    p.add_argument("--size", type=parse_size, default=(768, 1024), metavar="WxH",
                   help="processing resolution, width x height, multiples of 16 (default 1024x768)")
    p.add_argument("--steps", type=int, default=4, help="sampling steps for the end-to-end time (default 4)")
    p.add_argument("--batch", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=runtime.CHOICES,
                   help="the precision policy's choice (README table; auto: CUDA fp32 weights + bf16 autocast)")
    p.add_argument("--weights", choices=list(runtime.DTYPES),
                   help="override the policy's stored weight dtype (autocast unchanged)")
    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES,
                   help="torch.compile the DiT blocks (comfyui_ppd.runtime), optionally with a torch.compile mode")
    p.add_argument("--parts", default="encoder,condition,step,flat,e2e",
                   help="comma list of encoder, condition, step, flat (no cascade), e2e (default all)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per part, median reported (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per part first (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", type=Path, help="also write the results here")


@dataclass
class Setup:
    """What one benchmark run times: a callable and its analytic work per part."""

    calls: dict[str, Callable[[], object]]
    works: dict[str, Work]
    evaluations: int
    weight_bytes: int
    activation_estimate: int
    compiled: bool


def setup(args: argparse.Namespace, device: torch.device, precision: runtime.Precision) -> Setup:
    """Random models of the chosen size, inputs at the chosen resolution, and the call for every part."""
    dit_cfg, vit_cfg = model_configs(args)
    (h, w), b = args.size, args.batch
    dit, enc = random_models(dit_cfg, vit_cfg, device, precision.weights)
    pipe = PPDPipeline(dit, enc, autocast=precision.autocast)
    if args.compile:
        runtime.compile_blocks(dit, mode=None if args.compile == "default" else args.compile)
    gen = torch.Generator().manual_seed(0)
    image, noise = torch.rand(b, 3, h, w, generator=gen), torch.randn(b, 1, h, w, generator=gen)
    image_dev, latent, t = image.to(device), noise.to(device), torch.tensor(500, device=device)
    with torch.inference_mode(), pipe.autocast():
        semantics = enc(image_dev)
        cond = dit.condition(image_dev - 0.5, semantics)

    def in_context(fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode(), pipe.autocast():
                return fn()
        return call

    evaluations = len(sampling_timesteps(args.steps))
    works = {"encoder": encoder_work(vit_cfg, h, w, b, dit_cfg.token_px), "condition": condition_work(dit_cfg, h, w, b),
             "step": dit_step_work(dit_cfg, h, w, b), "flat": dit_step_work(dit_cfg, h, w, b, cascade=False)}
    works["e2e"] = works["encoder"] + works["condition"] + works["step"].times(evaluations)
    calls = {"encoder": lambda: pipe.encode(image),
             "condition": in_context(lambda: dit.condition(image_dev - 0.5, semantics)),
             "step": in_context(lambda: dit.forward_condition(latent, cond, t)),
             "flat": in_context(lambda: dit.forward_condition(latent, cond, t, cascade=False)),
             "e2e": lambda: pipe.sample(image, pipe.encode(image), args.steps, noise)}
    weight_bytes = sum(p.numel() * p.element_size() for p in [*dit.parameters(), *enc.parameters()])
    return Setup(calls, works, evaluations, weight_bytes, activation_bytes(dit, h, w) * b,
                 args.compile is not None and runtime.is_compiled(dit))


def model_configs(args: argparse.Namespace) -> tuple[DiTConfig, ViTConfig]:
    dit_cfg, vit_cfg = SIZES[args.model]
    if args.depth:
        return replace(dit_cfg, depth=args.depth), replace(vit_cfg, depth=args.depth)
    return dit_cfg, vit_cfg


def time_parts(prepared: Setup, parts: list[str], device: torch.device, gemm_dtype: torch.dtype,
               warmup: int, repeats: int) -> tuple[dict[str, list[Sample]], dict[str, float], dict[tuple, float]]:
    """Rounds of every part in turn (warm-up rounds dropped), each timed round followed by the bare matmuls.

    Returns the timed samples per part, the first call's seconds per part, and median matmul seconds.
    """
    meter = MemoryMeter(device)
    gemms = [g for p in parts for g in prepared.works[p].gemms]
    samples: dict[str, list[Sample]] = {p: [] for p in parts}
    first_call: dict[str, float] = {}
    mm_runs = []
    for r in range(warmup + repeats):
        for p in parts:
            s = measure(prepared.calls[p], device, meter)
            first_call.setdefault(p, s.seconds)
            if r >= warmup:
                samples[p].append(s)
        if r >= warmup:
            mm_runs.append(time_matmuls(gemms, device, gemm_dtype))
    return samples, first_call, {k: statistics.median(run[k] for run in mm_runs) for k in mm_runs[0]}


def part_result(samples: list[Sample], first_call: float, work: Work, mm_seconds: dict[tuple, float],
                batch: int) -> dict:
    secs = statistics.median(s.seconds for s in samples)
    rate = roofline(work, mm_seconds)
    peaks = [s.peak for s in samples if s.peak is not None]
    acts = [s.activation for s in samples if s.activation is not None]
    return {"seconds": secs, "seconds_per_image": secs / batch, "samples": [s.seconds for s in samples],
            "first_call_seconds": first_call, "flop": work.flop, "tflops": work.flop / secs / 1e12,
            "matmul_tflops": rate / 1e12, "roofline_fraction": work.flop / secs / rate,
            "peak_bytes": max(peaks) if peaks else None, "activation_bytes": max(acts) if acts else None}


def run(args: argparse.Namespace) -> dict:
    """Build the models, time every selected part interleaved, and return the results as a dict."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = runtime.pick_device(args.device)
    policy = runtime.precision(args.precision, device)
    if args.weights:
        policy = runtime.Precision(runtime.DTYPES[args.weights], policy.autocast)
    compute = policy.autocast or policy.weights
    prepared = setup(args, device, policy)
    parts = parse_parts(args.parts)
    samples, first_call, mm_seconds = time_parts(prepared, parts, device, compute,
                                                 args.warmup, args.repeats)
    results = {p: part_result(samples[p], first_call[p], prepared.works[p], mm_seconds, args.batch) for p in parts}
    dit_cfg, vit_cfg = model_configs(args)
    out = {"device": describe_device(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "model": args.model, "dit_config": asdict(dit_cfg), "vit_config": asdict(vit_cfg),
           "height": args.size[0], "width": args.size[1], "batch": args.batch, "steps": args.steps,
           "evaluations": prepared.evaluations, "precision": NAMES[compute], "weights": NAMES[policy.weights],
           "compile": args.compile, "compiled": prepared.compiled, "repeats": args.repeats, "warmup": args.warmup,
           "parts": results, "weight_bytes": prepared.weight_bytes,
           "activation_estimate_bytes": prepared.activation_estimate}
    if "step" in results and "flat" in results:
        out["cascade"] = {"flat_over_cascade_time": results["flat"]["seconds"] / results["step"]["seconds"],
                          "time_saving": 1 - results["step"]["seconds"] / results["flat"]["seconds"],
                          "flop_saving": 1 - prepared.works["step"].flop / prepared.works["flat"].flop}
    return out


def compile_note(res: dict) -> str:
    if not res["compile"]:
        return ""
    return f", compiled ({res['compile']})" if res["compiled"] else ", compile failed: eager"


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2 ** 20:,.0f}"


def format_table(res: dict) -> str:
    """The results as a plain-text table."""
    names = {"encoder": "encoder", "condition": "condition (once/image)", "step": "DiT step",
             "flat": "DiT step, no cascade", "e2e": f"end to end, {res['steps']} steps"}
    head = (f"{res['model']} model, {res['width']}x{res['height']}, batch {res['batch']}, {res['precision']}"
            f"{' autocast' if res['precision'] != 'fp32' else ''}, {res['weights']} weights"
            f"{compile_note(res)} | {res['device']} | torch {res['torch']}")
    lines = [head, f"{'part':<24}{'ms':>11}{'ms/img':>11}{'GFLOP':>10}{'TFLOP/s':>9}{'mm TFLOP/s':>11}"
                   f"{'%roof':>7}{'peak MiB':>10}{'act MiB':>9}"]
    for key, r in res["parts"].items():
        lines.append(f"{names[key]:<24}{1e3 * r['seconds']:>11.1f}{1e3 * r['seconds_per_image']:>11.1f}"
                     f"{r['flop'] / 1e9:>10.1f}{r['tflops']:>9.3f}{r['matmul_tflops']:>11.3f}"
                     f"{100 * r['roofline_fraction']:>7.1f}"
                     f"{_mib(r['peak_bytes']):>10}{_mib(r['activation_bytes']):>9}")
    if "cascade" in res:
        c = res["cascade"]
        lines.append(f"cascade: no-cascade step takes {c['flat_over_cascade_time']:.2f}x the cascaded one "
                     f"(time saving {100 * c['time_saving']:.0f}%, FLOP saving {100 * c['flop_saving']:.0f}%)")
    lines.append(f"weights {_mib(res['weight_bytes'])} MiB; pipeline activation estimate "
                 f"{_mib(res['activation_estimate_bytes'])} MiB per forward")
    return "\n".join(lines)


def parse_parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ValueError(f"unknown or no parts {unknown}; choose from {', '.join(PARTS)}")
    return parts


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check what argparse cannot, run, print the table (and write --json)."""
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1 or args.steps < 1:
        parser.error("--repeats, --batch and --steps must be >= 1 and --warmup >= 0")
    if args.depth is not None and (args.depth < 2 or args.depth % 2):
        parser.error("--depth must be even and >= 2 (half the blocks run on each grid)")
    try:
        parse_parts(args.parts)
    except ValueError as e:
        parser.error(str(e))
    res = run(args)
    print(format_table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0
