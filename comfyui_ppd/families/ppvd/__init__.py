"""Pixel-Perfect Video Depth (PPVD): the video DiT (ppvd.pth), the Pi3 semantic path (pi3.safetensors), the
windowed pipeline and their loaders.

    dit = load_video_dit("ppvd.pth"); enc = load_pi3("pi3.safetensors")
    depth = VideoDepthPipeline(dit, enc)(frames)     # frames (N,3,H,W) RGB in [0,1] -> (N,1,H,W)
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch

from ...checkpoints import Checkpoint, Source, describe, load_strict, read_checkpoint
from ...encoders.pi3 import Pi3Semantics, semantic_part
from ...encoders.pi3 import config_from as pi3_config_from
from ...errors import CheckpointError
from ...models.encoders import IMAGENET_MEAN, IMAGENET_STD
from .align import WindowAligner, align_windows, fit_scale_shift_f32
from .dit import VideoDiT, VideoDiTConfig, config_from, sincos_2d
from .pipeline import VideoDepthPipeline, VideoDepthResult, validate_frames, window_plan

__all__ = [
    "Pi3Semantics",
    "VideoDepthPipeline",
    "VideoDepthResult",
    "VideoDiT",
    "VideoDiTConfig",
    "WindowAligner",
    "align_windows",
    "config_from",
    "fit_scale_shift_f32",
    "is_pi3",
    "is_video_dit",
    "load_pi3",
    "load_video_dit",
    "validate_frames",
    "window_plan",
]

VIDEO_DIT_ANCHOR = "temporal_blocks.0.attn.qkv.weight"
PI3_ANCHOR = "encoder.register_tokens"
DIT_GROUPS = ("x_embedder", "t_embedder", "pos_embed", "blocks", "temporal_blocks", "proj_fusion", "final_layer")
VIDEO_DIT_HINT = ("ppvd.pth is on Google Drive only (see the README's model table); the image DiT ppd.pth goes to "
                  "the image pipeline, pi3.safetensors to the semantic-encoder input.")
PI3_HINT = ("Download pi3.safetensors from https://huggingface.co/yyfz233/Pi3 (model.safetensors); ppvd.pth goes "
            "to the DiT input.")


def _prefixes(keys: Iterable[str], anchor: str, *siblings: str) -> list[str]:
    """Prefixes p such that p + anchor and p + every sibling are keys."""
    keys = set(keys)
    found = [k[: -len(anchor)] for k in keys if k == anchor or k.endswith("." + anchor)]
    return sorted(p for p in found if all(p + s in keys for s in siblings))


def is_video_dit(keys: Iterable[str]) -> bool:
    """True when the keys hold a DiT_Video (patch embedder, fusion and temporal blocks under one prefix)."""
    return bool(_prefixes(keys, VIDEO_DIT_ANCHOR, "x_embedder.proj.weight", "proj_fusion.0.weight"))


def is_pi3(keys: Iterable[str]) -> bool:
    """True when the keys hold Pi3 (DINOv2-reg encoder, RoPE decoder with q/k norms, decoder register tokens)."""
    return bool(_prefixes(keys, PI3_ANCHOR, "register_token", "decoder.0.attn.q_norm.weight"))


def _part(ckpt: Checkpoint, prefixes: list[str], what: str, hint: str) -> dict[str, torch.Tensor]:
    if len(prefixes) != 1:
        found = describe(ckpt.tensors) if not prefixes else f"{len(prefixes)} candidates ({', '.join(prefixes)})"
        raise CheckpointError(ckpt.label, what, found, hint)
    return {k[len(prefixes[0]):]: v for k, v in ckpt.tensors.items() if k.startswith(prefixes[0])}


def load_video_dit(source: Source, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> VideoDiT:
    """Load the PPVD DiT_Video (ppvd.pth with any prefix, e.g. `dit_video.`, or a state dict), strictly.

    A file without `pos_embed` gets the sin-cos table (the official non-strict load keeps it too); a stored
    table that differs from the formula is used on its own grid, with a warning (other sizes use the formula).
    """
    ckpt = read_checkpoint(source)
    sd = _part(ckpt, _prefixes(ckpt.tensors, VIDEO_DIT_ANCHOR, "x_embedder.proj.weight", "proj_fusion.0.weight"),
               "the PPVD video DiT (ppvd.pth)", VIDEO_DIT_HINT)
    sd = {k: v for k, v in sd.items() if k.split(".")[0] in DIT_GROUPS}   # e.g. not sem_encoder.* beside it
    cfg = config_from(sd, ckpt.label)
    table = sincos_2d(cfg.hidden_size, *cfg.pos_grid)
    if "pos_embed" not in sd:
        sd["pos_embed"] = table
    elif sd["pos_embed"].device.type != "meta":
        gap = (sd["pos_embed"].float() - table).abs().max().item()
        if gap > 4 * torch.finfo(sd["pos_embed"].dtype).eps:
            warnings.warn(f"{ckpt.label}: the stored pos_embed differs from the sin-cos formula by {gap:.3g}; "
                          "sizes other than the trained one use the formula.", RuntimeWarning, stacklevel=2)
    with torch.device("meta"):
        module = VideoDiT(cfg)
    return load_strict(module, sd, ckpt.label, "a complete PPVD video DiT", device, dtype)


def load_pi3(source: Source, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
             num_heads: int | None = None) -> Pi3Semantics:
    """Load Pi3's semantic path from pi3.safetensors (the point/conf/camera decoders are skipped), strictly.

    `num_heads`: the encoder's head count (not stored; default width // 64, as in every released DINOv2).
    The ImageNet `image_mean`/`image_std` buffers are filled in when a file leaves them out.
    """
    ckpt = read_checkpoint(source)
    sd = _part(ckpt, _prefixes(ckpt.tensors, PI3_ANCHOR, "register_token", "decoder.0.attn.q_norm.weight"),
               "the Pi3 model (pi3.safetensors)", PI3_HINT)
    if num_heads is None and "ppd.num_heads" in ckpt.metadata:
        num_heads = int(ckpt.metadata["ppd.num_heads"])
    sd = semantic_part(sd)
    for name, values in (("image_mean", IMAGENET_MEAN), ("image_std", IMAGENET_STD)):
        sd.setdefault(name, torch.tensor(values).view(1, 3, 1, 1))
    cfg = pi3_config_from(sd, num_heads, ckpt.label)
    with torch.device("meta"):
        module = Pi3Semantics(cfg)
    return load_strict(module, sd, ckpt.label, "the Pi3 semantic path (register_token, encoder.*, decoder.*)",
                       device, dtype)
