"""PPD Semantic Encoder and PPD Depth Sampler: IMAGE -> PPD_SEMANTICS -> PPD_DEPTH (+ a ControlNet image).

Packets passed between nodes (plain dicts, CPU tensors):
  PPD_SEMANTICS: semantics (B,N,C), image (B,3,h,w) resized RGB, input_size (H,W), encoder (kind, width)
  PPD_DEPTH:     depth (B,1,h,w) normalised log(1+depth), larger = farther, at the processing size;
                 spread (B,1,h,w) ensemble std or None; image (B,3,h,w); input_size (H,W); kind "ppd"
"""
from __future__ import annotations

from comfy_api.latest import io

from ..comfyui_ppd import imaging
from ..comfyui_ppd.errors import InputError
from ..comfyui_ppd.families.ppd import steps as ppd_steps
from ..comfyui_ppd.families.ppd.pipeline import Prepared
from ..comfyui_ppd.sampling import sampling_timesteps
from .common import (
    PPDDepth,
    PPDModel,
    PPDSemantics,
    cancellable,
    image_to_bchw,
    loaded,
    node_id,
    output,
    progress,
    schema,
    show_text,
    to_image,
)

RESOLUTIONS = {"1024x768 area (official)": imaging.DEFAULT_AREA, "768x576 area (faster)": 768 * 576,
               "512x384 area (fastest)": 512 * 384, "custom long side": None}
MODEL_TOOLTIP = "The model from Load PPD Model."
ALIASES = ["depth", "depth estimation", "depth map", "monocular depth", "pixel perfect depth", "zoe", "midas",
           "depth anything", "controlnet depth", "ppd"]


class PPD_SemanticEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_SemanticEncoder", "PPD Semantic Encoder",
            "Resizes the image to PPD's processing size (sides multiples of 16, aspect kept) and runs the semantic "
            "encoder once per image. Batches are processed in chunks that fit memory.",
            ALIASES + ["semantic encoder", "image encoder"],
            inputs=[
                PPDModel.Input("ppd_model", tooltip=MODEL_TOOLTIP),
                io.Image.Input("image", tooltip="The image or batch of frames to estimate depth for."),
                io.Combo.Input("resolution", options=list(RESOLUTIONS), default="1024x768 area (official)",
                               tooltip="Processing size. PPD was trained at a 1024x768 pixel area (aspect kept); "
                                       "smaller areas are faster but less detailed. 'custom long side' uses "
                                       "long_side below."),
                io.Int.Input("long_side", default=1024, min=64, max=4096, step=16,
                             tooltip="Longest side in pixels when resolution is 'custom long side' (rounded to 16)."),
            ],
            outputs=[output(PPDSemantics, "semantics", "Semantic tokens, the resized image and the original "
                                                              "size, for the Depth Sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, ppd_model, image, resolution: str, long_side: int) -> io.NodeOutput:
        model = loaded(ppd_model, "ppd_model", "Load PPD Model")
        x = image_to_bchw(image)
        h, w = x.shape[-2:]
        if resolution not in RESOLUTIONS:
            raise InputError(f"unknown resolution {resolution!r}; choose one of {list(RESOLUTIONS)}.")
        area = RESOLUTIONS[resolution]
        pipe = model.engine
        px = pipe.dit.config.token_px
        size = (imaging.long_side_size(h, w, long_side, px) if area is None
                else imaging.processing_size(h, w, area, px))
        model.load(pipe.activation_bytes(*size))               # room for the weights and one image's activations
        with cancellable(pipe.encoder):
            prepared = pipe.prepare(x, area=area, long_side=None if area else long_side,
                                    callback=progress(x.shape[0], node_id(cls)))
        return io.NodeOutput({"semantics": prepared.semantics, "image": prepared.image, "input_size": (h, w),
                              "encoder": (pipe.encoder.kind, pipe.encoder.semantic_dim)})


class PPD_DepthSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_DepthSampler", "PPD Depth Sampler",
            "Generates depth with Pixel-Perfect Depth's flow-matching sampler (Euler, velocity prediction). "
            "Outputs the raw depth for the other PPD nodes and a ControlNet-ready image (near = white). A seed "
            "ensemble averages several samples and reports their spread.",
            ALIASES + ["depth sampler", "diffusion depth", "sharp edges", "no flying pixels"],
            inputs=[
                PPDModel.Input("ppd_model", tooltip=MODEL_TOOLTIP),
                PPDSemantics.Input("semantics", tooltip="The output of PPD Semantic Encoder."),
                io.Int.Input("steps", default=4, min=1, max=50,
                             tooltip="Sampling steps. 4 is the official default; more steps change little."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed. The same seed gives the same depth on every device; every frame "
                                     "of a batch gets the same noise (steadier video)."),
                io.Int.Input("ensemble_size", default=1, min=1, max=16, optional=True,
                             tooltip="Number of seeds (seed, seed+1, ...) averaged after aligning their scale and "
                                     "shift; >1 is slower but smoother, and gives a spread map."),
            ],
            outputs=[
                output(PPDDepth, "ppd_depth", "Raw PPD depth (normalised log-depth, larger = farther) at the "
                                              "processing size, for Render / Save / Point Cloud nodes."),
                output(io.Image, "depth_image", "Depth as an image at the input size, near = white, "
                                                "normalised per image: wire it straight into a depth "
                                                "ControlNet."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, ppd_model, semantics, steps: int, seed: int, ensemble_size: int = 1) -> io.NodeOutput:
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}.")
        model = loaded(ppd_model, "ppd_model", "Load PPD Model")
        pipe = model.engine
        kind, width = semantics["encoder"]
        if (kind, width) != (pipe.encoder.kind, pipe.encoder.semantic_dim):
            raise InputError(f"these semantics come from a {kind} encoder ({width} wide) but the model uses "
                             f"{pipe.encoder.kind}; feed the Semantic Encoder the same PPD model.")
        image = semantics["image"]
        b, _, h, w = image.shape
        model.load(pipe.activation_bytes(h, w))
        total = b * ensemble_size * len(sampling_timesteps(steps))
        prepared = Prepared(image, semantics["semantics"], semantics["input_size"])
        with cancellable(pipe.dit):
            result = ppd_steps.predict_depth(pipe, prepared, steps=steps, seed=seed, ensemble_size=ensemble_size,
                                         progress=progress(total, node_id(cls)))
        packet = {"depth": result.depth, "spread": result.spread, "image": image,
                  "input_size": semantics["input_size"], "kind": "ppd"}
        rgb, _ = imaging.render_depth(result.depth, "controlnet", size=semantics["input_size"])
        show_text(cls, size_note(image.shape[-2:], semantics["input_size"], b, ensemble_size))
        return io.NodeOutput(packet, to_image(rgb))


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
