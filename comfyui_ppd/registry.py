"""Model families: which model a checkpoint holds (from its keys, never its file name), and how to build it.

A family is one model a loader can be asked for (the PPD image DiT, a semantic encoder, ...). Loaders name
the families they accept; a file of another known family is refused with that family's advice (e.g. the
video DiT given to the image loader says to use the video nodes). Built-in families are listed in
`families()`; a new one subclasses `Family` and is added there.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoints import (
    DOWNLOAD_HINT,
    Checkpoint,
    Source,
    check_strict,
    describe,
    load_strict,
    prefixes_of,
    read_header,
    read_tensors,
)
from .errors import CheckpointError, PPDError
from .filecheck import loader_reason, redownload_hint


class Family:
    """One model family. Subclasses set the names and implement detect, and config_from/build when supported."""

    name: str = ""          # short id: "ppd", "da2", ...
    role: str = ""          # what it is for: "dit", "encoder", "geometry", "foreign"
    title: str = ""         # for messages, with an article: "the PPD image DiT"
    advice: str = ""        # what to do with such a file when another loader got it
    pipeline: str = ""      # "module:Class" of the pipeline that runs it, when it has one

    def detect(self, keys: Collection[str]) -> int:
        """How surely `keys` are this family's checkpoint: 0 = not this family, higher = more specific."""
        raise NotImplementedError

    def part(self, ckpt: Checkpoint) -> dict[str, Tensor]:
        """The tensors this family builds from, prefix removed."""
        return dict(ckpt.tensors)

    def config_from(self, sd: Mapping[str, Tensor], ckpt: Checkpoint, **options: Any) -> Any:
        """The architecture, read from tensor shapes (and the checkpoint's metadata)."""
        raise CheckpointError(ckpt.label, "a model this version can run", f"{self.title}",
                              f"{self.title[0].upper()}{self.title[1:]} is recognised but not supported yet "
                              f"by this version of the pack. {self.advice}")

    def build(self, config: Any) -> nn.Module:
        """An unloaded module of this architecture (called on the meta device)."""
        raise NotImplementedError

    def after_load(self, module: nn.Module, ckpt: Checkpoint, source: Source) -> None:
        """Fill fields that are not weights (e.g. provenance) after a strict load."""


class KeyFamily(Family):
    """A family recognised by key suffixes alone: every `needs` suffix present, no `refuses` suffix."""

    needs: tuple[str, ...] = ()
    refuses: tuple[str, ...] = ()
    score: int = 1

    def detect(self, keys: Collection[str]) -> int:
        has = lambda s: has_key(keys, s)  # noqa: E731
        return self.score if all(map(has, self.needs)) and not any(map(has, self.refuses)) else 0


def has_key(keys: Collection[str], name: str) -> bool:
    """A key `name` under any prefix; a name ending in "." matches every key under it."""
    if name.endswith("."):
        return any(k.startswith(name) or ("." + name) in k for k in keys)
    return any(k == name or k.endswith("." + name) for k in keys)


# --- families recognised only so that a loader can name them ---------------------------------------------


class StableDiffusion(KeyFamily):
    name, role = "sd_unet", "foreign"
    title = "a Stable Diffusion / image-generation UNet"
    advice = "This pack does not use it: it belongs in ComfyUI's checkpoints folder."
    needs = ("diffusion_model.",)


def families() -> list[Family]:
    """Every known family. Adding a family: implement it in its folder and list it here."""
    from .encoders.da2 import DA2Family
    from .encoders.moge2 import MoGe2EncoderFamily
    from .encoders.pi3 import Pi3Family
    from .families.moge2.load import MoGe1Model, MoGe2GeometryFamily
    from .families.ppd import PPDFamily
    from .families.ppvd import PPVDFamily
    return [PPDFamily(), DA2Family(), MoGe2EncoderFamily(), PPVDFamily(), Pi3Family(), MoGe2GeometryFamily(),
            MoGe1Model(), StableDiffusion()]


def identify(tensors: Mapping[str, Tensor] | Collection[str]) -> list[tuple[int, Family]]:
    """The families that recognise these keys, best first."""
    keys = list(tensors)
    found = [(f.detect(keys), f) for f in families()]
    return sorted([(s, f) for s, f in found if s > 0], key=lambda sf: -sf[0])


def resolve(ckpt: Checkpoint, accept: Sequence[str], expected: str, fix: str) -> Family:
    """The best accepted family for this checkpoint, or a CheckpointError naming what the file is."""
    ranked = identify(ckpt.tensors)
    for _, family in ranked:
        if family.name in accept:
            return family
    if ranked:
        other = ranked[0][1]
        raise CheckpointError(ckpt.label, expected, other.title, f"{other.advice} {fix}".strip())
    raise CheckpointError(ckpt.label, expected, describe(ckpt.tensors), f"{fix} {DOWNLOAD_HINT}".strip())


def load(source: Source, accept: Sequence[str], expected: str, fix: str, *, device: torch.device | str = "cpu",
         dtype: torch.dtype = torch.float32, **options: Any) -> nn.Module:
    """Read `source`, pick its family among `accept`, build the architecture from shapes, load strictly.

    Names and shapes are checked on the file's header (a .safetensors file) before any tensor is read, and then
    only the tensors the model uses are read."""
    ckpt = read_header(source)
    family = resolve(ckpt, accept, expected, fix)
    what = f"a complete {family.title.removeprefix('the ')}"
    sd, config = _part_and_config(family, ckpt, options)
    with torch.device("meta"):
        module = family.build(config)
    check_strict(module, sd, ckpt.label, what)
    if ckpt.path is not None:
        ckpt = read_tensors(ckpt, sd.values())
        sd = family.part(ckpt)
    module = load_strict(module, sd, ckpt.label, what, device, dtype)
    family.after_load(module, ckpt, source)
    return module


def _part_and_config(family: Family, ckpt: Checkpoint, options: dict) -> tuple[dict[str, Tensor], Any]:
    """The family's tensors and architecture; metadata or tensors of the wrong types are a CheckpointError that
    names the file (not an AttributeError from deep inside a config reader)."""
    try:
        sd = family.part(ckpt)
        return sd, family.config_from(sd, ckpt, **options)
    except PPDError:
        raise
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError) as e:
        what = "model_config metadata or tensors" if "model_config" in ckpt.metadata else "tensors"
        hint = redownload_hint(Path(ckpt.label)) if Path(ckpt.label).is_file() else ""
        raise CheckpointError(ckpt.label, family.title, f"{what} it cannot read ({loader_reason(e).rstrip('.')})",
                              f"The file is damaged or from another version of the model. {hint}".strip()) from None


def single_prefix(ckpt: Checkpoint, anchor: str, what: str, expected: str, fix: str,
                  also: str | None = None) -> str:
    """The one prefix of `anchor` (with `also` beside it when given); several or none is a CheckpointError."""
    found = [p for p in prefixes_of(ckpt.tensors, anchor) if also is None or p + also in ckpt.tensors]
    if len(found) != 1:
        text = describe(ckpt.tensors) if not found else f"{len(found)} {what} ({', '.join(found)})"
        raise CheckpointError(ckpt.label, expected, text, fix)
    return found[0]
