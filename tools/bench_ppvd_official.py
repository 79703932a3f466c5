"""Whole-clip time of `predict clip.mp4` against the official PPVD pipeline (run_video.py) on the same weights.

Both sides run in this one process, float32 on the CPU, in interleaved rounds (official, ours, then ours,
official, ...), each timing decode + inference + writing of one synthetic clip:
* official: `read_video_frames` (OpenCV) -> `infer_video` -> `save_video` of the source and of the depth, as
  run_video.py does after loading. `infer_video` hard-codes 512x512 and autocast; the size is redirected to
  --size and autocast is turned off (float32), as the parity fixtures do. Nothing else is changed.
* ours: what `python -m comfyui_ppd predict clip.mp4 --model ppvd.pth --encoder pi3.safetensors` does after
  loading the models: predict_video_file (decode, windows, the PNG16 sequence, the preview .mp4, the .npz).
Both models are loaded once, before the rounds. CPU time counts this process's threads and its finished
children (the official save_video encodes in an ffmpeg child process).
The weights are small random models built by our modules and written in the official key layout (ppvd.pth,
pi3.safetensors); the official modules are built at those sizes and load them strictly.

The official checkout (github gangweix/pixel-perfect-depth, commit 427a86f) is only imported from the path
given as --official; it needs timm 0.9.1, OpenCV, imageio(-ffmpeg), matplotlib, omegaconf and huggingface_hub,
e.g. in a venv made with --system-site-packages. torchvision is not needed: the one name timm imports from it
is stubbed and timm's package initialisers are bypassed (only the submodules the models use are imported).

    /tmp/official-venv/bin/python tools/bench_ppvd_official.py --official /tmp/ppd-official --rounds 4
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comfyui_ppd.encoders.pi3 import Pi3Config, Pi3Semantics  # noqa: E402
from comfyui_ppd.families.ppvd.dit import VideoDiT, VideoDiTConfig  # noqa: E402
from comfyui_ppd.nn.dinov2 import ViTConfig  # noqa: E402

# ---- weights and clip -------------------------------------------------------------------------------------

def random_weights(folder: Path, size: int, dit_width: int, pi3_width: int, seed: int = 0) -> dict:
    """ppvd.pth (`dit_video.*`) and pi3.safetensors at the given widths (DiT 32-dim heads, Pi3 encoder 64-dim
    and decoder 32-dim heads, the official depths 24 / 3 temporal), every parameter random; -> the sizes."""
    dit_cfg = VideoDiTConfig(hidden_size=dit_width, depth=24, num_heads=dit_width // 32, mlp_hidden=4 * dit_width,
                             semantic_dim=2 * pi3_width, temporal_depth=3, pos_grid=(size // 16, size // 16))
    pi3_cfg = Pi3Config(encoder=ViTConfig(embed_dim=pi3_width, depth=4, num_heads=pi3_width // 64,
                                          mlp_hidden=4 * pi3_width, num_register_tokens=4, interpolate_offset=0.0,
                                          interpolate_antialias=True, mask_token=False),
                        width=pi3_width, depth=4, num_heads=pi3_width // 32, mlp_hidden=4 * pi3_width)
    gen = torch.Generator().manual_seed(seed)
    models = {"dit": VideoDiT(dit_cfg), "pi3": Pi3Semantics(pi3_cfg)}
    with torch.no_grad():
        for model in models.values():
            for name, p in model.named_parameters():
                if name == "pos_embed" and isinstance(model, VideoDiT):
                    continue                                   # the frozen sin-cos table, as the release holds
                leaf = name.rsplit(".", 1)[-1]
                noise = torch.randn(p.shape, generator=gen)
                p.copy_(1 + 0.1 * noise if "norm" in name and leaf == "weight" else
                        0.5 + 0.1 * noise if leaf == "gamma" else 0.05 * noise)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"dit_video." + k: v for k, v in models["dit"].state_dict().items()}, folder / "ppvd.pth")
    save_file({k: v.contiguous() for k, v in models["pi3"].state_dict().items()}, str(folder / "pi3.safetensors"))
    return {"dit": dit_cfg, "pi3": pi3_cfg}


def synthetic_clip(path: Path, frames: int, width: int, height: int, fps: int = 24) -> None:
    """An H.264 clip of moving gradients and a bright square (PyAV)."""
    import av
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as box:
        stream = box.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            rgb = np.stack([(x * 255 // width + 3 * t) % 256, (y * 255 // height + 5 * t) % 256,
                            ((x + y + 7 * t) // 3) % 256], -1).astype(np.uint8)
            s = (4 * t) % (width - 40)
            rgb[40:80, s:s + 40] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)


# ---- the official pipeline --------------------------------------------------------------------------------

def _lazy_package(name: str, folder: Path) -> None:
    """Register `name` as a package whose attributes resolve through its real __init__'s `from .x import`
    lines, without running that __init__ (timm's would import torchvision)."""
    module = types.ModuleType(name)
    module.__path__ = [str(folder)]
    where: dict[str, str] = {}
    stars: list[str] = []
    for node in ast.parse((folder / "__init__.py").read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                if alias.name == "*":
                    stars.append(node.module)
                else:
                    where[alias.asname or alias.name] = node.module

    def resolve(attr: str):
        if attr in where:
            return getattr(importlib.import_module(f"{name}.{where[attr]}"), attr)
        for sub in stars:
            mod = importlib.import_module(f"{name}.{sub}")
            if hasattr(mod, attr):
                return getattr(mod, attr)
        try:
            return importlib.import_module(f"{name}.{attr}")
        except ModuleNotFoundError:
            raise AttributeError(attr) from None

    module.__getattr__ = resolve  # type: ignore[method-assign]
    sys.modules[name] = module


def import_official(checkout: Path) -> dict[str, types.ModuleType]:
    """The official modules, imported from `checkout` (stubs: torchvision's FrozenBatchNorm2d, timm inits)."""
    for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        raise SystemExit("the official code needs timm 0.9.1 (pip install timm==0.9.1 --no-deps in a venv)")
    timm_dir = Path(spec.origin).parent
    _lazy_package("timm", timm_dir)
    for sub in ("layers", "models", "data"):
        _lazy_package(f"timm.{sub}", timm_dir / sub)
    sys.path.insert(0, str(checkout))
    names = {"ppvd": "ppd.models.ppvd", "dit": "ppd.models.dit_video", "pi3": "ppd.models.pi3.models.pi3",
             "vits": "ppd.models.pi3.models.dinov2.models.vision_transformer",
             "layers": "ppd.models.pi3.models.dinov2.layers", "video": "ppd.utils.video_utils"}
    with contextlib.redirect_stdout(sys.stderr):        # the RoPE2D fallback prints a warning
        return {k: importlib.import_module(v) for k, v in names.items()}


class _Proxy(types.ModuleType):
    """A module whose attributes are `base`'s except the overrides: patches one official module's globals."""

    def __init__(self, base: types.ModuleType, **overrides) -> None:
        super().__init__(base.__name__)
        self._base = base
        self.__dict__.update(overrides)

    def __getattr__(self, name: str):
        return getattr(self._base, name)


def official_model(mods: dict, folder: Path, sizes: dict, size: int, steps: int):
    """PixelPerfectVideoDepth at our sizes (its constructor always builds the full-size models): the official
    classes with the official calls, loading our files strictly; infer_video redirected from 512 to `size` and
    run without autocast (float32)."""
    from torch import nn
    P, D, Pi, vits, L = mods["ppvd"], mods["dit"], mods["pi3"], mods["vits"], mods["layers"]
    dc, pc = sizes["dit"], sizes["pi3"]
    pi3 = Pi.Pi3.__new__(Pi.Pi3)
    nn.Module.__init__(pi3)
    enc = pc.encoder
    pi3.encoder = vits.DinoVisionTransformer(
        img_size=518, patch_size=14, embed_dim=enc.embed_dim, depth=enc.depth, num_heads=enc.num_heads,
        mlp_ratio=enc.mlp_hidden / enc.embed_dim, init_values=1.0, ffn_layer="mlp", block_chunks=0,
        num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0,
        block_fn=partial(vits.Block, attn_class=vits.MemEffAttention))
    del pi3.encoder.mask_token
    pi3.patch_size, pi3.pos_type = 14, "rope100"
    pi3.rope, pi3.position_getter = Pi.RoPE2D(freq=100.0), Pi.PositionGetter()
    pi3.decoder = nn.ModuleList([
        Pi.BlockRope(dim=pc.width, num_heads=pc.num_heads, mlp_ratio=pc.mlp_hidden / pc.width, qkv_bias=True,
                     proj_bias=True, ffn_bias=True, drop_path=0.0, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                     act_layer=nn.GELU, ffn_layer=L.Mlp, init_values=0.01, qk_norm=True,
                     attn_class=Pi.FlashAttentionRope, rope=pi3.rope) for _ in range(pc.depth)])
    pi3.dec_embed_dim, pi3.patch_start_idx = pc.width, 5
    pi3.register_token = nn.Parameter(torch.zeros(1, 1, 5, pc.width))
    pi3.register_buffer("image_mean", torch.zeros(1, 3, 1, 1))
    pi3.register_buffer("image_std", torch.ones(1, 3, 1, 1))
    pi3.load_state_dict(load_file(str(folder / "pi3.safetensors")), strict=True)

    dit = D.DiT_Video(input_size=size, hidden_size=dc.hidden_size, depth=dc.depth, num_heads=dc.num_heads,
                      patch_size=dc.patch_size, mlp_ratio=dc.mlp_hidden / dc.hidden_size)
    dit.pos_embed = nn.Parameter(torch.zeros(1, (size // 16) ** 2, dc.hidden_size), requires_grad=False)
    dit.proj_fusion[0] = nn.Linear(dc.hidden_size + dc.semantic_dim, 4 * dc.hidden_size)
    sd = torch.load(folder / "ppvd.pth", map_location="cpu")
    dit.load_state_dict({k.removeprefix("dit_video."): v for k, v in sd.items()}, strict=True)

    model = P.PixelPerfectVideoDepth.__new__(P.PixelPerfectVideoDepth)
    nn.Module.__init__(model)
    model.sampling_steps, model.device = steps, torch.device("cpu")
    model.sem_encoder, model.dit_video = pi3.eval().requires_grad_(False), dit.eval().requires_grad_(False)
    model.configure_diffusion()

    def interpolate(x, size=None, **kw):
        return torch.nn.functional.interpolate(x, size=(size_, size_) if size == (512, 512) else size, **kw)

    size_ = size
    P.F = _Proxy(torch.nn.functional, interpolate=interpolate)
    P.torch = _Proxy(torch, autocast=lambda *a, **k: contextlib.nullcontext())
    return model.eval()


def run_official(mods: dict, model, clip: Path, out: Path, seed: int) -> np.ndarray:
    """run_video.py after the model load: read, infer, write the source and the depth videos."""
    V = mods["video"]
    frames, fps = V.read_video_frames(str(clip))
    torch.manual_seed(seed)                       # forward_test's noise = ours for the same seed
    depths = model.infer_video(frames)
    out.mkdir(parents=True, exist_ok=True)
    V.save_video(frames, str(out / "clip_src.mp4"), fps=fps)
    V.save_video(depths, str(out / "clip_vis.mp4"), fps=fps, is_depths=True)
    return np.asarray(depths)


# ---- ours ---------------------------------------------------------------------------------------------------

def our_pipeline(models: Path, size: int):
    """The pipeline `predict clip.mp4` loads for the video model (loaded once, as the official model is)."""
    from comfyui_ppd import runtime
    from comfyui_ppd.families.ppvd.steps import load_video_pipeline
    cpu = torch.device("cpu")
    return load_video_pipeline(models / "ppvd.pth", models / "pi3.safetensors", runtime.precision("fp32", cpu),
                               device=cpu, process_size=(size, size))


def run_ours(pipe, clip: Path, out: Path, steps: int, seed: int) -> None:
    """What `predict clip.mp4` does after the load: the streamed predict_video_file."""
    from comfyui_ppd.families.ppvd.clip import predict_video_file
    predict_video_file(pipe, clip, out, steps=steps, seed=seed)


def our_depth(out: Path) -> np.ndarray | None:
    found = sorted(out.rglob("*_depth.npz"))
    return np.load(found[0])["depth"] if found else None


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the official writer runs ffmpeg as a child)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", type=Path, required=True, help="checkout of gangweix/pixel-perfect-depth@427a86f")
    p.add_argument("--frames", type=int, default=55, help="clip length (55 = 4 windows exactly)")
    p.add_argument("--frame-size", default="320x240", help="clip WIDTHxHEIGHT")
    p.add_argument("--size", type=int, default=128, help="square processing size, a multiple of 32")
    p.add_argument("--dit-width", type=int, default=128)
    p.add_argument("--pi3-width", type=int, default=128)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=4, help="timed rounds after one untimed warm-up round")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seed = 0
    width, height = (int(v) for v in args.frame_size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="ppvd-official-bench-"))
    try:
        sizes = random_weights(work / "models", args.size, args.dit_width, args.pi3_width)
        clip = work / "clip.mp4"
        synthetic_clip(clip, args.frames, width, height)
        mods = import_official(args.official)
        model = official_model(mods, work / "models", sizes, args.size, args.steps)
        pipe = our_pipeline(work / "models", args.size)
        n = 0

        def official() -> np.ndarray:
            nonlocal n
            n += 1
            return run_official(mods, model, clip, work / f"official{n}", seed)

        def ours() -> Path:
            nonlocal n
            n += 1
            run_ours(pipe, clip, work / f"ours{n}", args.steps, seed)
            return work / f"ours{n}"

        ref = official()                                                       # warm-up, and the agreement check
        mine = our_depth(ours())
        agree = float(np.abs(mine - ref).max()) if mine is not None and mine.shape == ref.shape else None
        rounds = []
        for r in range(args.rounds):
            order = [("official", official), ("ours", ours)]
            if r % 2:
                order.reverse()
            got = {name: timed(fn) for name, fn in order}
            rounds.append({"official_s": got["official"][0], "ours_s": got["ours"][0],
                           "official_cpu_s": got["official"][1], "ours_cpu_s": got["ours"][1],
                           "ratio": got["ours"][0] / got["official"][0],
                           "cpu_ratio": got["ours"][1] / got["official"][1]})
            for d in work.glob("o*[0-9]"):
                shutil.rmtree(d)
        res = {"frames": args.frames, "frame_size": args.frame_size, "process_size": args.size,
               "dit_width": args.dit_width, "pi3_width": args.pi3_width, "steps": args.steps,
               "threads": args.threads, "max_abs_depth_difference": agree, "rounds": rounds,
               "median_ratio": statistics.median(r["ratio"] for r in rounds),
               "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"clip {args.frames} frames {args.frame_size}, processing {args.size}x{args.size}, {args.steps} steps, "
          f"DiT width {args.dit_width}, Pi3 width {args.pi3_width}, {args.threads} thread(s), float32 CPU")
    print(f"max |ours - official| depth: {agree}")
    print("round  official_s  ours_s  ratio  official_cpu_s  ours_cpu_s  cpu_ratio")
    for i, r in enumerate(rounds):
        print(f"{i:5d}  {r['official_s']:10.2f}  {r['ours_s']:6.2f}  {r['ratio']:5.3f}  {r['official_cpu_s']:14.2f}"
              f"  {r['ours_cpu_s']:10.2f}  {r['cpu_ratio']:9.3f}")
    print(f"median ratio ours/official: wall {res['median_ratio']:.3f}, CPU {res['median_cpu_ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
