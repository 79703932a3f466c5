"""MoGe-2 geometry as a registry family: detection by keys, architecture from shapes and `model_config`."""
from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, cast

from torch import Tensor, nn

from ...checkpoints import DOWNLOAD_HINT, Checkpoint, Source, describe, subdict
from ...encoders.moge2 import FILE, MoGe2Encoder, MoGe2EncoderConfig, MoGe2EncoderFamily
from ...errors import CheckpointError
from ...family import Family, KeyFamily, has_key, single_prefix
from .core_keys import from_core_layout, is_core_layout
from .model import ConvStackConfig, MoGe2Config, MoGe2Model

WHAT = "a MoGe-2 model (e.g. Ruicheng/moge-2-vitl-normal model.pt) with neck, points/mask heads and scale head"
EXPECTED = WHAT
FIX = ("Pick the MoGe-2 model.pt (moge2_vitl_normal.pt) as geometry model: a PPD DiT or a bare encoder cannot "
       "give metric depth.")
SUPPORTED_RESAMPLERS = ("conv_transpose", "bilinear")
ANCHOR = "encoder.output_projections.0.weight"


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


def moge2_config(sd: Mapping[str, Tensor], ckpt: Checkpoint) -> MoGe2Config:
    """MoGe2Config of a checkpoint's tensors; refuses MoGe-1 and incomplete models with a CheckpointError."""
    label = ckpt.label
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


@dataclass(frozen=True)
class MoGe2FullConfig:
    encoder: MoGe2EncoderConfig
    model: MoGe2Config


class MoGe2GeometryFamily(Family):
    """The complete MoGe-2 model.pt (or the same model in ComfyUI core's key layout): encoder, neck and heads."""

    name, slot, semantics, files = "moge2_geometry", "geometry", "moge2", (FILE,)
    title = "the MoGe-2 model (encoder, neck and heads)"
    advice = ("As a geometry model it goes to the PPD MoGe-2 Geometry node (load_geometry_model); as PPD's "
              "semantic encoder it goes to the encoder input.")

    def detect(self, keys: Collection[str]) -> int:
        """Score 3 (above the bare encoder's 2): MoGe-2's encoder under `encoder.` with a neck and a points head."""
        return 3 if all(has_key(keys, k) for k in (ANCHOR, "neck.", "points_head.")) else 0

    def part(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        """The model's tensors in the official layout (a file in core's layout is mapped by its keys)."""
        sd = subdict(ckpt.tensors, single_prefix(ckpt, ANCHOR, "MoGe-2 models", EXPECTED, FIX))
        return from_core_layout(sd) if is_core_layout(sd) else sd

    def sources(self, ckpt: Checkpoint, sd: Mapping[str, Tensor]) -> list[Tensor]:
        """Every tensor under the model's prefix (core's layout splits qkv, which `part` joins)."""
        return list(subdict(ckpt.tensors, single_prefix(ckpt, ANCHOR, "MoGe-2 models", EXPECTED, FIX)).values())

    def config_from(self, sd: Mapping[str, Tensor], ckpt: Checkpoint, *, num_heads: int | None = None,
                    **options: Any) -> MoGe2FullConfig:
        model = moge2_config(sd, ckpt)
        encoder = MoGe2EncoderFamily().config_from(subdict(sd, "encoder."), ckpt, num_heads=num_heads)
        return MoGe2FullConfig(encoder, model)

    def build(self, config: MoGe2FullConfig) -> nn.Module:
        enc = config.encoder
        return MoGe2Model(MoGe2Encoder(enc.vit, enc.intermediate_layers, enc.dim_out), config.model)

    def after_load(self, module: nn.Module, ckpt: Checkpoint, source: Source) -> None:
        cast(MoGe2Model, module).label = ckpt.label


class MoGe1Model(KeyFamily):
    """MoGe-1 (one `head`, no neck or scale head): recognised only to say it cannot give metric depth."""

    name, score = "moge1", 3
    title = "a MoGe-1 model (one `head`, no neck or metric-scale head)"
    advice = ("MoGe-1 predicts only relative geometry; use a MoGe-2 file (Ruicheng/moge-2-vitl-normal model.pt, "
              "saved as moge2_vitl_normal.pt). " + DOWNLOAD_HINT)
    needs = ("head.projects.0.weight",)                  # MoGe-1 head, in the official and core key layouts

