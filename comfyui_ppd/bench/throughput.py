"""`python -m comfyui_ppd bench throughput`: images/s of batch predict with small random weights.

Compares, on one image set, in interleaved rounds: the sequential runner (prefetch + same-size batches +
background writer) at the chosen batch size and at batch 1, and `--ray` with 1 and 2 model workers on a local
Ray. Ray's fixed cost per job is separated from its per-image cost by running a short and a long job in one
session: per image = (T_long - T_short) / (N_long - N_short).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..batch.inputs import expand_inputs
from ..batch.ppd import PPDProcessor, PredictOptions
from ..encoders.da2 import DepthAnythingV2Encoder
from ..families.ppd.dit import PPDDiT
from .image import SIZES


def write_models(folder: Path, size: str) -> None:
    """Random ppd.pth + depth_anything_v2_vitl.pth of a bench size (fixed seed)."""
    dit_cfg, vit_cfg = SIZES[size]
    torch.manual_seed(0)
    dit, enc = PPDDiT(dit_cfg), DepthAnythingV2Encoder(vit_cfg)
    for m in (dit, enc):
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.02)
    torch.save({"dit." + k: v for k, v in dit.state_dict().items()}, folder / "ppd.pth")
    sd = enc.state_dict()
    sd["depth_head.projects.0.weight"] = torch.zeros(8, vit_cfg.embed_dim, 1, 1)
    torch.save(sd, folder / "depth_anything_v2_vitl.pth")


def write_images(folder: Path, n: int, sizes: list[tuple[int, int]]) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        sub = folder / f"d{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")).save(sub / f"im{i:03d}.jpg", quality=95)


def processor(out: Path, models: Path, args: argparse.Namespace) -> PPDProcessor:
    options = PredictOptions(out=out, steps=args.steps, area=args.area, batch_size=args.batch_size)
    return PPDProcessor(options, models / "ppd.pth", models / "depth_anything_v2_vitl.pth", "cpu")


def sequential(images: Path, out: Path, models: Path, args: argparse.Namespace, batch_size: int) -> float:
    from ..batch.runner import run_sequential
    t = time.perf_counter()
    summary = run_sequential(expand_inputs([str(images)]), processor(out, models, args),
                             batch_size=batch_size, workers=2)
    assert summary.ok and summary.done, summary.format()
    return time.perf_counter() - t


def ray_job(images: Path, out: Path, models: Path, args: argparse.Namespace, workers: int) -> float:
    from ..batch.distributed import run_ray
    t = time.perf_counter()
    summary = run_ray(expand_inputs([str(images)]), processor(out, models, args), workers=workers,
                      batch_size=args.batch_size)
    assert summary.ok and summary.done, summary.format()
    return time.perf_counter() - t


def io_costs(repeats: int = 5) -> dict[str, float]:
    """Loader (JPEG decode + resize to 1024x768) and writer (3 files) seconds per 1024x768 image, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from pathlib import PurePosixPath

    from ..batch.inputs import Item
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rng = np.random.default_rng(0)
        Image.fromarray((rng.random((768, 1024, 3)) * 255).astype("uint8")).save(tmp / "x.jpg", quality=95)
        proc = PPDProcessor(PredictOptions(out=tmp / "o", area=1024 * 768, overwrite=True), tmp / "none",
                            tmp / "none", "cpu")
        item = Item(0, tmp / "x.jpg", PurePosixPath("x"), "image")
        load, write = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            (_, _, payload), = list(proc.load(item))
            load.append(time.perf_counter() - t)
            depth = torch.rand(1, 768, 1024)
            t = time.perf_counter()
            proc.write(item, 0, payload, depth)
            write.append(time.perf_counter() - t)
    torch.set_num_threads(threads)
    return {"load": statistics.median(load), "write": statistics.median(write)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="small", choices=list(SIZES), help="model size, random weights (default small)")
    p.add_argument("--images", type=int, default=24, help="images in the long job (default 24)")
    p.add_argument("--short", type=int, default=4, help="images in the short Ray job (default 4)")
    p.add_argument("--area", type=int, default=256 * 192, help="processing area in pixels (default 256*192)")
    p.add_argument("--steps", type=int, default=4, help="sampling steps (default 4)")
    p.add_argument("--batch-size", type=int, default=4, help="images per model call (default 4)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved timed rounds, median reported (default 2)")
    p.add_argument("--ray", type=int, nargs="*", default=[1, 2],
                   help="Ray model worker counts to time (default 1 2; none: no Ray)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the single-machine runs (default 1, as each Ray CPU worker)")


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Time every run in interleaved rounds and print the results as JSON."""
    if min(args.images, args.short, args.rounds, args.steps, args.batch_size) < 1 or args.short >= args.images:
        parser.error("--images, --short, --rounds, --steps and --batch-size must be >= 1, --short below --images")
    torch.set_num_threads(args.threads)
    sizes = [(480, 640), (640, 480), (600, 800)]
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "models").mkdir()
        write_models(tmp / "models", args.size)
        write_images(tmp / "long", args.images, sizes)
        write_images(tmp / "short", args.short, sizes)
        run = 0

        def fresh() -> Path:
            nonlocal run
            run += 1
            return tmp / f"out{run}"

        sequential(tmp / "short", fresh(), tmp / "models", args, args.batch_size)     # warm-up, not timed
        for _ in range(args.rounds):
            rows.setdefault("sequential", []).append(
                sequential(tmp / "long", fresh(), tmp / "models", args, args.batch_size))
            rows.setdefault("sequential, batch 1", []).append(
                sequential(tmp / "long", fresh(), tmp / "models", args, 1))
            for w in args.ray:
                import ray

                from ..batch.distributed import start_ray
                t = time.perf_counter()
                start_ray(None, w, gpu=False)
                rows.setdefault(f"ray init ({w})", []).append(time.perf_counter() - t)
                rows.setdefault(f"ray {w} short", []).append(ray_job(tmp / "short", fresh(), tmp / "models", args, w))
                rows.setdefault(f"ray {w} long", []).append(ray_job(tmp / "long", fresh(), tmp / "models", args, w))
                t = time.perf_counter()
                ray.shutdown()
                rows.setdefault(f"ray shutdown ({w})", []).append(time.perf_counter() - t)
    result: dict = {"config": vars(args), "seconds": rows, "median": {k: statistics.median(v) for k, v in rows.items()}}
    med = result["median"]
    n, s = args.images, args.short
    table = {k: n / med[k] for k in ("sequential", "sequential, batch 1")}
    for w in args.ray:
        per_image = (med[f"ray {w} long"] - med[f"ray {w} short"]) / (n - s)
        table[f"ray {w} worker(s), steady"] = 1 / per_image
        table[f"ray {w} worker(s), whole {n}-image job"] = n / med[f"ray {w} long"]
        result.setdefault("ray_fixed_cost_s", {})[w] = {
            "init": med[f"ray init ({w})"], "job_start": med[f"ray {w} short"] - s * per_image}
    result["images_per_s"] = table
    result["cpu_side_s_per_1024x768_image"] = io_costs()
    print(json.dumps(result, indent=1))
    return 0
