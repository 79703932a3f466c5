"""Pixel-Perfect Depth (image): the cascaded DiT, its pipeline and FLOP formula, and its registry entry."""
from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, cast

from torch import Tensor, nn

from ...catalogue import semantics_from_name
from ...checkpoints import Checkpoint, Source, prefixes_of, subdict
from ...registry import Family, has_key, single_prefix
from .dit import DiTConfig, PPDDiT, dit_config

ANCHOR = "x_embedder.proj.weight"
FUSION = "proj_fusion.0.weight"
EXPECTED = "a Pixel-Perfect Depth DiT (ppd.pth or ppd_moge.pth)"
FIX = "Pick the PPD DiT file for the model input (the semantic encoder file goes to the encoder input)."


class PPDFamily(Family):
    """The image DiT: the embedder and fusion MLP under one prefix, no temporal blocks (those are PPVD)."""

    name, role = "ppd", "dit"
    title = "the PPD DiT"
    advice = ("This is the image model (PPD); use the image nodes (Load PPD Model) or PPDPipeline, and give it "
              "to the DiT input (load_dit).")
    pipeline = "comfyui_ppd.families.ppd.pipeline:PPDPipeline"

    def detect(self, keys: Collection[str]) -> int:
        if has_key(keys, "temporal_blocks."):
            return 0
        return 2 if any(p + FUSION in keys for p in prefixes_of(keys, ANCHOR)) else 0

    def part(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        prefix = single_prefix(ckpt, ANCHOR, "DiTs", EXPECTED, FIX, also=FUSION)
        return subdict(ckpt.tensors, prefix)

    def config_from(self, sd: Mapping[str, Tensor], ckpt: Checkpoint, **options: Any) -> DiTConfig:
        return dit_config(sd, ckpt.label)

    def build(self, config: DiTConfig) -> nn.Module:
        return PPDDiT(config)

    def after_load(self, module: nn.Module, ckpt: Checkpoint, source: Source) -> None:
        """Which semantics it was trained with: our converter's metadata, else a guess from the file name."""
        dit = cast(PPDDiT, module)
        if ckpt.metadata.get("ppd.semantics") in ("da2", "moge2"):
            dit.semantics_kind, dit.semantics_kind_source = ckpt.metadata["ppd.semantics"], "metadata"
        elif isinstance(source, (str, Path)):
            dit.semantics_kind = semantics_from_name(Path(source).name)
            dit.semantics_kind_source = "file name" if dit.semantics_kind else ""
