"""PPD Tiled Depth: IMAGE -> PPD_DEPTH at the input's full resolution (whole-image layout + tile detail).

The packet is the Depth Sampler's (depth (B,1,H,W), spread None, image (B,3,H,W), input_size (H,W), kind "ppd")
at the input size, so Render / Save / Point Cloud / Edge Metric take it unchanged.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..comfyui_ppd import imaging, tiling
from ..comfyui_ppd.errors import InputError
from ..comfyui_ppd.families.ppd import steps as ppd_steps
from ..comfyui_ppd.sampling import sampling_timesteps
from .common import (
    PPDDepth,
    PPDModel,
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

ALIASES = ["high resolution depth", "hi-res depth", "4k depth", "8k depth", "tiles", "tiled depth",
           "upscale depth", "full resolution depth", "depth", "pixel perfect depth", "ppd"]


class PPD_TiledDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_TiledDepth", "PPD Tiled Depth (high resolution)",
            "Depth at the image's full resolution: one PPD pass over the whole image gives the layout, overlapping "
            "tiles at PPD's training size give the detail (thin poles, wires, hair), aligned to the whole-image "
            "pass so there are no seams. Costs one pass per tile more than the Depth Sampler (shown on the node). "
            "See docs/tiled-depth.md.",
            ALIASES,
            inputs=[
                PPDModel.Input("ppd_model", tooltip="The model from Load PPD Model."),
                io.Image.Input("image", tooltip="The image or batch to estimate full-resolution depth for."),
                io.Int.Input("steps", default=4, min=1, max=50,
                             tooltip="Sampling steps per pass. 4 is the official default."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed, the same for every pass and every image of a batch."),
                io.Int.Input("tile_width", default=1024, min=64, max=8192, step=16,
                             tooltip="Tile width in input pixels; 1024 x 768 is PPD's training size, so each tile "
                                     "is processed at (nearly) its own resolution."),
                io.Int.Input("tile_height", default=768, min=64, max=8192, step=16,
                             tooltip="Tile height in input pixels."),
                io.Float.Input("overlap", default=0.25, min=0.0, max=0.5, step=0.05,
                               tooltip="Fraction of a tile shared with each neighbour; the tiles' detail is "
                                       "blended across it."),
                io.Int.Input("ensemble_size", default=1, min=1, max=16, optional=True,
                             tooltip="Seeds (seed, seed+1, ...) averaged in every pass; multiplies the time."),
            ],
            outputs=[
                output(PPDDepth, "ppd_depth", "Raw PPD depth (normalised log-depth, larger = farther) at the input "
                                              "size, for Render / Save / Point Cloud / Edge Metric nodes."),
                output(io.Image, "depth_image", "Depth as an image at the input size, near = white, normalised per "
                                                "image: wire it straight into a depth ControlNet."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, ppd_model, image, steps: int, seed: int, tile_width: int, tile_height: int, overlap: float,
                ensemble_size: int = 1) -> io.NodeOutput:
        if steps < 1 or ensemble_size < 1:
            raise InputError(f"steps and ensemble_size must be at least 1, got {steps} and {ensemble_size}.")
        model = loaded(ppd_model, "ppd_model", "Load PPD Model")
        pipe = model.engine
        x = image_to_bchw(image)
        b, _, h, w = x.shape
        tile_size = tiling.check_tiling((tile_height, tile_width), overlap)
        passes = tiling.pass_count(h, w, tile_size, overlap)
        px = pipe.dit.config.token_px
        sizes = [imaging.processing_size(h, w, pipe.area, px),
                 imaging.processing_size(min(h, tile_size[0]), min(w, tile_size[1]), pipe.area, px)]
        model.load(max(pipe.activation_bytes(*s) for s in sizes))      # one pass at a time: one pass's room
        show_text(cls, cost_note(h, w, passes, b, ensemble_size))
        total = b * passes * ensemble_size * len(sampling_timesteps(steps))
        with cancellable(pipe.dit, pipe.encoder):
            depth = ppd_steps.predict_depth_tiled(pipe, x, tile_size=tile_size, overlap=overlap, steps=steps,
                                                  seed=seed, ensemble_size=ensemble_size,
                                                  progress=progress(total, node_id(cls)))
        packet = {"depth": depth, "spread": None, "image": x, "input_size": (h, w), "kind": "ppd"}
        rgb, _ = imaging.render_depth(depth, "controlnet")
        return io.NodeOutput(packet, to_image(rgb))


def cost_note(height: int, width: int, passes: int, batch: int, ensemble_size: int) -> str:
    """What the node runs, e.g. "24 tiles, ~25x the time of one pass", sizes in W x H."""
    tiles = passes - 1 if passes > 1 else 1
    per_image = (f"{tiles} tiles, ~{passes}x the time of one pass" if passes > 1
                 else "the image fits one tile: one pass, as the Depth Sampler")
    return (f"PPD Tiled Depth: {width} x {height} (W x H), {per_image}"
            + (f", x{batch} images" if batch > 1 else "") + (f", ensemble of {ensemble_size}" if ensemble_size > 1
                                                              else "")
            + f"; ppd_depth and depth_image are {width} x {height}.")
