"""Families recognised only so that a loader can name them: models this pack does not run."""
from __future__ import annotations

from ..family import KeyFamily


class StableDiffusion(KeyFamily):
    name = "sd_unet"
    title = "a Stable Diffusion / image-generation UNet"
    advice = "This pack does not use it: it belongs in ComfyUI's checkpoints folder."
    needs = ("diffusion_model.",)
