"""Building MoGe-2 from a checkpoint: architecture from the tensor shapes, options from `model_config`."""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from ...checkpoints import (DOWNLOAD_HINT, Checkpoint, Source, describe, encoder_part, load_strict,
                            read_checkpoint)
from ...errors import CheckpointError
from .model import ConvStackConfig, MoGe2Config, MoGe2Model

WHAT = "a MoGe-2 model (e.g. Ruicheng/moge-2-vitl-normal model.pt) with neck, points/mask heads and scale head"
SUPPORTED_RESAMPLERS = ("conv_transpose", "bilinear")


def _levels(sd: Mapping[str, Tensor], prefix: str, group: str) -> dict[int, set[str]]:
    """{level: {rest of key}} for keys like `<prefix>.<group>.<level>.<rest>`."""
    out: dict[int, set[str]] = {}
    for k in sd:
        if m := re.match(re.escape(f"{prefix}.{group}.") + r"(\d+)\.(.+)", k):
            out.setdefault(int(m.group(1)), set()).add(m.group(2))
    return out


def conv_stack_config(sd: Mapping[str, Tensor], prefix: str, options: Mapping, label: str) -> ConvStackConfig:
    """A neck/head's sizes from its tensors; the resampler kinds from the config (checked against the tensors)."""
    n = len(_levels(sd, prefix, "input_blocks"))
    if n < 2:
        raise CheckpointError(label, WHAT, f"no usable '{prefix}' ({describe(sd)})",
                              "The file is not a complete MoGe-2 model. " + DOWNLOAD_HINT)
    for key, want in (("res_block_in_norm", "none"), ("res_block_hidden_norm", "none")):
        if options.get(key, want) != want:
            raise CheckpointError(label, f"{prefix} without normalisation layers (MoGe-2 release configs)",
                                  f"{key} = {options[key]!r}", "This MoGe variant is not supported.")
    res = _levels(sd, prefix, "res_blocks")
    have_transpose = {i for i, rest in _levels(sd, prefix, "resamplers").items() if "0.weight" in rest}
    kinds = options.get("resamplers") or ["conv_transpose" if i in have_transpose else "bilinear" for i in range(n - 1)]
    if any(k not in SUPPORTED_RESAMPLERS for k in kinds) or len(kinds) != n - 1:
        raise CheckpointError(label, f"{n - 1} resamplers of kinds {SUPPORTED_RESAMPLERS}",
                              f"{prefix} resamplers {kinds}", "This MoGe variant is not supported.")
    w = lambda i: sd[f"{prefix}.input_blocks.{i}.weight"].shape  # noqa: E731
    out = [sd[k].shape[0] if (k := f"{prefix}.output_blocks.{i}.weight") in sd else None for i in range(n)]
    return ConvStackConfig(dim_in=tuple(w(i)[1] for i in range(n)), dim_res_blocks=tuple(w(i)[0] for i in range(n)),
                           num_res_blocks=tuple(len({r.split(".")[0] for r in res.get(i, ())}) for i in range(n)),
                           dim_out=tuple(out), resamplers=tuple(kinds))


def moge2_config(ckpt: Checkpoint) -> MoGe2Config:
    """MoGe2Config of a checkpoint; refuses MoGe-1 and other models with a CheckpointError that says so."""
    sd, label = ckpt.tensors, ckpt.label
    cfg = ckpt.metadata.get("model_config") or {}
    if isinstance(cfg.get("encoder"), str) or any(k.startswith("head.") for k in sd):
        raise CheckpointError(label, WHAT, "a MoGe-1 model (one `head`, no neck or metric-scale head)",
                              "MoGe-1 predicts only relative geometry; use a MoGe-2 file "
                              "(Ruicheng/moge-2-vitl-normal). " + DOWNLOAD_HINT)
    missing = [p for p in ("encoder.output_projections", "neck", "points_head", "mask_head", "scale_head")
               if not any(k.startswith(p + ".") for k in sd)]
    if missing:
        raise CheckpointError(label, WHAT, f"{describe(sd)}, without {', '.join(missing)}",
                              "Pick the MoGe-2 model.pt for geometry (a PPD DiT or a bare encoder cannot give "
                              "metric depth). " + DOWNLOAD_HINT)
    if cfg.get("remap_output", "exp") != "exp":
        raise CheckpointError(label, "a MoGe-2 with remap_output 'exp'", f"remap_output {cfg['remap_output']!r}",
                              "This MoGe variant is not supported.")
    stack = lambda name: conv_stack_config(sd, name, cfg.get(name) or {}, label)  # noqa: E731
    scale_layers = sorted(int(m.group(1)) for k in sd if (m := re.match(r"scale_head\.(\d+)\.weight$", k)))
    dims = tuple([sd[f"scale_head.{scale_layers[0]}.weight"].shape[1]]
                 + [sd[f"scale_head.{i}.weight"].shape[0] for i in scale_layers])
    lo, hi = cfg.get("num_tokens_range", (1200, 3600))
    return MoGe2Config(neck=stack("neck"), points_head=stack("points_head"), mask_head=stack("mask_head"),
                       normal_head=stack("normal_head") if any(k.startswith("normal_head.") for k in sd) else None,
                       scale_head=dims, num_tokens_range=(int(lo), int(hi)))


def build_moge2(ckpt: Checkpoint, num_heads: int | None = None, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> MoGe2Model:
    """The full MoGe-2 model built on `meta`, then loaded strictly with every tensor of the file."""
    config = moge2_config(ckpt)
    encoder, _ = encoder_part(Checkpoint({k: v for k, v in ckpt.tensors.items() if k.startswith("encoder.")},
                                         ckpt.metadata, ckpt.label), num_heads)
    with torch.device("meta"):
        model = MoGe2Model(encoder, config)
    return load_strict(model, ckpt.tensors, ckpt.label, WHAT, device, dtype)


def load_moge2(source: Source, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               num_heads: int | None = None) -> MoGe2Model:
    """`load_geometry_model` with a head-count override (not stored in checkpoints; released: 64-dim heads)."""
    ckpt = read_checkpoint(source)
    if num_heads is None and "ppd.num_heads" in ckpt.metadata:
        num_heads = int(ckpt.metadata["ppd.num_heads"])
    model = build_moge2(ckpt, num_heads, device, dtype)
    model.label = ckpt.label
    return model
