"""`python -m comfyui_ppd.batch.throughput`: images/s of batch predict with small random weights.

Compares, on one image set, in interleaved rounds: the old one-by-one loop (load -> prepare -> predict ->
write, serially), the sequential runner (prefetch + same-size batches + background writer), and `--ray`
with 1 and 2 model workers on a local Ray. Ray's fixed cost per job is separated from its per-image cost
by running a short and a long job in one session: per image = (T_long - T_short) / (N_long - N_short).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import runtime, tasks
from ..bench import SIZES
from ..encoders.da2 import DepthAnythingV2Encoder
from ..families.ppd.dit import PPDDiT
from ..io.images import load_image
from .inputs import expand_inputs


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


def namespace(out: Path, models: Path, args: argparse.Namespace, **kw) -> argparse.Namespace:
    base = dict(out=str(out), models_dir=str(models), steps=args.steps, seed=0, area=args.area, overwrite=False,
                pointcloud=False, metric=False, normals=False, precision="auto", batch_size=args.batch_size,
                workers=2, device="cpu")
    return argparse.Namespace(**{**base, **kw})


def old_loop(images: Path, out: Path, models: Path, args: argparse.Namespace) -> float:
    """The pre-batch `predict`: every image loaded, run and written one after the other."""
    t = time.perf_counter()
    pipe = tasks.load_pipeline(models / "ppd.pth", models / "depth_anything_v2_vitl.pth",
                               runtime.precision("auto", "cpu"), area=args.area)
    for item in expand_inputs([str(images)]):
        image = load_image(item.path)
        result = tasks.predict_depth(pipe, image, steps=args.steps, seed=0)
        base = out / item.stem
        files: dict[str, str | os.PathLike] = {k: base.with_name(base.name + s) for k, s in
                                                (("png16", "_depth16.png"), ("color", "_depth_color.png"))}
        tasks.save_depth(result.depth[0], files, size=(image.shape[-2], image.shape[-1]))
        tasks.save_depth(result.depth[0], {"npy": base.with_name(base.name + "_depth.npy")})
    return time.perf_counter() - t


def processor(out: Path, models: Path, args: argparse.Namespace):
    from .ppd import PPDProcessor
    return PPDProcessor(namespace(out, models, args), models / "ppd.pth", models / "depth_anything_v2_vitl.pth", "cpu")


def new_sequential(images: Path, out: Path, models: Path, args: argparse.Namespace, batch_size: int) -> float:
    from .runner import run_sequential
    t = time.perf_counter()
    summary = run_sequential(expand_inputs([str(images)]), processor(out, models, args),
                             batch_size=batch_size, workers=2)
    assert summary.ok and summary.done, summary.format()
    return time.perf_counter() - t


def ray_job(images: Path, out: Path, models: Path, args: argparse.Namespace, workers: int) -> float:
    from .distributed import run_ray
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

    from .inputs import Item
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rng = np.random.default_rng(0)
        Image.fromarray((rng.random((768, 1024, 3)) * 255).astype("uint8")).save(tmp / "x.jpg", quality=95)
        ns = argparse.Namespace(out=str(tmp / "o"), area=1024 * 768, overwrite=True, pointcloud=False, normals=False)
        from .ppd import PPDProcessor
        proc = PPDProcessor(ns, tmp / "none", tmp / "none", "cpu")
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m comfyui_ppd.batch.throughput", description=__doc__)
    p.add_argument("--size", default="small", choices=list(SIZES))
    p.add_argument("--images", type=int, default=24, help="images in the long job")
    p.add_argument("--short", type=int, default=4, help="images in the short Ray job")
    p.add_argument("--area", type=int, default=256 * 192)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ray", type=int, nargs="*", default=[1, 2], help="Ray model worker counts to time")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the single-machine runs (default 1, as each Ray CPU worker)")
    args = p.parse_args(argv)
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

        old_loop(tmp / "short", fresh(), tmp / "models", args)             # warm-up, not timed
        new_sequential(tmp / "short", fresh(), tmp / "models", args, args.batch_size)
        for _ in range(args.rounds):
            rows.setdefault("old one-by-one", []).append(old_loop(tmp / "long", fresh(), tmp / "models", args))
            rows.setdefault("new sequential", []).append(
                new_sequential(tmp / "long", fresh(), tmp / "models", args, args.batch_size))
            rows.setdefault("new sequential, batch 1", []).append(
                new_sequential(tmp / "long", fresh(), tmp / "models", args, 1))
            for w in args.ray:
                import ray

                from .distributed import start_ray
                t = time.perf_counter()
                start_ray(None, w, gpu=False)
                rows.setdefault(f"ray init ({w})", []).append(time.perf_counter() - t)
                rows.setdefault(f"ray {w} short", []).append(ray_job(tmp / "short", fresh(), tmp / "models", args, w))
                rows.setdefault(f"ray {w} long", []).append(ray_job(tmp / "long", fresh(), tmp / "models", args, w))
                t = time.perf_counter()
                ray.shutdown()
                rows.setdefault(f"ray shutdown ({w})", []).append(time.perf_counter() - t)
    result = {"config": vars(args), "seconds": rows, "median": {k: statistics.median(v) for k, v in rows.items()}}
    med = result["median"]
    n, s = args.images, args.short
    table = {k: n / med[k] for k in ("old one-by-one", "new sequential", "new sequential, batch 1")}
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


if __name__ == "__main__":
    raise SystemExit(main())
