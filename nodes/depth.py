"""PPD Semantic Encoder and PPD Depth Sampler: IMAGE -> PPD_SEMANTICS -> PPD_DEPTH (+ a ControlNet image).

Packets passed between nodes (plain dicts, CPU tensors):
  PPD_SEMANTICS: semantics (B,N,C), image (B,3,h,w) resized RGB, input_size (H,W), encoder (kind, width)
  PPD_DEPTH:     depth (B,1,h,w) normalised log(1+depth), larger = farther, at the processing size;
                 spread (B,1,h,w) ensemble std or None; image (B,3,h,w); input_size (H,W); kind "ppd"
"""
from __future__ import annotations

import contextlib
import logging
import re

import comfy.model_management as mm
import comfy.utils
import torch

from ..comfyui_ppd import imaging
from ..comfyui_ppd.errors import InputError
from ..comfyui_ppd.families.ppd import steps as ppd_steps
from ..comfyui_ppd.families.ppd.pipeline import Prepared
from ..comfyui_ppd.sampling import sampling_timesteps

log = logging.getLogger("comfyui_ppd")
RESOLUTIONS = {"1024x768 area (official)": imaging.DEFAULT_AREA, "768x576 area (faster)": 768 * 576,
               "512x384 area (fastest)": 512 * 384, "custom long side": None}


def image_to_bchw(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B,H,W,C) -> (B,3,H,W); alpha is dropped and grey repeated, as LoadImage does."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise InputError(f"expected an IMAGE (batch, height, width, channels), got "
                         f"{getattr(image, 'shape', type(image).__name__)}.")
    channels = image.shape[-1]
    if channels == 4:
        log.warning("PPD: dropping the alpha channel of a 4-channel image.")
        image = image[..., :3]
    elif channels == 1:
        image = image.expand(*image.shape[:-1], 3)
    elif channels != 3:
        raise InputError(f"the image has {channels} channels; PPD needs RGB (3 channels). "
                         "Convert it with an image-to-RGB node first.")
    return image.movedim(-1, 1).float()


def progress(total: int, node_id: str | None = None):
    """A callback(done, total) that drives ComfyUI's progress bar and honours Cancel between steps."""
    bar = comfy.utils.ProgressBar(total, node_id=node_id)

    def callback(done: int, total_: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total_)

    return callback


@contextlib.contextmanager
def cancellable(module: torch.nn.Module):
    """Check Cancel before every transformer block of `module` (a DiT step over an ensemble chunk, or an
    encoder pass over a batch, can take seconds; a block is the smallest unit of work)."""
    blocks = [m for name, m in module.named_modules() if re.fullmatch(r"(.+\.)?blocks\.\d+", name)]
    handles = [b.register_forward_pre_hook(lambda *_: mm.throw_exception_if_processing_interrupted())
               for b in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class PPD_SemanticEncoder:
    DESCRIPTION = ("Resizes the image to PPD's processing size (sides multiples of 16, aspect kept) and runs "
                   "the semantic encoder once per image. Batches are processed in chunks that fit memory.")
    CATEGORY = "PPD"
    FUNCTION = "encode"
    RETURN_TYPES = ("PPD_SEMANTICS",)
    RETURN_NAMES = ("semantics",)
    OUTPUT_TOOLTIPS = ("Semantic tokens, the resized image and the original size, for the Depth Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ppd_model": ("PPD_MODEL", {"tooltip": "The model from Load PPD Model."}),
            "image": ("IMAGE", {"tooltip": "The image or batch of frames to estimate depth for."}),
            "resolution": (list(RESOLUTIONS), {
                "default": "1024x768 area (official)",
                "tooltip": "Processing size. PPD was trained at a 1024x768 pixel area (aspect kept); smaller "
                           "areas are faster but less detailed. 'custom long side' uses long_side below."}),
            "long_side": ("INT", {
                "default": 1024, "min": 64, "max": 4096, "step": 16,
                "tooltip": "Longest side in pixels when resolution is 'custom long side' (rounded to 16)."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def encode(self, ppd_model, image, resolution: str, long_side: int, unique_id=None):
        x = image_to_bchw(image)
        h, w = x.shape[-2:]
        if resolution not in RESOLUTIONS:
            raise InputError(f"unknown resolution {resolution!r}; choose one of {list(RESOLUTIONS)}.")
        area = RESOLUTIONS[resolution]
        pipe = ppd_model.pipeline
        px = pipe.dit.config.token_px
        size = (imaging.long_side_size(h, w, long_side, px) if area is None
                else imaging.processing_size(h, w, area, px))
        ppd_model.load(*size)                                   # room for the weights and one image's activations
        with cancellable(pipe.encoder):
            prepared = pipe.prepare(x, area=area, long_side=None if area else long_side,
                                    callback=progress(x.shape[0], unique_id))
        return ({"semantics": prepared.semantics, "image": prepared.image, "input_size": (h, w),
                 "encoder": (pipe.encoder.kind, pipe.encoder.semantic_dim)},)


class PPD_DepthSampler:
    DESCRIPTION = ("Generates depth with Pixel-Perfect Depth's flow-matching sampler (Euler, velocity "
                   "prediction). Outputs the raw depth for the other PPD nodes and a ControlNet-ready image "
                   "(near = white). A seed ensemble averages several samples and reports their spread.")
    CATEGORY = "PPD"
    FUNCTION = "sample"
    RETURN_TYPES = ("PPD_DEPTH", "IMAGE")
    RETURN_NAMES = ("ppd_depth", "depth_image")
    OUTPUT_TOOLTIPS = ("Raw PPD depth (normalised log-depth, larger = farther) at the processing size, for "
                       "Render / Save / Point Cloud nodes.",
                       "Depth as an image at the input size, near = white, normalised per image: wire it "
                       "straight into a depth ControlNet.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ppd_model": ("PPD_MODEL", {"tooltip": "The model from Load PPD Model."}),
            "semantics": ("PPD_SEMANTICS", {"tooltip": "The output of PPD Semantic Encoder."}),
            "steps": ("INT", {"default": 4, "min": 1, "max": 50,
                              "tooltip": "Sampling steps. 4 is the official default; more steps change little."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Noise seed. The same seed gives the same depth on every device; every "
                                        "frame of a batch gets the same noise (steadier video)."}),
        }, "optional": {
            "ensemble_size": ("INT", {"default": 1, "min": 1, "max": 16,
                                      "tooltip": "Number of seeds (seed, seed+1, ...) averaged after aligning "
                                                 "their scale and shift; >1 is slower but smoother, and gives "
                                                 "a spread map."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def sample(self, ppd_model, semantics, steps: int, seed: int, ensemble_size: int = 1, unique_id=None):
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}.")
        pipe = ppd_model.pipeline
        kind, width = semantics["encoder"]
        if (kind, width) != (pipe.encoder.kind, pipe.encoder.semantic_dim):
            raise InputError(f"these semantics come from a {kind} encoder ({width} wide) but the model uses "
                             f"{pipe.encoder.kind}; feed the Semantic Encoder the same PPD model.")
        image = semantics["image"]
        b, _, h, w = image.shape
        ppd_model.load(h, w)
        total = b * ensemble_size * len(sampling_timesteps(steps))
        prepared = Prepared(image, semantics["semantics"], semantics["input_size"])
        with cancellable(pipe.dit):
            result = ppd_steps.predict_depth(pipe, prepared, steps=steps, seed=seed, ensemble_size=ensemble_size,
                                         progress=progress(total, unique_id))
        packet = {"depth": result.depth, "spread": result.spread, "image": image,
                  "input_size": semantics["input_size"], "kind": "ppd"}
        rgb, _ = imaging.render_depth(result.depth, "controlnet", size=semantics["input_size"])
        return {"ui": {"text": [size_note(image.shape[-2:], semantics["input_size"], b, ensemble_size)]},
                "result": (packet, rgb.movedim(1, -1).to(mm.intermediate_device()))}


BIG_INPUT = 4  # an input this many times the processing area gets a hint to scale it down first


def size_note(processed, input_size, batch: int, ensemble_size: int) -> str:
    """What the Sampler did, sizes in W x H (as ComfyUI shows them), with a hint for very large inputs."""
    (h, w), (H, W) = processed, input_size
    text = (f"PPD processed {w} x {h} (W x H) for a {W} x {H} input, {batch} image(s)"
            + (f", ensemble of {ensemble_size}" if ensemble_size > 1 else "")
            + f"; ppd_depth is {w} x {h}, depth_image {W} x {H}.")
    if H * W > BIG_INPUT * h * w:
        text += (f" The input is {H * W / 1e6:.0f} MP but PPD works at {h * w / 1e6:.1f} MP: resizing it and the "
                 "full-size outputs costs time and memory; scale the image down first (e.g. core Upscale Image "
                 "By 0.25) unless you need full-size depth images.")
    return text
