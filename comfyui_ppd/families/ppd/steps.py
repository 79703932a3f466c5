"""The image model's steps the CLI and the nodes share: load the pipeline, predict depth."""
from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from ... import imaging
from ...checkpoints import Source
from ...encoders.base import ENCODER_EXPECTED, ENCODER_FIX, SemanticEncoder
from ...loaders import load
from ...registry import in_slots
from ...runtime import Precision
from . import EXPECTED, FIX
from .dit import PPDDiT
from .pipeline import DepthResult, PPDPipeline, Prepared, ProgressCallback


def load_pipeline(dit: Source, encoder: Source, precision: Precision, *, device: torch.device | str = "cpu",
                  area: int = imaging.DEFAULT_AREA, compile: bool | str = False) -> PPDPipeline:
    """The image DiT and its semantic encoder loaded in the policy's weight dtype, run under its autocast; the
    video model's files are refused with their advice (use the video nodes)."""
    w = precision.weights
    return PPDPipeline(cast(PPDDiT, load(dit, in_slots("dit"), EXPECTED, FIX, device=device, dtype=w)),
                       cast(SemanticEncoder, load(encoder, in_slots("encoder"), ENCODER_EXPECTED, ENCODER_FIX,
                                                  device=device, dtype=w)),
                       area=area, autocast=precision.autocast, compile=compile)


def predict_depth(pipe: PPDPipeline, image: Tensor | Prepared, *, steps: int = 4, seed: int = 0,
                  ensemble_size: int = 1, area: int | None = None, long_side: int | None = None,
                  progress: ProgressCallback | None = None) -> DepthResult:
    """Depth for an RGB batch (B,3,H,W) in [0,1], or for one already resized and encoded (`Prepared`)."""
    prepared = image if isinstance(image, Prepared) else pipe.prepare(image, area=area, long_side=long_side)
    return pipe.predict(prepared, steps=steps, seed=seed, ensemble_size=ensemble_size, callback=progress)
