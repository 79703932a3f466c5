"""The one way to load a model: read the file, pick its family among those a slot accepts, build the
architecture from tensor shapes, load strictly. The public loaders name the slots they fill."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from . import registry
from .checkpoints import Checkpoint, Source, check_strict, load_strict
from .encoders.base import ENCODER_EXPECTED, ENCODER_FIX, SemanticEncoder
from .errors import CheckpointError, PPDError
from .families.moge2 import EXPECTED as GEOMETRY_EXPECTED
from .families.moge2 import FIX as GEOMETRY_FIX
from .families.moge2 import MoGe2Model
from .families.ppd import EXPECTED as DIT_EXPECTED
from .families.ppd import FIX as DIT_FIX
from .families.ppd.dit import PPDDiT
from .families.ppvd.dit import VideoDiT
from .family import Family
from .filecheck import loader_reason, redownload_hint
from .reader import read_header, read_tensors


def load(source: Source, accept: Sequence[str], expected: str, fix: str, *, device: torch.device | str = "cpu",
         dtype: torch.dtype = torch.float32, **options: Any) -> nn.Module:
    """Read `source`, pick its family among `accept` (family names), build the architecture from shapes, load
    strictly; a file of another family is refused with that family's advice.

    Names and shapes are checked on the file's header (a .safetensors file) before any tensor is read, and then
    only the tensors the model uses are read."""
    ckpt = read_header(source)
    family = registry.resolve(ckpt, accept, expected, fix)
    what = f"a complete {family.title.removeprefix('the ')}"
    sd, config = _part_and_config(family, ckpt, options)
    with torch.device("meta"):
        module = family.build(config)
    check_strict(module, sd, ckpt.label, what)
    if ckpt.path is not None:
        ckpt = read_tensors(ckpt, family.sources(ckpt, sd))
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


def load_dit(source: Source, *, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> PPDDiT | VideoDiT:
    """Load a PPD DiT (ppd.pth, ppd_moge.pth, a converted .safetensors, or a state dict) or the PPVD video DiT
    (ppvd.pth), strictly; which one is read from the keys. The image DiT goes to PPDPipeline, the video DiT
    to VideoDepthPipeline.

    Call `dit(x, semantics, timestep)` with x = cat[latent, image - 0.5] -> velocity (B,1,H,W).
    """
    return cast(PPDDiT | VideoDiT, load(source, registry.in_slots("dit", "video_dit"), DIT_EXPECTED, DIT_FIX,
                                        device=device, dtype=dtype))


def load_semantic_encoder(source: Source, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                          num_heads: int | None = None) -> SemanticEncoder:
    """Load a Depth Anything v2 or MoGe-2 semantic encoder, or Pi3 (the video model's; kind detected from the
    keys), strictly.

    `encoder(image)` with image (B,3,H,W) in [0,1], sides multiples of 16 -> (B, H/16*W/16, C) (Pi3: the B
    frames of one window are one sample).
    `num_heads` overrides the head count (not stored in checkpoints; released models use 64-dim heads).
    """
    return cast(SemanticEncoder, load(source, registry.in_slots("encoder", "video_encoder"), ENCODER_EXPECTED,
                                      ENCODER_FIX, device=device, dtype=dtype, num_heads=num_heads))


def load_geometry_model(source: Source, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                        num_heads: int | None = None) -> MoGe2Model:
    """Load a full MoGe-2 model (model.pt or .safetensors with `model_config`), strictly, for metric geometry.

    `model.infer(image)` with image (3,H,W) or (B,3,H,W) in [0,1] -> points, depth, mask, intrinsics, normal.
    `num_heads` as for load_semantic_encoder.
    """
    return cast(MoGe2Model, load(source, registry.in_slots("geometry"), GEOMETRY_EXPECTED, GEOMETRY_FIX,
                                 device=device, dtype=dtype, num_heads=num_heads))
