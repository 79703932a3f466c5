"""`python -m comfyui_ppd bench`: time the encoder, one DiT step and a whole image on this device.

Models have the released shapes (`full`) or a named smaller size, with random weights. Every part is
run `--warmup` times, then `--repeats` times interleaved with the other parts; the table shows medians.

FLOP count (a matmul (m x k)(k x n) is 2*m*k*n FLOP; elementwise work, norms and softmax are ignored).
B images, Nc = (H/16)(W/16) coarse tokens, Nf = 4*Nc fine tokens, DiT width D, MLP width M, depth L,
patch p (8), semantic width C; ViT width E, MLP width Me, depth Le, T = 1 + Nc tokens (the 14-px grid of
the 7/8-resized image equals the 16-px grid).
  DiT block over N tokens:  2*B*N*(3D^2 + D^2 + 2*D*M)  [qkv, proj, fc1, fc2]
                          + 4*B*N^2*D                   [attention: Q K^T and P V]
                          + 2*D*6D                      [adaLN modulation, once: one timestep per step]
  DiT step (cascade):       L/2 blocks on Nc + L/2 blocks on Nf
                          + 2*B*Nc*D*(2p)^2             [patch conv of the latent channel]
                          + 2*B*Nc*(D*4D + 2*(4D)^2)    [fusion MLP, token half of the first linear]
                          + 2*B*Nf*D*p^2 + 2*D*2D       [final layer]  + 2*(256*D + D^2) [timestep MLP]
  DiT step (flat):          the same with all L blocks on Nf (the no-cascade variant)
  condition (once/image):   2*B*Nc*D*3*(2p)^2 + 2*B*Nc*C*4D   [image channels, semantic half of fusion]
  encoder (ViT, once/image): 2*B*(T-1)*E*3*14^2 + Le*(2*B*T*(4E^2 + 2*E*Me) + 4*B*T^2*E)
  end to end:               encoder + condition + evaluations * DiT step  (evaluations = len(timesteps))
Full size at 1024x768: 12.75 TFLOP per DiT step, 2.78 TFLOP encoder, 53.8 TFLOP for 4 steps.

Roofline: every distinct GEMM shape of a part is timed as a bare `torch.mm` in the compute dtype in the
same run; the part's roofline is its GEMM FLOP / sum(count * bare time). "% roofline" = achieved FLOP/s
(all FLOP above, attention included) / that rate. Peak memory: CUDA max_memory_allocated, CPU peak RSS
(VmHWM, reset per part through /proc/self/clear_refs); "activation" is the peak minus the memory before.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .accel import compile_dit, is_compiled
from .models.dinov2 import ViTConfig
from .models.dit import Condition, DiTConfig, PPDDiT
from .models.encoders import DepthAnythingV2Encoder
from .pipeline import PPDPipeline, activation_bytes
from .sampling import sampling_timesteps

SIZES: dict[str, tuple[DiTConfig, ViTConfig]] = {
    "full": (DiTConfig(), ViTConfig()),
    "small": (DiTConfig(hidden_size=384, depth=12, num_heads=6, mlp_hidden=1536, semantic_dim=384),
              ViTConfig(embed_dim=384, depth=12, num_heads=6, mlp_hidden=1536)),
    "tiny": (DiTConfig(hidden_size=32, depth=2, num_heads=2, mlp_hidden=64, semantic_dim=64),
             ViTConfig(embed_dim=64, depth=2, num_heads=1, mlp_hidden=128)),
}
PARTS = ("encoder", "condition", "step", "flat", "e2e")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MODES = ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
WEIGHTS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# --- analytic work ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gemm:
    """`count` matmuls (m x k)(k x n)."""

    m: int
    k: int
    n: int
    count: int = 1

    @property
    def flop(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


@dataclass
class Work:
    """The matmuls of a computation and its attention FLOP (4*B*N^2*width per attention layer)."""

    gemms: list[Gemm] = field(default_factory=list)
    attention: int = 0

    @property
    def flop(self) -> int:
        return sum(g.flop for g in self.gemms) + self.attention

    def __add__(self, other: "Work") -> "Work":
        return Work(self.gemms + other.gemms, self.attention + other.attention)

    def times(self, n: int) -> "Work":
        return Work([replace(g, count=g.count * n) for g in self.gemms], self.attention * n)


def transformer_blocks(tokens: int, width: int, mlp: int, depth: int, batch: int) -> Work:
    """`depth` pre-norm blocks over `tokens` tokens: qkv, proj, fc1, fc2 and attention."""
    m = batch * tokens
    gemms = [Gemm(m, width, 3 * width, depth), Gemm(m, width, width, depth),
             Gemm(m, width, mlp, depth), Gemm(m, mlp, width, depth)]
    return Work(gemms, 4 * batch * tokens ** 2 * width * depth)


def dit_step_work(cfg: DiTConfig, height: int, width: int, batch: int = 1, cascade: bool = True) -> Work:
    """One DiT evaluation after `condition()`: the formula in the module docstring."""
    d, p = cfg.hidden_size, cfg.patch_size
    nc = (height // (2 * p)) * (width // (2 * p))
    nf = 4 * nc
    half = cfg.depth // 2
    blocks = transformer_blocks(nf, d, cfg.mlp_hidden, cfg.depth - half, batch)
    blocks += transformer_blocks(nc if cascade else nf, d, cfg.mlp_hidden, half, batch)
    small = [Gemm(1, 256, d), Gemm(1, d, d),                                   # timestep MLP
             Gemm(1, d, 6 * d, cfg.depth), Gemm(1, d, 2 * d)]                  # adaLN (blocks, final)
    tokens = [Gemm(batch * nc, (2 * p) ** 2, d),                               # latent patch conv
              Gemm(batch * nc, d, 4 * d), Gemm(batch * nc, 4 * d, 4 * d, 2),   # fusion MLP
              Gemm(batch * nf, d, p * p * cfg.out_channels)]                   # final linear
    return blocks + Work(small + tokens)


def condition_work(cfg: DiTConfig, height: int, width: int, batch: int = 1) -> Work:
    """Per-image constants: patch conv of the image channels, semantic half of the first fusion linear."""
    k = 2 * cfg.patch_size
    nc = (height // k) * (width // k)
    return Work([Gemm(batch * nc, (cfg.in_channels - 1) * k * k, cfg.hidden_size),
                 Gemm(batch * nc, cfg.semantic_dim, 4 * cfg.hidden_size)])


def encoder_work(cfg: ViTConfig, height: int, width: int, batch: int = 1) -> Work:
    """The DINOv2 ViT on the (H/16*14, W/16*14) input: patch conv and all blocks over 1 + Nc tokens."""
    nc = (height // 16) * (width // 16)
    patch = Work([Gemm(batch * nc, 3 * cfg.patch_size ** 2, cfg.embed_dim)])
    return patch + transformer_blocks(nc + 1, cfg.embed_dim, cfg.mlp_hidden, cfg.depth, batch)


# --- measuring ----------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _proc_status(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class MemoryMeter:
    """Peak memory of a call: CUDA allocator statistics, or the process's peak RSS on the CPU (Linux)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def current(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _proc_status("VmRSS") if self.device.type == "cpu" else None

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.device.type == "cpu":
            try:
                Path("/proc/self/clear_refs").write_text("5")      # resets VmHWM to the current RSS
            except OSError:
                pass

    def peak(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return _proc_status("VmHWM") if self.device.type == "cpu" else None


@dataclass
class Sample:
    seconds: float
    peak: int | None
    activation: int | None


def measure(fn: Callable[[], object], device: torch.device, meter: MemoryMeter) -> Sample:
    """Wall time of fn() with the device synchronised, and its peak memory above the memory before."""
    synchronize(device)
    meter.reset()
    before = meter.current()
    start = time.perf_counter()
    fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = meter.peak()
    return Sample(seconds, peak, None if peak is None or before is None else max(0, peak - before))


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
    with torch.no_grad():
        for name, p in [*dit.named_parameters(), *enc.named_parameters()]:
            if name.endswith("gamma"):
                p.fill_(1e-5)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    return (dit.to(dtype).eval().requires_grad_(False), enc.to(dtype).eval().requires_grad_(False))


def flat_step(dit: PPDDiT, latent: Tensor, cond: Condition, timestep: Tensor) -> Tensor:
    """The no-cascade variant: expand to the 8-px grid before the first block (same weights, all blocks fine)."""
    c = dit.embed_timestep(timestep, latent.device)
    tokens = dit.fuse(dit.embed(latent, cond), cond)
    for block in dit.blocks:
        tokens = block(tokens, c, cond.rope_fine)
    return dit.unpatchify(dit.final_layer(tokens, c), 2 * cond.grid_h, 2 * cond.grid_w)


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' (multiples of 16) -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1024x768 (width x height), got {text!r}")
    if w <= 0 or h <= 0 or w % 16 or h % 16:
        raise argparse.ArgumentTypeError(f"width and height must be positive multiples of 16, got {text!r}")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m comfyui_ppd bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="full", choices=list(SIZES), help="model size, random weights (default full)")
    p.add_argument("--depth", type=int, help="override the DiT and encoder depth (even; e.g. 4 to explore)")
    p.add_argument("--size", type=parse_size, default=(768, 1024), metavar="WxH",
                   help="processing resolution, width x height, multiples of 16 (default 1024x768)")
    p.add_argument("--steps", type=int, default=4, help="sampling steps for the end-to-end time (default 4)")
    p.add_argument("--batch", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS],
                   help="autocast dtype; auto = the pipeline's choice (bf16 on CUDA, fp32 elsewhere)")
    p.add_argument("--weights", default="fp32", choices=list(WEIGHTS), help="stored weight dtype (default fp32)")
    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES,
                   help="torch.compile the DiT blocks (comfyui_ppd.accel), optionally with a torch.compile mode")
    p.add_argument("--parts", default="encoder,condition,step,flat,e2e",
                   help="comma list of encoder, condition, step, flat (no cascade), e2e (default all)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per part, median reported (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per part first (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p


@dataclass
class Setup:
    """What one benchmark run times: a callable and its analytic work per part."""

    calls: dict[str, Callable[[], object]]
    works: dict[str, Work]
    evaluations: int
    weight_bytes: int
    activation_estimate: int
    compiled: bool


def setup(args: argparse.Namespace, device: torch.device, autocast: torch.dtype | None) -> Setup:
    """Random models of the chosen size, inputs at the chosen resolution, and the call for every part."""
    dit_cfg, vit_cfg = model_configs(args)
    (h, w), b = args.size, args.batch
    dit, enc = random_models(dit_cfg, vit_cfg, device, WEIGHTS[args.weights])
    pipe = PPDPipeline(dit, enc, autocast=autocast)
    if args.compile:
        compile_dit(dit, mode=None if args.compile == "default" else args.compile)
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
    works = {"encoder": encoder_work(vit_cfg, h, w, b), "condition": condition_work(dit_cfg, h, w, b),
             "step": dit_step_work(dit_cfg, h, w, b), "flat": dit_step_work(dit_cfg, h, w, b, cascade=False)}
    works["e2e"] = works["encoder"] + works["condition"] + works["step"].times(evaluations)
    calls = {"encoder": lambda: pipe.encode(image),
             "condition": in_context(lambda: dit.condition(image_dev - 0.5, semantics)),
             "step": in_context(lambda: dit.forward_condition(latent, cond, t)),
             "flat": in_context(lambda: flat_step(dit, latent, cond, t)),
             "e2e": lambda: pipe.sample(image, pipe.encode(image), args.steps, noise)}
    weight_bytes = sum(p.numel() * p.element_size() for p in [*dit.parameters(), *enc.parameters()])
    return Setup(calls, works, evaluations, weight_bytes, activation_bytes(dit, h, w) * b,
                 args.compile is not None and is_compiled(dit))


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
    from .cli import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        precision = "fp16"
    autocast = PRECISIONS[precision]
    prepared = setup(args, device, autocast)
    parts = parse_parts(args.parts)
    samples, first_call, mm_seconds = time_parts(prepared, parts, device, autocast or WEIGHTS[args.weights],
                                                 args.warmup, args.repeats)
    results = {p: part_result(samples[p], first_call[p], prepared.works[p], mm_seconds, args.batch) for p in parts}
    dit_cfg, vit_cfg = model_configs(args)
    out = {"device": describe_device(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "model": args.model, "dit_config": asdict(dit_cfg), "vit_config": asdict(vit_cfg),
           "height": args.size[0], "width": args.size[1], "batch": args.batch, "steps": args.steps,
           "evaluations": prepared.evaluations, "precision": precision, "weights": args.weights,
           "compile": args.compile, "compiled": prepared.compiled, "repeats": args.repeats, "warmup": args.warmup,
           "parts": results, "weight_bytes": prepared.weight_bytes,
           "activation_estimate_bytes": prepared.activation_estimate}
    if "step" in results and "flat" in results:
        out["cascade"] = {"flat_over_cascade_time": results["flat"]["seconds"] / results["step"]["seconds"],
                          "time_saving": 1 - results["step"]["seconds"] / results["flat"]["seconds"],
                          "flop_saving": 1 - prepared.works["step"].flop / prepared.works["flat"].flop}
    return out


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{device.type} ({name}, {torch.get_num_threads()} threads)"


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


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
