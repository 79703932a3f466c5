"""Model families: which model a checkpoint holds (from its keys, never its file name), and how to build it.

A family is one model a loader can be asked for (the PPD image DiT, a semantic encoder, ...). Loaders name
the families they accept; a file of another known family is refused with that family's advice (e.g. the
video DiT given to the image loader says to use the video nodes). The families are listed here; what a family
is (`Family`) lives in family.py, so no family imports this module; loading a file is loaders.py.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from torch import Tensor

from .checkpoints import DOWNLOAD_HINT, Checkpoint, describe
from .encoders.da2 import DA2Family
from .encoders.moge2 import MoGe2EncoderFamily
from .encoders.pi3 import Pi3Family
from .errors import CheckpointError
from .families.foreign import StableDiffusion
from .families.moge2.load import MoGe1Model, MoGe2GeometryFamily
from .families.ppd import PPDFamily
from .families.ppvd import PPVDFamily
from .family import Family

_REGISTERED: list[Family] = [PPDFamily(), DA2Family(), MoGe2EncoderFamily(), PPVDFamily(), Pi3Family(),
                              MoGe2GeometryFamily(), MoGe1Model(), StableDiffusion()]


def families() -> list[Family]:
    """Every known family, built-in first. Adding a family: implement it in its folder and list it in _REGISTERED
    (or `register` it)."""
    return list(_REGISTERED)


def register(family: Family) -> Family:
    """Add a family (e.g. one defined outside the engine, or in a test); its name must be new."""
    if any(f.name == family.name for f in _REGISTERED):
        raise ValueError(f"a family named {family.name!r} is already registered")
    _REGISTERED.append(family)
    return family


def unregister(name: str) -> None:
    """Remove the family called `name` (a test's toy family, when the test ends)."""
    _REGISTERED[:] = [f for f in _REGISTERED if f.name != name]


def in_slots(*slots: str) -> tuple[str, ...]:
    """The names of the families that fill any of `slots` (what a loader for those slots accepts)."""
    return tuple(f.name for f in _REGISTERED if f.slot in slots)


def get(name: str) -> Family | None:
    """The family called `name`, or None."""
    return next((f for f in _REGISTERED if f.name == name), None)


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
