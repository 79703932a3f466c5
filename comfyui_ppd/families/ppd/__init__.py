"""Pixel-Perfect Depth (image): the cascaded DiT, its pipeline and FLOP formula, and its family declaration
(official files, semantics and pairing, convert export)."""
from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, cast

from torch import Tensor, nn

from ...checkpoints import Checkpoint, Source, prefixes_of, subdict
from ...encoders.da2 import DA2Family
from ...encoders.moge2 import MoGe2EncoderFamily
from ...family import Family, ModelFile, has_key, single_prefix
from .dit import DiTConfig, PPDDiT, dit_config

ANCHOR = "x_embedder.proj.weight"
FUSION = "proj_fusion.0.weight"
EXPECTED = "a Pixel-Perfect Depth DiT (ppd.pth or ppd_moge.pth)"
FIX = "Pick the PPD DiT file for the model input (the semantic encoder file goes to the encoder input)."
OFFICIAL_REPO = "https://github.com/gangweix/pixel-perfect-depth"
# The encoders a PPD DiT can be trained with, by semantics: their family (label) and default file.
ENCODERS = {f.semantics: f for f in (DA2Family(), MoGe2EncoderFamily())}

FILES = (
    ModelFile("ppd.pth", ("dit",), "da2",
              "https://huggingface.co/gangweix/Pixel-Perfect-Depth/resolve/main/ppd.pth",
              "~2.0 GB",
              "Pixel-Perfect Depth DiT trained with Depth Anything v2 semantics "
              "(499,842,112 parameters, fp32). Pair it with depth_anything_v2_vitl.pth.", defaults=("dit",)),
    ModelFile("ppd_moge.pth", ("dit",), "moge2", None,
              "~2.0 GB",
              "Pixel-Perfect Depth DiT trained with MoGe-2 semantics. It is only on Google Drive "
              f"(no direct link): download it from the link in the official README ({OFFICIAL_REPO}) "
              "and place it in the models folder as ppd_moge.pth. Pair it with moge2_vitl_normal.pt.",
              page=OFFICIAL_REPO),
)


def semantics_from_name(name: str) -> str | None:
    """The semantics a DiT file was probably trained with, from its name alone ("moge" -> moge2, "ppd*" -> da2).

    A hint for pairing only (a warning on mismatch): families are always detected from the keys.
    """
    name = name.lower()
    return "moge2" if "moge" in name else "da2" if name.startswith("ppd") else None


def encoder_name(semantics: str | None) -> str | None:
    """The default encoder file for a DiT trained with `semantics` (None when unknown)."""
    family = ENCODERS.get(semantics or "")
    return next((f.name for f in family.files if "encoder" in f.slots), None) if family else None


def pairing_problem(semantics: str | None, source: str, encoder_semantics: str | None, dit_name: str,
                    encoder_name_: str) -> str:
    """The one pairing rule (the UI's note and the pipeline's check): a sentence when a DiT trained with
    `semantics` (decided from `source`) is given an encoder of other semantics, else ""."""
    if not semantics or not encoder_semantics or semantics == encoder_semantics:
        return ""
    title = lambda s: ENCODERS[s].label if s in ENCODERS else s  # noqa: E731
    how = ("decided from the file's converter metadata" if source == "metadata"
           else "guessed from the file name; a renamed file may be fine")
    return (f"pairing: {dit_name} expects {title(semantics)} semantics, got {title(encoder_semantics)} "
            f"({encoder_name_}): it was trained with {semantics} semantics ({how}). Use {encoder_name(semantics)} "
            f"as the encoder, or the DiT trained for {title(encoder_semantics)} semantics.")


class PPDFamily(Family):
    """The image DiT: the embedder and fusion MLP under one prefix, no temporal blocks (those are PPVD)."""

    name, slot, encoder_slot = "ppd", "dit", "encoder"
    title = "the PPD DiT"
    advice = ("This is the image model (PPD); use the image nodes (Load PPD Model) or PPDPipeline, and give it "
              "to the DiT input (load_dit).")
    files = FILES

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
        name = Path(source).name if isinstance(source, (str, Path)) else ""
        dit.semantics_kind, dit.semantics_kind_source = self.semantics_of(ckpt.metadata, name)

    def semantics_of(self, metadata: Mapping[str, Any], file_name: str) -> tuple[str | None, str]:
        """Our converter's `ppd.semantics` metadata, else a guess from the file name."""
        if metadata.get("ppd.semantics") in ENCODERS:
            return metadata["ppd.semantics"], "metadata"
        guess = semantics_from_name(file_name) if file_name else None
        return guess, "file name" if guess else ""

    def pairing(self, semantics: str | None, source: str, encoder_semantics: str | None, dit_name: str,
                encoder_name: str) -> str:
        return pairing_problem(semantics, source, encoder_semantics, dit_name, encoder_name)

    def export(self, sd: dict[str, Tensor], config: Any, source_name: str, semantics: str | None
               ) -> tuple[dict[str, Tensor], dict[str, str]]:
        """Keys under `dit.`; the semantics given, else guessed from the source's name."""
        semantics = semantics or semantics_from_name(source_name)
        return {"dit." + k: v for k, v in sd.items()}, ({"ppd.semantics": semantics} if semantics else {})
