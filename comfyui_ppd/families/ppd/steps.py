"""The image model's steps the CLI and the nodes share: load the pipeline, predict depth."""
from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from ... import imaging, tiling
from ...checkpoints import Source
from ...encoders.base import ENCODER_EXPECTED, ENCODER_FIX, SemanticEncoder
from ...loaders import load
from ...registry import in_slots
from ...runtime import Precision
from ...sampling import sampling_timesteps
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


def predict_depth_tiled(pipe: PPDPipeline, image: Tensor, *, tile_size: tuple[int, int] = (768, 1024),
                        overlap: float = 0.25, steps: int = 4, seed: int = 0, ensemble_size: int = 1,
                        area: int | None = None, progress: ProgressCallback | None = None) -> Tensor:
    """Full-resolution depth (B,1,H,W) for an RGB batch (B,3,H,W) by `tiling.tiled_depth`: every pass (the
    whole image, then each tile) is a PPD run at `area` with the same seed(s), resized back to what it saw.

    `progress(done, total)` counts DiT evaluations over all passes and images (it may raise to cancel).
    """
    b, _, height, width = image.shape
    passes = tiling.pass_count(height, width, tile_size, overlap)
    per_pass = ensemble_size * len(sampling_timesteps(steps))
    done = 0

    def predict(img: Tensor) -> Tensor:
        nonlocal done
        base = done

        def step(k: int, _total: int) -> None:
            if progress:
                progress(base + k, b * passes * per_pass)

        prepared = pipe.prepare(img[None], area=area)
        depth = pipe.predict(prepared, steps=steps, seed=seed, ensemble_size=ensemble_size, callback=step).depth
        done = base + per_pass
        return imaging.resize_depth(depth, (img.shape[-2], img.shape[-1]))[0, 0]

    return torch.stack([tiling.tiled_depth(x, predict, tile_size=tile_size, overlap=overlap)[None] for x in image])
