"""What a model family is: the base classes every family folder subclasses (a leaf module: it imports no family).

A family declares everything about its model in its own folder: how its checkpoint is recognised (`detect`), its
architecture from tensor shapes (`config_from`, `build`), the slot it fills, its official files, its semantics
and pairing, and its `convert` export. The registry lists the families; the catalogue, the inventory, the CLI's
routing and the nodes' dropdowns are derived from these declarations.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .checkpoints import Checkpoint, Source, describe, prefixes_of
from .errors import CheckpointError

# The one slot vocabulary: which loader input (CLI flag, node dropdown) a file fills, and its label in messages.
SLOTS = {"dit": "DiT", "encoder": "semantic encoder", "geometry": "geometry model", "video_dit": "video DiT",
         "video_encoder": "video encoder"}


@dataclass(frozen=True)
class ModelFile:
    """One official weight file: its name on disk, the slots it fills, and where to get it."""

    name: str                       # file name on disk
    slots: tuple[str, ...]          # keys of SLOTS; a full MoGe-2 model.pt is an encoder and a geometry model
    semantics: str                  # which semantic encoder a DiT was trained with / an encoder is
    url: str | None                 # None: no direct link, see note and page
    approx_size: str                # approximate, for the user's information only; never checked
    note: str
    defaults: tuple[str, ...] = ()  # the slots whose default file this is
    page: str = ""                  # where the link is when there is no direct URL


class Family:
    """One model family. Subclasses set the names and implement detect, and config_from/build when supported."""

    name: str = ""                  # short id, e.g. the registry key
    slot: str = ""                  # the SLOTS key it fills; "" for families recognised only to refuse them
    title: str = ""                 # for messages, with an article: "the PPD image DiT"
    advice: str = ""                # what to do with such a file when another loader got it
    semantics: str = ""             # an encoder: the semantics it gives (a DiT: see semantics_of)
    label: str = ""                 # an encoder's semantics in words, e.g. "Depth Anything v2"
    files: tuple[ModelFile, ...] = ()
    encoder_slot: str = ""          # a DiT: the slot of the encoder it runs with
    video: bool = False             # a DiT that predicts clips (CLI: videos go to it when its files are found)

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

    def sources(self, ckpt: Checkpoint, sd: Mapping[str, Tensor]) -> list[Tensor]:
        """The file's tensors that `part` builds `sd` from (read from a header-only checkpoint): `sd`'s own,
        unless `part` makes new tensors from several (a key-layout mapping)."""
        return list(sd.values())

    def after_load(self, module: nn.Module, ckpt: Checkpoint, source: Source) -> None:
        """Fill fields that are not weights (e.g. provenance) after a strict load."""

    def semantics_of(self, metadata: Mapping[str, Any], file_name: str) -> tuple[str | None, str]:
        """(semantics, how it was decided: "metadata" | "keys" | "file name" | "") of one of this family's files."""
        return (self.semantics, "keys") if self.semantics else (None, "")

    def pairing(self, semantics: str | None, source: str, encoder_semantics: str | None, dit_name: str,
                encoder_name: str) -> str:
        """A DiT's pairing rule: a sentence when an encoder of `encoder_semantics` does not suit it, else ""."""
        return ""

    def export(self, sd: dict[str, Tensor], config: Any, source_name: str, semantics: str | None
               ) -> tuple[dict[str, Tensor], dict[str, str]] | None:
        """`convert`: (tensors under their loadable names, metadata) to store, or None when not convertible."""
        return None


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


def single_prefix(ckpt: Checkpoint, anchor: str, what: str, expected: str, fix: str,
                  also: str | None = None) -> str:
    """The one prefix of `anchor` (with `also` beside it when given); several or none is a CheckpointError."""
    found = [p for p in prefixes_of(ckpt.tensors, anchor) if also is None or p + also in ckpt.tensors]
    if len(found) != 1:
        text = describe(ckpt.tensors) if not found else f"{len(found)} {what} ({', '.join(found)})"
        raise CheckpointError(ckpt.label, expected, text, fix)
    return found[0]
