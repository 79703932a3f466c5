"""Pixel-Perfect Video Depth (PPVD): the video DiT (ppvd.pth), its windowed pipeline and FLOP formula, and its
registry entry. The semantic encoder, Pi3, is `encoders/pi3.py`.

    dit = load_dit("ppvd.pth"); enc = load_semantic_encoder("pi3.safetensors")
    depth = VideoDepthPipeline(dit, enc)(frames)     # frames (N,3,H,W) RGB in [0,1] -> (N,1,H,W)
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ...checkpoints import Checkpoint, subdict
from ...encoders.pi3 import Pi3Semantics
from ...family import KeyFamily, ModelFile, single_prefix
from ..ppd import OFFICIAL_REPO
from .align import WindowAligner, align_windows
from .dit import VideoDiT, VideoDiTConfig, config_from, sincos_2d
from .pipeline import VideoDepthPipeline, VideoDepthResult, validate_frames, window_plan

__all__ = ["PPVDFamily", "Pi3Semantics", "VideoDepthPipeline", "VideoDepthResult", "VideoDiT", "VideoDiTConfig",
           "WindowAligner", "align_windows", "config_from", "validate_frames", "window_plan"]

ANCHOR = "temporal_blocks.0.attn.qkv.weight"
DIT_GROUPS = ("x_embedder", "t_embedder", "pos_embed", "blocks", "temporal_blocks", "proj_fusion", "final_layer")
EXPECTED = "the PPVD video DiT (ppvd.pth)"
FIX = ("The video model needs ppvd.pth (Google Drive only, see the README's model table) for the DiT and "
       "pi3.safetensors for the semantic encoder.")


FILE = ModelFile(
    "ppvd.pth", ("video_dit",), "pi3", None, "~2.2 GB",
    "Pixel-Perfect Video Depth (PPVD) video DiT (561,754,944 parameters with pos_embed). It is only "
    f"on Google Drive (no direct link): open the video-model link in the official README "
    f"({OFFICIAL_REPO}) in a browser, confirm Google Drive's \"can't scan this file for viruses\" page "
    "with \"Download anyway\", and place the file in the models folder as ppvd.pth. A small HTML file "
    "saved under that name is that web page, not the model. Pair it with pi3.safetensors.",
    defaults=("video_dit",), page=OFFICIAL_REPO)


class PPVDFamily(KeyFamily):
    """DiT_Video: the image DiT's embedder and fusion MLP plus temporal blocks, all under one prefix."""

    name, slot, encoder_slot, video, files, score = "ppvd", "video_dit", "video_encoder", True, (FILE,), 3
    title = "the PPVD video DiT (ppvd.pth)"
    advice = "This is the video model (PPVD); use the video nodes (PPD Load Video Model, PPD Video Depth)."
    needs = ("x_embedder.proj.weight", "proj_fusion.0.weight", "temporal_blocks.0.")

    def part(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        """The DiT's tensors (not e.g. `sem_encoder.*` beside them); a missing `pos_embed` gets the sin-cos
        table (the official non-strict load keeps the constructor's); a stored table that differs from the
        formula is used on its own grid, with a warning (other sizes use the formula)."""
        prefix = single_prefix(ckpt, ANCHOR, "video DiTs", EXPECTED, FIX, also="x_embedder.proj.weight")
        sd = {k: v for k, v in subdict(ckpt.tensors, prefix).items() if k.split(".")[0] in DIT_GROUPS}
        cfg = config_from(sd, ckpt.label)
        table = sincos_2d(cfg.hidden_size, *cfg.pos_grid)
        if "pos_embed" not in sd:
            meta = next(iter(sd.values())).device.type == "meta"
            sd["pos_embed"] = table.to("meta") if meta else table
        elif sd["pos_embed"].device.type != "meta":
            gap = (sd["pos_embed"].float() - table).abs().max().item()
            if gap > 4 * torch.finfo(sd["pos_embed"].dtype).eps:
                warnings.warn(f"{ckpt.label}: the stored pos_embed differs from the sin-cos formula by {gap:.3g}; "
                              "sizes other than the trained one use the formula.", RuntimeWarning, stacklevel=2)
        return sd

    def config_from(self, sd: Mapping[str, Tensor], ckpt: Checkpoint, **options: Any) -> VideoDiTConfig:
        return config_from(sd, ckpt.label)

    def build(self, config: VideoDiTConfig) -> nn.Module:
        return VideoDiT(config)

