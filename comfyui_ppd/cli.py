"""Command line: `python -m comfyui_ppd predict|convert|download|bench ...` (no ComfyUI needed)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import catalogue, download, imaging, registry, runtime, tasks
from .checkpoints import load_strict, read_checkpoint
from .errors import InputError, PPDError
from .io.files import atomic_write
from .io.images import load_image
from .io.meshes import write_ply
from .io.video import is_video_file
from .progress import ConsoleProgress


def output_paths(out_dir: Path, image: Path) -> dict[str, Path]:
    stem = image.stem
    return {"png16": out_dir / f"{stem}_depth16.png", "color": out_dir / f"{stem}_depth_color.png",
            "npy": out_dir / f"{stem}_depth.npy", "ply": out_dir / f"{stem}_points.ply",
            "normals": out_dir / f"{stem}_normals.png"}


def cmd_predict(args: argparse.Namespace) -> int:
    images = [Path(p) for p in args.images]
    if any(is_video_file(p) for p in images):
        return predict_videos(args, images)
    for p in images:
        if not p.is_file():
            raise InputError(f"input image not found: {p}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.metric and not args.pointcloud:
        raise InputError("--metric makes the point cloud metric: add --pointcloud (or drop --metric).")
    wanted = ["png16", "color", "npy"] + (["ply"] if args.pointcloud else []) + (["normals"] if args.normals else [])
    if not args.overwrite:                        # refuse before any work: nothing is written half-way
        existing = [str(output_paths(out_dir, p)[k]) for p in images for k in wanted
                    if output_paths(out_dir, p)[k].exists()]
        if existing:
            raise InputError(f"{len(existing)} output file(s) already exist (e.g. {existing[0]}); "
                             "pass --overwrite or choose another --out folder.")
    if args.download:
        names = [n for n in (args.model, args.encoder) if n and not Path(n).is_file()] or None
        download.download_official(names, catalogue.models_dirs(args.models_dir)[0])
    dit_path = catalogue.find_model(args.model, "dit", explicit=args.models_dir)
    enc_name = args.encoder or catalogue.DEFAULT_ENCODER.get(catalogue.semantics_from_name(dit_path.name) or "")
    enc_path = catalogue.find_model(enc_name, "encoder", explicit=args.models_dir)
    device = runtime.pick_device(args.device)
    pipe = tasks.load_pipeline(dit_path, enc_path, runtime.precision(args.precision, device), device=device,
                               area=args.area)
    geometry_model = None
    if args.metric or args.normals:               # MoGe-2: metric depth, camera and normals (run_point_cloud.py)
        geo_path = catalogue.find_model(args.geometry_model or catalogue.DEFAULT_ENCODER["moge2"], "encoder",
                                        explicit=args.models_dir)
        geometry_model = tasks.load_geometry(geo_path, device=device)
        if args.normals and not geometry_model.has_normal:
            raise InputError(f"--normals: {geo_path.name} has no normal head, so it gives no normals; use the "
                             "MoGe-2 model with normals (Ruicheng/moge-2-vitl-normal) or drop --normals.")
    for n, path in enumerate(images, 1):
        image = load_image(path)
        result = tasks.predict_depth(pipe, image, steps=args.steps, seed=args.seed,
                                     progress=ConsoleProgress(f"[{n}/{len(images)}] {path.name}", args.progress))
        files = output_paths(out_dir, path)
        cloud = geo = None
        if geometry_model is not None:
            geo = tasks.estimate_geometry(geometry_model, image.to(device))
        if args.pointcloud and geo is not None:   # the official metric chain: MoGe-2 scale and camera
            cloud = tasks.official_metric_cloud(result.depth[0, 0], image[0], geo, outlier_filter=args.outlier_filter)
        elif args.pointcloud:                     # built before any write, so a bad --near/--far writes nothing
            cloud, _, _ = tasks.depth_to_cloud(result.depth[0, 0], "ppd", near=args.near, far=args.far,
                                               fov_deg=args.fov, colors=result.image[0].permute(1, 2, 0))
        input_size = (image.shape[-2], image.shape[-1])
        tasks.save_depth(result.depth[0], {k: files[k] for k in ("png16", "color")}, size=input_size,
                         overwrite=args.overwrite)
        tasks.save_depth(result.depth[0], {"npy": files["npy"]}, overwrite=args.overwrite)
        if cloud is not None:
            write_ply(files["ply"], cloud, overwrite=args.overwrite)
        if args.normals and geo is not None:
            tasks.save_normals(geo["normal"][0], files["normals"], overwrite=args.overwrite)
        print(f"{path.name}: depth {tuple(result.depth.shape[-2:])} -> {out_dir}")
    return 0


def video_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (height, width); the pipeline checks the multiples of 32."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512 (width x height), got {text!r}") from None
    return h, w


def predict_videos(args: argparse.Namespace, videos: list[Path]) -> int:
    """Video files go to the video model (ppvd.pth + pi3.safetensors): PNG16 sequence, preview, .npz."""
    images = [str(p) for p in videos if not is_video_file(p)]
    if images:
        raise InputError(f"give either video files or images, not both (images: {', '.join(images[:3])}).")
    missing = [str(p) for p in videos if not p.is_file()]
    if missing:
        raise InputError(f"input video not found: {missing[0]}")
    if args.download:
        names = [n for n in (args.model or "ppvd.pth", args.encoder or "pi3.safetensors") if not Path(n).is_file()]
        download.download_official(names, catalogue.models_dirs(args.models_dir)[0])
    dit_path = catalogue.find_model(args.model, "video_dit", explicit=args.models_dir)
    enc_path = catalogue.find_model(args.encoder, "video_encoder", explicit=args.models_dir)
    device = runtime.pick_device(args.device)
    pipe = tasks.load_video_pipeline(dit_path, enc_path, runtime.precision(args.precision, device), device=device,
                                     process_size=args.process_size)
    out_dir = Path(args.out)
    for n, path in enumerate(videos, 1):
        done = tasks.predict_video_file(
            pipe, path, out_dir, steps=args.steps, seed=args.seed, overwrite=args.overwrite, flicker=args.flicker,
            progress=ConsoleProgress(f"[{n}/{len(videos)}] {path.name}", args.progress),
            warn=lambda text: print(f"warning: {text}", file=sys.stderr))
        print(f"{path.name}: {done['frames']} frames {done['size'][0]}x{done['size'][1]} -> {out_dir}")
        if args.flicker:
            print(done["flicker"])
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Keep only the tensors of one part, check they load strictly, write .safetensors with metadata."""
    src, dst = Path(args.input), Path(args.output)
    if dst.suffix != ".safetensors":
        raise InputError(f"the output must end in .safetensors, got {dst.name}")
    if dst.exists() and not args.overwrite:
        raise InputError(f"{dst} already exists; pass --overwrite or choose another name.")
    ckpt = read_checkpoint(src)
    dtype = runtime.DTYPES[args.dtype]
    accept = {"auto": ("ppd", "da2", "moge2"), "dit": ("ppd",), "encoder": ("da2", "moge2")}[args.part]
    family = registry.resolve(ckpt, accept, "a PPD DiT or semantic encoder",
                              "Convert ppd.pth, ppd_moge.pth, depth_anything_v2_vitl.pth or the MoGe-2 model.pt.")
    sd = family.part(ckpt)
    config = family.config_from(sd, ckpt, num_heads=args.num_heads)
    with torch.device("meta"):
        module = family.build(config)
    load_strict(module, {k: v.to("meta") for k, v in sd.items()}, ckpt.label, f"a complete {family.title}", "meta")
    part = "dit" if family.role == "dit" else "encoder"
    meta = {"ppd.part": part, "ppd.source": src.name, "format": "pt"}
    if family.name == "ppd":
        sd = {"dit." + k: v for k, v in sd.items()}
        semantics = args.semantics or catalogue.semantics_from_name(src.name)
        if semantics:
            meta["ppd.semantics"] = semantics
    else:
        vit = config.vit if family.name == "moge2" else config
        meta["ppd.semantics"] = family.name
        meta["ppd.num_heads"] = str(vit.num_heads)
        if family.name == "moge2":
            sd = {"encoder." + k: v for k, v in sd.items()}
            meta["model_config"] = json.dumps({"encoder": {"intermediate_layers": config.intermediate_layers,
                                                           "dim_out": config.dim_out}})
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    atomic_write(dst, lambda f: f.write(_safetensors_bytes(tensors, meta)), overwrite=args.overwrite)
    size = dst.stat().st_size / 2 ** 20
    print(f"wrote {dst} ({len(tensors)} tensors, {args.dtype}, {size:.1f} MiB, part {part})")
    return 0


def _safetensors_bytes(tensors: dict, meta: dict) -> bytes:
    from safetensors.torch import save
    return save(tensors, metadata=meta)


def cmd_download(args: argparse.Namespace) -> int:
    target = Path(args.dir) if args.dir else catalogue.models_dirs(args.models_dir)[0]
    for path in download.download_official(args.names or None, target):
        print(path)
    return 0


def cmd_bench(args: argparse.Namespace, rest: list[str]) -> int:
    from . import bench
    return bench.main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfyui_ppd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="depth for image files: 16-bit PNG (near = white), colour PNG, .npy; "
                       "for video files (.mp4, .mov, ...) the video model: 16-bit PNG sequence, preview .mp4, .npz")
    p.add_argument("images", nargs="+", help="image files (png, jpg, ...) or video files (needs PyAV)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", help="DiT checkpoint (path or file name in the models folder); default ppd.pth, "
                                   "for videos ppvd.pth")
    p.add_argument("--encoder", help="semantic encoder checkpoint; default depth_anything_v2_vitl.pth, for videos "
                                     "pi3.safetensors")
    p.add_argument("--process-size", default=(512, 512), type=video_size,
                   help="videos: WIDTHxHEIGHT processing size, multiples of 32 (default 512x512, the trained size)")
    p.add_argument("--flicker", action="store_true",
                   help="videos: print the flicker summary and write <name>_flicker.json/.txt")
    p.add_argument("--models-dir", help="folder searched first for model files")
    p.add_argument("--download", action="store_true", help="download missing official files first")
    p.add_argument("--steps", type=int, default=4, help="sampling steps (default 4)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--area", type=int, default=imaging.DEFAULT_AREA,
                   help="processing area in pixels (default 1024*768, PPD's training area)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=runtime.CHOICES,
                   help="auto (CUDA: fp32 weights + bf16 autocast; else fp32), fp32, fp16, bf16 (README table)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--pointcloud", action="store_true", help="also write a PLY point cloud per image")
    p.add_argument("--fov", type=float, default=60.0,
                   help="horizontal field of view in degrees for --pointcloud (default 60)")
    p.add_argument("--near", type=float, default=1.0,
                   help="metres at PPD's near end, log-depth 0, for --pointcloud (default 1)")
    p.add_argument("--far", type=float, default=10.0,
                   help="metres at PPD's far end, log-depth 1, for --pointcloud (default 10; 5 for a room, "
                        "50 for a street)")
    p.add_argument("--metric", action="store_true",
                   help="with --pointcloud: metric PLY as the official run_point_cloud.py (MoGe-2 metric depth and "
                        "camera, PPD depth fitted in log(1 + d), outlier filter); --fov/--near/--far are not used")
    p.add_argument("--normals", action="store_true", help="also write MoGe-2's normal map as <name>_normals.png "
                                                          "(ControlNet NormalBae colours)")
    p.add_argument("--geometry-model", help="MoGe-2 model.pt for --metric/--normals; default moge2_vitl_normal.pt")
    p.add_argument("--outlier-filter", default="window", choices=["window", "exact", "off"],
                   help="--metric's statistical outlier filter (20 neighbours, 3 sigma): window = neighbours from a "
                        "9x9 pixel window (default, fast), exact = all pairs as Open3D (O(N^2): minutes at 0.2 MP), "
                        "off")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    c = sub.add_parser("convert", help="keep one part of a checkpoint and write .safetensors with metadata")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--dtype", default="fp32", choices=list(runtime.DTYPES))
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
