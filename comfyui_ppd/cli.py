"""Command line: `python -m comfyui_ppd predict|convert|download|bench ...` (no ComfyUI needed)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from . import catalogue, download, imaging, registry, runtime, tiling
from .batch.inputs import Item
from .batch.ppd import PPDProcessor, PredictOptions
from .batch.runner import Summary
from .checkpoints import load_strict
from .errors import CheckpointError, InputError, PPDError, error_message
from .families.ppvd import clip as video_clip
from .families.ppvd import steps as video_steps
from .family import Family
from .io.files import atomic_write, check_writable
from .progress import ConsoleProgress
from .reader import read_checkpoint


def cmd_predict(args: argparse.Namespace) -> int:
    """Depth for files, folders, patterns and @lists, mirrored under --out; resumable.

    Exit 0: every input done (or already done); 1: some inputs failed (listed in the summary); 2: nothing could
    run (bad options, a model that cannot load). Videos go to the video model when its files are found, else
    the image model runs per frame."""
    from .batch import inputs
    if args.steps < 1:          # checked before any input is read: a bad option stops the run (exit 2)
        raise InputError(f"--steps must be at least 1, got {args.steps}; PPD's default is 4.")
    for name in ("batch_size", "workers", "ray_workers"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.tiles:
        tiling.check_tiling(args.tile_size, args.overlap)
    if args.metric and not args.pointcloud:
        raise InputError("--metric makes the point cloud metric: add --pointcloud (or drop --metric).")
    use_ray = bool(args.ray or args.ray_address)
    if use_ray and (args.metric or args.normals):
        raise InputError("--metric and --normals run MoGe-2 beside PPD, which the Ray job does not do yet; drop "
                         "--ray (the sequential run batches and prefetches too) or drop --metric/--normals.")
    out_dir = Path(args.out)
    items, refused = inputs.split_outside(inputs.expand_inputs(args.images, exclude=out_dir), out_dir)
    videos = [it for it in items if it.kind == "video"]
    if args.download:
        download.download_official(files_to_download(args, bool(videos)), catalogue.models_dirs(args.models_dir)[0])
    video_model = find_video_model(args) if videos else None
    frame_items = [it for it in items if it.kind == "image" or video_model is None]
    video_items = [it for it in videos if video_model is not None]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:                  # an existing file of that name, no permission, a read-only disk
        raise InputError(f"cannot use {out_dir} as the output folder ({e.strerror or e}); choose another "
                         "--out.") from e
    check_writable(out_dir)              # a read-only --out is said once, before any model loads
    summary = Summary()
    if frame_items:
        summary = predict_images(args, frame_items, use_ray)
    if video_items and video_model is not None:
        summary.add(predict_videos(args, video_items, *video_model, use_ray))
    if video_model is not None:
        summary.notes.append(f"videos: the video model ({video_model[0].name} + {video_model[1].name})")
    elif videos:
        video_files = [catalogue.DEFAULT_NAMES[s] for s in catalogue.video_slots() or ()
                       if s in catalogue.DEFAULT_NAMES]
        video_dit = video_files[0] if video_files else "the video DiT"
        chosen = " ".join(f"--{flag} {name}" for flag, name in (("model", args.model), ("encoder", args.encoder))
                          if name)
        if chosen:                        # find_video_model gives None only because an image model was named
            summary.notes.append(f"videos: the image model per frame ({chosen} chose the image model; "
                                 f"--model {video_dit} runs the video model)")
        else:
            summary.notes.append(f"videos: the image model per frame (the video model, {' + '.join(video_files)}, "
                                 "was not found)")
        if args.flicker:
            get = (f"drop {chosen} or pass --model {video_dit}" if chosen else
                   f"put {' and '.join(video_files)} in the models folder; see README, Models")
            summary.notes.append(f"--flicker: not computed, it needs the video model ({get})")
    summary.add(Summary(total=len(refused), failed=refused))
    print(summary.format())
    return 0 if summary.ok else 1


def files_to_download(args: argparse.Namespace, videos: bool) -> list[str] | None:
    """What --download fetches: the files named by --model/--encoder; else, for images only, the image model's
    files (and MoGe-2 for --metric/--normals) not found yet, not the video model's (pi3 alone is 3.8 GB); else
    None = every official file with a link (ppvd.pth's instructions are printed)."""
    named = [n for n in (args.model, args.encoder) if n and not Path(n).is_file()]
    if named or videos:
        return named or None
    try:
        dit = catalogue.find_model(None, "dit", explicit=args.models_dir).name
        names = []
    except PPDError:
        dit = catalogue.DEFAULT_NAMES["dit"]
        names = [dit]
    wanted = [(catalogue.encoder_for(dit) or "", "encoder")]
    if args.metric or args.normals:
        wanted.append((args.geometry_model or catalogue.DEFAULT_NAMES["geometry"], "geometry"))
    for name, slot in wanted:
        try:
            catalogue.find_model(name, slot, explicit=args.models_dir)
        except PPDError:
            names.append(name)
    return names


def _named_for(args: argparse.Namespace, *, video: bool) -> tuple[str | None, str | None]:
    """(--model, --encoder) as they apply to the video or the image model. Once one flag names an official video
    file, the other (unless it names an official image file) is the video model's too: `--model ppvd.pth
    --encoder my_pi3_fp16.safetensors` runs that encoder on videos, and images take the default files."""
    video_slots = catalogue.video_slots() or ()
    slots = (catalogue.slot_of(args.model), catalogue.slot_of(args.encoder))
    is_video = any(s in video_slots for s in slots)
    model, encoder = (name if (is_video and (slot is None or slot in video_slots)) == video else None
                      for name, slot in zip((args.model, args.encoder), slots))
    return model, encoder


def find_video_model(args: argparse.Namespace) -> tuple[Path, Path] | None:
    """(ppvd.pth, pi3.safetensors) when the video model is available, else None (the image model per frame).

    --model/--encoder naming image files choose the image model; naming video files requires them."""
    video_slots = catalogue.video_slots()
    if video_slots is None:                                         # no registered family predicts clips
        return None
    dit_slot, encoder_slot = video_slots
    if any(catalogue.slot_of(n) in video_slots for n in (args.model, args.encoder) if n):  # named: missing = error
        model, encoder = _named_for(args, video=True)
        return (catalogue.find_model(model, dit_slot, explicit=args.models_dir),
                catalogue.find_model(encoder, encoder_slot, explicit=args.models_dir))
    if args.model or args.encoder:                                  # an image model was named
        return None
    try:
        return (catalogue.find_model(None, dit_slot, explicit=args.models_dir),
                catalogue.find_model(None, encoder_slot, explicit=args.models_dir))
    except PPDError:
        return None


def predict_images(args: argparse.Namespace, items: list[Item], use_ray: bool) -> Summary:
    """Images (and videos frame by frame) through the image model: batch.runner here, batch.distributed on Ray.

    A --model/--encoder naming the video model's files is for the videos: the images take the defaults."""
    options = predict_options(args)
    model, encoder = _named_for(args, video=False)
    missing: list[CheckpointError] = []

    def find(name: str | None, role: str) -> Path | None:
        try:
            return catalogue.find_model(name, role, explicit=args.models_dir)
        except CheckpointError as e:      # collected: one error names every missing file, not only the first
            missing.append(e)
            return None

    dit_path = find(model, "dit")
    dit_name = dit_path.name if dit_path else Path(model or catalogue.DEFAULT_NAMES["dit"]).name
    enc_name = encoder or catalogue.encoder_for(dit_name)
    enc_path = find(enc_name, "encoder")
    geo_path = None
    if args.metric or args.normals:               # MoGe-2: metric depth, camera and normals (run_point_cloud.py)
        geo_path = find(args.geometry_model, "geometry")
    if len(missing) == 1:
        raise missing[0]
    if missing or dit_path is None or enc_path is None:
        raise PPDError(f"{len(missing)} model files are missing:\n" + "\n".join(f"  {e}" for e in missing))
    device = args.device if args.device != "auto" else None
    processor = (PPDProcessor(options, dit_path, enc_path, device or "cpu") if use_ray
                 else PPDProcessor(options, dit_path, enc_path, str(runtime.pick_device(args.device)), geo_path))
    processor.remove_stale_temps(items)           # temp files a killed run left for these outputs
    if use_ray:
        from .batch import distributed
        return distributed.run_ray(items, processor, address=args.ray_address, workers=args.ray_workers,
                                   batch_size=args.batch_size, overwrite=args.overwrite,
                                   gpu=device is None or device.startswith("cuda"),
                                   progress=ConsoleProgress("predict --ray", args.progress))
    from .batch.runner import run_sequential
    # The models load on the first batch (a resumed run with nothing left loads none); one that cannot load
    # stops the run there, before any file is written (exit 2).
    return run_sequential(items, processor, overwrite=args.overwrite, batch_size=args.batch_size,
                          workers=args.workers, progress=ConsoleProgress("predict", args.progress))


def predict_options(args: argparse.Namespace) -> PredictOptions:
    """The image processor's options from the predict flags (the one place the batch layer meets argparse)."""
    return PredictOptions(out=Path(args.out), steps=args.steps, seed=args.seed, area=args.area,
                          precision=args.precision, batch_size=args.batch_size, overwrite=args.overwrite,
                          pointcloud=args.pointcloud, normals=args.normals, fov=args.fov, near=args.near,
                          far=args.far, outlier_filter=args.outlier_filter, tiles=args.tiles,
                          tile_size=args.tile_size, overlap=args.overlap)


def tile_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (height, width) for --tile-size."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1024x768, got {text!r}") from None
    return h, w


def video_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (height, width), multiples of 16 from 32 (the released model's; the pipeline checks the
    model's)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512 (width x height), got {text!r}") from None
    if w < 32 or h < 32 or w % 16 or h % 16:      # at parse time: not after the images of the run are done
        raise argparse.ArgumentTypeError(f"width and height must be multiples of 16 from 32, got {text!r} (width x "
                                         "height); 512x512 is the trained size")
    return h, w


def video_outputs(args: argparse.Namespace, out_dir: Path, stem: str) -> list[Path]:
    """The files that mark a finished video: the preview and the .npz (written after the PNG sequence), and the
    flicker report with --flicker."""
    paths = video_steps.video_output_paths(out_dir, stem, 0)
    extra = [out_dir / f"{stem}_flicker.json", out_dir / f"{stem}_flicker.txt"] if args.flicker else []
    return [Path(str(paths["preview"])), Path(str(paths["npz"])), *extra]


def predict_videos(args: argparse.Namespace, items: list[Item], dit_path: Path, enc_path: Path,
                   use_ray: bool = False) -> Summary:
    """Video files through the video model, each streamed (one window in memory): PNG16 sequence, preview, .npz
    mirrored under --out; one by one here, or one Ray task per video with --ray. A video whose outputs all exist
    is skipped; a partial set is refused (pass --overwrite), as predict_video_file never replaces files; an
    unfinished clip resumes at its last window."""
    import time

    start = time.perf_counter()
    summary = Summary(total=len(items))
    out = Path(args.out)
    todo = [it for it in items if args.overwrite
            or not all(p.is_file() for p in video_outputs(args, out / it.stem.parent, it.stem.name))
            or video_clip.working_paths(out / it.stem.parent, it.stem.name)["state"].exists()]
    summary.skipped = len(items) - len(todo)
    if not todo:
        return summary
    options = {"steps": args.steps, "seed": args.seed, "overwrite": args.overwrite, "flicker": args.flicker}
    if use_ray:
        from .batch import videos
        model = {"dit": str(dit_path), "encoder": str(enc_path), "precision": args.precision,
                 "process_size": args.process_size}
        results = videos.run_videos(todo, out, model, options, address=args.ray_address, workers=args.ray_workers,
                                    gpu=args.device == "auto" or args.device.startswith("cuda"))
    else:
        device = runtime.pick_device(args.device)
        pipe = video_steps.load_video_pipeline(dit_path, enc_path, runtime.precision(args.precision, device),
                                               device=device, process_size=args.process_size)

        def local() -> Iterator[tuple[Item, dict]]:
            for n, item in enumerate(todo, 1):
                try:
                    yield item, video_clip.predict_video_file(
                        pipe, item.path, out / item.stem.parent, stem=item.stem.name, **options,
                        progress=ConsoleProgress(f"[{n}/{len(todo)}] {item.path.name}", args.progress),
                        warn=lambda text: print(f"warning: {text}", file=sys.stderr))
                except Exception as e:            # noqa: BLE001 - a bad video fails its item, the run goes on
                    yield item, {"error": error_message(e)}
        results = local()
    for item, done in results:
        if "error" in done:
            summary.failed[str(item.path)] = done["error"]
            continue
        summary.done += 1
        summary.samples += done["frames"]
        height, width = done["size"]
        print(f"{item.path.name}: {done['frames']} frames {width}x{height} (W x H) "
              f"-> {out / item.stem.parent}")
        if args.flicker:
            print(done["flicker"])
    summary.seconds = time.perf_counter() - start
    return summary


def cmd_convert(args: argparse.Namespace) -> int:
    """Keep only the tensors of one part, check they load strictly, write .safetensors with metadata."""
    src, dst = Path(args.input), Path(args.output)
    if dst.suffix != ".safetensors":
        raise InputError(f"the output must end in .safetensors, got {dst.name}")
    if dst.exists() and not args.overwrite:
        raise InputError(f"{dst} already exists; pass --overwrite or choose another name.")
    ckpt = read_checkpoint(src)
    dtype = runtime.DTYPES[args.dtype]
    convertible = _convertible(args.part)
    files = [f.name for family in convertible for f in family.files]
    family = registry.resolve(ckpt, [f.name for f in convertible], "a PPD DiT or semantic encoder",
                              f"Convert {', '.join(files[:-1])} or {files[-1]}." if files else "")
    sd = family.part(ckpt)
    config = family.config_from(sd, ckpt, num_heads=args.num_heads)
    with torch.device("meta"):
        module = family.build(config)
    load_strict(module, {k: v.to("meta") for k, v in sd.items()}, ckpt.label, f"a complete {family.title}", "meta")
    part = family.slot
    exported = family.export(sd, config, src.name, args.semantics)
    assert exported is not None                       # resolve only accepts convertible families
    sd, extra = exported
    meta = {"ppd.part": part, "ppd.source": src.name, "format": "pt", **extra}
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    atomic_write(dst, lambda f: f.write(_safetensors_bytes(tensors, meta)), overwrite=args.overwrite)
    size = dst.stat().st_size / 2 ** 20
    print(f"wrote {dst} ({len(tensors)} tensors, {args.dtype}, {size:.1f} MiB, part {part})")
    return 0


def _convertible(part: str) -> list[Family]:
    """The families `convert` can write (those with an export), in `part`'s slot ("auto": every slot)."""
    return [f for f in registry.families() if type(f).export is not Family.export and part in ("auto", f.slot)]


def _safetensors_bytes(tensors: dict, meta: dict) -> bytes:
    from safetensors.torch import save
    return save(tensors, metadata=meta)


def cmd_download(args: argparse.Namespace) -> int:
    target = Path(args.dir) if args.dir else catalogue.models_dirs(args.models_dir)[0]
    for path in download.download_official(args.names or None, target):
        print(path)
    return 0


def cmd_bench(rest: list[str]) -> int:
    from . import bench
    return bench.main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfyui_ppd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="depth for images, folders and videos: 16-bit PNG (near = white), colour "
                       "PNG, .npy; videos with the video model when present (16-bit PNG sequence, preview .mp4, .npz), "
                       "else the image model per frame; resumable (exit 0: all done, 1: some inputs failed, "
                       "2: nothing could run)")
    p.add_argument("images", nargs="+", help="image or video files, folders (recursive), quoted glob patterns, "
                   "or @list.txt (one input per line); videos need PyAV")
    p.add_argument("--out", required=True, help="output folder; outputs mirror the input folders below it")
    p.add_argument("--model", help="DiT checkpoint (path or file name in the models folder); default ppd.pth; "
                                   "naming ppvd.pth sends videos to the video model")
    p.add_argument("--encoder", help="semantic encoder checkpoint; default depth_anything_v2_vitl.pth, for the video "
                                     "model pi3.safetensors")
    p.add_argument("--process-size", default=(512, 512), type=video_size,
                   help="video model: WIDTHxHEIGHT processing size, multiples of 16 from 32 (default 512x512, the "
                        "trained size)")
    p.add_argument("--flicker", action="store_true",
                   help="video model: print the flicker summary and write <name>_flicker.json/.txt")
    p.add_argument("--models-dir", help="folder searched first for model files")
    p.add_argument("--download", action="store_true", help="download missing official files first")
    p.add_argument("--steps", type=int, default=4, help="sampling steps (default 4)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--area", type=int, default=imaging.DEFAULT_AREA,
                   help="processing area in pixels (default 1024*768, PPD's training area)")
    p.add_argument("--tiles", action="store_true",
                   help="full-resolution depth: the whole image for the layout plus overlapping tiles for the "
                        "detail (docs/tiled-depth.md); costs one PPD pass per tile more")
    p.add_argument("--tile-size", default=(768, 1024), type=tile_size,
                   help="with --tiles: WIDTHxHEIGHT of a tile in input pixels (default 1024x768, PPD's training size)")
    p.add_argument("--overlap", type=float, default=0.25,
                   help="with --tiles: fraction of a tile shared with each neighbour, 0 to 0.5 (default 0.25)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=runtime.CHOICES,
                   help="auto (CUDA: fp32 weights + bf16 autocast; else fp32), fp32, fp16, bf16 (README table)")
    p.add_argument("--overwrite", action="store_true", help="redo every input and replace existing output files "
                   "(without it, inputs whose outputs all exist are skipped and existing files are kept)")
    p.add_argument("--batch-size", type=int, default=4, help="images of one processing size per model call (default 4)")
    p.add_argument("--workers", type=int, default=2, help="loader threads decoding ahead of the model (default 2)")
    p.add_argument("--ray", action="store_true", help="run the images as a Ray Data job and each "
                   "video (video model) as one streaming Ray task (pip install 'comfyui-ppd[distributed]')")
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. auto, or ray://head:10001); implies --ray")
    p.add_argument("--ray-workers", type=int,
                   help="model copies (default: one per GPU, else one per CPU but one, kept for decoding and writing)")
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
    c.add_argument("input", help="checkpoint to convert (.pth, .pt or .safetensors): ppd.pth, ppd_moge.pth, "
                                 "depth_anything_v2_vitl.pth or MoGe-2's model.pt")
    c.add_argument("output", help="the .safetensors file to write")
    c.add_argument("--dtype", default="fp32", choices=list(runtime.DTYPES),
                   help="stored weight dtype (default fp32; fp16/bf16 halve the size)")
    c.add_argument("--part", default="auto", choices=["auto", *sorted({f.slot for f in _convertible("auto")})],
                   help="part to keep (default auto: from the keys)")
    c.add_argument("--semantics", choices=sorted({f.semantics for f in _convertible("encoder") if f.semantics}),
                   help="semantics the DiT was trained with (default: from the file name)")
    c.add_argument("--num-heads", type=int, help="ViT head count (default: width / 64)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    d = sub.add_parser("download", help="download the official model files (resumable)")
    d.add_argument("names", nargs="*", help="file names (default: all with a direct link)")
    d.add_argument("--dir", help="target folder (default: the first models folder)")
    d.add_argument("--models-dir", help="folder searched first for model files")

    sub.add_parser("bench", add_help=False,
                   help="benchmarks on random weights: bench image|video|throughput|stream (see `bench --help`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        if argv[:1] == ["bench"]:
            return cmd_bench(argv[1:])
        args = parser.parse_args(argv)
        return {"predict": cmd_predict, "convert": cmd_convert, "download": cmd_download}[args.command](args)
    except PPDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:       # Ctrl-C: no traceback; every file on disk is complete (atomic writes)
        print("\ninterrupted: the files written so far are complete and kept; run the same command again to "
              "resume (finished inputs are skipped).", file=sys.stderr)
        return 130
