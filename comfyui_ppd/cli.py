"""Command line: `python -m comfyui_ppd predict|convert|download|bench ...` (no ComfyUI needed)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import download, imaging
from .checkpoints import dit_part, encoder_part, load_strict, read_checkpoint
from .errors import InputError, PPDError
from .pipeline import PPDPipeline

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ConsoleProgress:
    """A one-line progress bar on stderr: `label [#####.....] done/total`."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label, self.enabled, self.start = label, enabled, time.time()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        filled = int(30 * done / max(total, 1))
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} "
                         f"{time.time() - self.start:.1f}s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def weight_dtype(precision: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU/MPS unless asked; half weights on CPU are refused with a warning (slow or unsupported)."""
    if precision == "auto":
        return torch.float32
    dtype = DTYPES[precision]
    if device.type == "cpu" and dtype != torch.float32:
        print(f"warning: {precision} weights are not supported well on the CPU; using fp32.", file=sys.stderr)
        return torch.float32
    return dtype


def output_paths(out_dir: Path, image: Path) -> dict[str, Path]:
    stem = image.stem
    return {"png16": out_dir / f"{stem}_depth16.png", "color": out_dir / f"{stem}_depth_color.png",
            "npy": out_dir / f"{stem}_depth.npy", "ply": out_dir / f"{stem}_points.ply"}


def cmd_predict(args: argparse.Namespace) -> int:
    """Depth for files, folders, patterns and @lists; resumable; exit 0 = all done, 1 = some items failed."""
    from .batch import inputs
    for name in ("batch_size", "workers", "ray_workers"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    out_dir = Path(args.out)
    items = inputs.expand_inputs(args.images, exclude=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.download:
        names = [n for n in (args.model, args.encoder) if n and not Path(n).is_file()] or None
        download.download_official(names, download.models_dirs(args.models_dir)[0])
    dit_path = download.find_model(args.model, "dit", explicit=args.models_dir)
    enc_name = args.encoder or ("moge2_vitl_normal.pt" if "moge" in dit_path.name.lower() else None)
    enc_path = download.find_model(enc_name, "encoder", explicit=args.models_dir)
    from .batch.ppd import PPDProcessor
    if args.ray or args.ray_address:
        from .batch import distributed
        device = args.device if args.device != "auto" else None
        summary = distributed.run_ray(items, PPDProcessor(args, dit_path, enc_path, device or "cpu"),
                                      address=args.ray_address, workers=args.ray_workers,
                                      batch_size=args.batch_size, overwrite=args.overwrite,
                                      gpu=device is None or device.startswith("cuda"),
                                      progress=ConsoleProgress("predict --ray", args.progress))
    else:
        from .batch.runner import run_sequential
        processor = PPDProcessor(args, dit_path, enc_path, str(pick_device(args.device)))
        summary = run_sequential(items, processor, overwrite=args.overwrite, batch_size=args.batch_size,
                                 workers=args.workers, progress=ConsoleProgress("predict", args.progress))
    print(summary.format())
    return 0 if summary.ok else 1


def write_depth_outputs(depth: torch.Tensor, input_size: tuple[int, int], paths: dict[str, Path],
                        args: argparse.Namespace, skip: frozenset[str] | set[str] = frozenset()) -> None:
    """16-bit PNG (near = white, input size), colour map PNG (input size), raw float .npy (processing size).

    Outputs named in `skip` ("npy", "png16", "color") are left alone (a resumed batch keeps existing files)."""
    if "npy" not in skip:
        imaging.write_npy(paths["npy"], depth[0].numpy().astype("float32"), overwrite=args.overwrite)
    if "png16" not in skip:
        _, near_white = imaging.render_depth(depth[None], "controlnet", size=tuple(input_size))
        imaging.write_png16(paths["png16"], near_white[0].numpy(), overwrite=args.overwrite)
    if "color" not in skip:
        colour, _ = imaging.render_depth(depth[None], "colormap", "spectral", size=tuple(input_size))
        imaging.write_png8_rgb(paths["color"], colour[0].numpy(), overwrite=args.overwrite)


def make_pointcloud(depth: torch.Tensor, image: torch.Tensor, args: argparse.Namespace):
    """Point cloud of PPD depth (1,h,w) on its processing grid: near/far metres, --fov, the resized image's colours."""
    from . import geometry
    metric = geometry.metric_depth(depth[0], "ppd", near=args.near, far=args.far)
    intrinsics = geometry.camera_intrinsics(*metric.shape, fov_deg=args.fov)
    return geometry.depth_to_point_cloud(metric, intrinsics, image.movedim(0, -1))  # image (3,h,w) -> (h,w,3)


def cmd_convert(args: argparse.Namespace) -> int:
    """Keep only the tensors of one part, check they load strictly, write .safetensors with metadata."""
    src, dst = Path(args.input), Path(args.output)
    if dst.suffix != ".safetensors":
        raise InputError(f"the output must end in .safetensors, got {dst.name}")
    if dst.exists() and not args.overwrite:
        raise InputError(f"{dst} already exists; pass --overwrite or choose another name.")
    ckpt = read_checkpoint(src)
    dtype = DTYPES[args.dtype]
    part = args.part
    if part == "auto":
        part = "dit" if any(k.endswith("proj_fusion.0.weight") for k in ckpt.tensors) else "encoder"
    meta = {"ppd.part": part, "ppd.source": src.name, "format": "pt"}
    if part == "dit":
        sd = {"dit." + k: v for k, v in dit_part(ckpt).items()}
        from . import load_dit
        load_dit(sd, device="meta")
        semantics = args.semantics or ("moge2" if "moge" in src.name.lower() else "da2" if src.name.startswith("ppd") else None)
        if semantics:
            meta["ppd.semantics"] = semantics
    else:
        module, sd = encoder_part(ckpt, args.num_heads)
        load_strict(module, {k: v.to("meta") for k, v in sd.items()}, ckpt.label, "a complete encoder", "meta")
        prefix = "encoder." if module.kind == "moge2" else ""
        sd = {prefix + k: v for k, v in sd.items()}
        meta["ppd.semantics"] = module.kind
        vit = module.backbone if module.kind == "moge2" else module.pretrained
        meta["ppd.num_heads"] = str(vit.config.num_heads)
        if module.kind == "moge2":
            meta["model_config"] = json.dumps({"encoder": {"intermediate_layers": module.intermediate_layers,
                                                           "dim_out": module.semantic_dim}})
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    imaging.atomic_write(dst, lambda f: f.write(_safetensors_bytes(tensors, meta)), overwrite=args.overwrite)
    size = dst.stat().st_size / 2 ** 20
    print(f"wrote {dst} ({len(tensors)} tensors, {args.dtype}, {size:.1f} MiB, part {part})")
    return 0


def _safetensors_bytes(tensors: dict, meta: dict) -> bytes:
    from safetensors.torch import save
    return save(tensors, metadata=meta)


def cmd_download(args: argparse.Namespace) -> int:
    target = Path(args.dir) if args.dir else download.models_dirs(args.models_dir)[0]
    for path in download.download_official(args.names or None, target):
        print(path)
    return 0


def cmd_bench(args: argparse.Namespace, rest: list[str]) -> int:
    from . import bench
    return bench.main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfyui_ppd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="depth for images, folders and videos: 16-bit PNG (near = white), colour "
                       "PNG, .npy; resumable (exit 0: all done, 1: some inputs failed, 2: nothing could run)")
    p.add_argument("images", nargs="+", help="image or video files, folders (recursive), quoted glob patterns, "
                   "or @list.txt (one input per line)")
    p.add_argument("--out", required=True, help="output folder; outputs mirror the input folders below it")
    p.add_argument("--model", help="DiT checkpoint (path or file name in the models folder); default ppd.pth")
    p.add_argument("--encoder", help="semantic encoder checkpoint; default depth_anything_v2_vitl.pth")
    p.add_argument("--models-dir", help="folder searched first for model files")
    p.add_argument("--download", action="store_true", help="download missing official files first")
    p.add_argument("--steps", type=int, default=4, help="sampling steps (default 4)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--area", type=int, default=1024 * 768, help="processing area in pixels (default 1024*768)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=["auto", *DTYPES], help="weight precision")
    p.add_argument("--overwrite", action="store_true", help="redo every input and replace existing output files "
                   "(without it, inputs whose outputs all exist are skipped and existing files are kept)")
    p.add_argument("--batch-size", type=int, default=4, help="images of one processing size per model call (default 4)")
    p.add_argument("--workers", type=int, default=2, help="loader threads decoding ahead of the model (default 2)")
    p.add_argument("--ray", action="store_true", help="run as a Ray Data job (pip install 'comfyui-ppd[distributed]')")
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. auto, or ray://head:10001); implies --ray")
    p.add_argument("--ray-workers", type=int, help="model copies (default: one per GPU, else one per CPU)")
    p.add_argument("--pointcloud", action="store_true", help="also write a PLY point cloud per image")
    p.add_argument("--fov", type=float, default=60.0,
                   help="horizontal field of view in degrees for --pointcloud (default 60)")
    p.add_argument("--near", type=float, default=1.0,
                   help="metres at PPD's near end, log-depth 0, for --pointcloud (default 1)")
    p.add_argument("--far", type=float, default=10.0,
                   help="metres at PPD's far end, log-depth 1, for --pointcloud (default 10; 5 for a room, "
                        "50 for a street)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    c = sub.add_parser("convert", help="keep one part of a checkpoint and write .safetensors with metadata")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    c.add_argument("--part", default="auto", choices=["auto", "dit", "encoder"])
    c.add_argument("--semantics", choices=["da2", "moge2"], help="semantics the DiT was trained with")
    c.add_argument("--num-heads", type=int, help="ViT head count (default: width / 64)")
    c.add_argument("--overwrite", action="store_true")

    d = sub.add_parser("download", help="download the official model files (resumable)")
    d.add_argument("names", nargs="*", help="file names (default: all with a direct link)")
    d.add_argument("--dir", help="target folder (default: the first models folder)")
    d.add_argument("--models-dir", help="folder searched first for model files")

    sub.add_parser("bench", help="benchmark (see `bench --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["bench"]:
        return cmd_bench(argparse.Namespace(), argv[1:])
    args = parser.parse_args(argv)
    try:
        return {"predict": cmd_predict, "convert": cmd_convert, "download": cmd_download}[args.command](args)
    except PPDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
