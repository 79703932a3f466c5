"""PPD Depth Render (IMAGE + MASK for graphs) and Save PPD Depth (16-bit PNG, float NPY / EXR, preview)."""
from __future__ import annotations

import os

import comfy.model_management as mm
import folder_paths
from comfy_api.latest import io

from ..comfyui_ppd import imaging, outputs
from ..comfyui_ppd.errors import InputError
from .common import (
    PPDDepth,
    check_depth,
    megabytes,
    output,
    preview_images,
    preview_size,
    schema,
    show_text,
    to_image,
    wxh,
)

SIZES = ["input", "processing"]
NORMALIZATION = ["per image", "whole batch"]
PNG16_COMPRESSION = 1   # zlib level for the 16-bit PNG: ~2x faster than PIL's 6 for a few % more bytes
DEPTH_TOOLTIP = "Depth from PPD Depth Sampler or PPD Video Depth."


def target_size(ppd_depth: dict, output_size: str) -> tuple[int, int]:
    return tuple(ppd_depth["input_size"]) if output_size == "input" else tuple(ppd_depth["depth"].shape[-2:])


class PPD_DepthRender(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_DepthRender", "PPD Depth Render",
            "Turns PPD depth into an image: 'controlnet' (near = white), 'depth' (far = white) or a colour map, "
            "normalised per image or over the whole batch (no flicker across video frames). Also outputs the "
            "normalised depth as a MASK for masking graphs.",
            ["depth", "depth map", "colormap", "depth to image", "depth mask", "controlnet depth", "video depth",
             "ppd"],
            inputs=[
                PPDDepth.Input("ppd_depth", tooltip=DEPTH_TOOLTIP),
                io.Combo.Input("mode", options=list(imaging.RENDER_MODES), default="colormap",
                               tooltip="controlnet: near = white (what depth ControlNets expect); depth: far = "
                                       "white; colormap: a colour map (far = the map's end)."),
                io.Combo.Input("colormap", options=list(imaging.COLORMAPS), default="spectral",
                               tooltip="Colour map for mode 'colormap'. spectral is the official PPD look (near "
                                       "red, far violet)."),
                io.Combo.Input("normalization", options=NORMALIZATION, default="per image",
                               tooltip="per image: each image uses its full range. whole batch: one range for all "
                                       "frames, so video does not flicker."),
                io.Combo.Input("output_size", options=SIZES, default="input",
                               tooltip="input: resized back to the original image size (bilinear). processing: the "
                                       "size PPD worked at (no interpolation)."),
            ],
            outputs=[
                output(io.Image, "image", "The rendered depth image (3 channels)."),
                output(io.Mask, "mask", "The normalised depth in [0,1] with the same orientation as the "
                                        "image (controlnet: near = 1; depth and colormap: far = 1)."),
            ],
        )

    @classmethod
    def execute(cls, ppd_depth, mode: str, colormap: str, normalization: str, output_size: str) -> io.NodeOutput:
        check_depth(ppd_depth)
        rgb, grey = imaging.render_depth(ppd_depth["depth"], mode, colormap, normalization == "per image",
                                         target_size(ppd_depth, output_size))
        return io.NodeOutput(to_image(rgb), grey[:, 0].to(mm.intermediate_device()))


class PPD_SaveDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_SaveDepth", "Save PPD Depth",
            "Saves PPD depth to the output folder with ComfyUI's numbered names (never overwrites): a 16-bit PNG "
            "at output_size, and the raw float depth (.npy, OpenEXR written by the pack itself) at PPD's "
            "processing size unless raw_size says input (the size is in the raw file names). Shows a preview of "
            "the PNG as saved and lists the files.",
            ["save depth", "depth png", "16-bit depth", "exr", "npy", "export depth", "ppd"],
            inputs=[
                PPDDepth.Input("ppd_depth", tooltip=DEPTH_TOOLTIP),
                io.String.Input("filename_prefix", default="ppd/depth",
                                tooltip="File name prefix; may include sub-folders of the output folder and "
                                        "ComfyUI tokens like %date:yyyy-MM-dd%."),
                io.Boolean.Input("png16", default=True, tooltip="Write a 16-bit greyscale PNG (normalised per "
                                                               "image)."),
                io.Combo.Input("png_orientation", options=["near = white", "far = white"], default="near = white",
                               tooltip="For the PNG: near = white is what depth ControlNets use; far = white is a "
                                       "z-depth look."),
                io.Boolean.Input("npy", default=True, tooltip="Write the raw float32 PPD depth (normalised "
                                                             "log-depth, larger = farther) as .npy, at raw_size."),
                io.Boolean.Input("exr", default=False, tooltip="Write the raw float32 PPD depth as an OpenEXR file "
                                                              "(one channel 'Y'; written by the pack, no library "
                                                              "needed), at raw_size."),
                io.Combo.Input("output_size", options=SIZES, default="input",
                               tooltip="Size of the 16-bit PNG. input: the original image size (bilinear). "
                                       "processing: PPD's own size, no interpolation."),
                io.Combo.Input("raw_size", options=SIZES, default="processing", optional=True,
                               tooltip="Size of the raw .npy / .exr: processing (default) keeps PPD's own values, "
                                       "no interpolation, small files; input upsamples (bilinear) to the original "
                                       "size. The size (W x H) is in the raw file names."),
            ],
            outputs=[],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, ppd_depth, filename_prefix: str, png16: bool, png_orientation: str, npy: bool, exr: bool,
                output_size: str, raw_size: str = "processing") -> io.NodeOutput:
        check_depth(ppd_depth)
        if not (png16 or npy or exr):
            raise InputError("nothing to save: switch on at least one of png16, npy, exr.")
        size, raw = target_size(ppd_depth, output_size), target_size(ppd_depth, raw_size)
        depth = ppd_depth["depth"]
        near_white = png_orientation == "near = white"
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), size[1], size[0])
        lines = [f"PPD processed {wxh(depth.shape[-2:])} (W x H) from a {wxh(ppd_depth['input_size'])} input."]
        for i in range(depth.shape[0]):
            mm.throw_exception_if_processing_interrupted()      # stop between images, never mid-file
            base = os.path.join(folder, f"{name}_{counter + i:05}_")
            raw_tag = f"{raw[1]}x{raw[0]}"
            if png16:
                path = outputs.save_depth(depth[i], {"png16": base + ".png"}, size=size, near_white=near_white,
                                        png_compress_level=PNG16_COMPRESSION)["png16"]
                lines.append(f"{os.path.basename(path)}: {wxh(size)}, 16-bit grey, {megabytes(str(path))}")
            raw_files = {kind: f"{base}{raw_tag}.{kind}" for kind, on in (("npy", npy), ("exr", exr)) if on}
            if raw_files:
                for path in outputs.save_depth(depth[i], raw_files, size=raw).values():
                    lines.append(f"{os.path.basename(path)}: {wxh(raw)} raw float32 ({raw_size} size), "
                                 f"{megabytes(str(path))}")
        show_text(cls, "\n".join(lines))
        return io.NodeOutput(ui={"images": preview(depth, size, near_white)})


def preview(depth, size: tuple[int, int], near_white: bool = True) -> list[dict]:
    """The grey PNG look as saved (near = white unless asked) at the PNG's size `size` (H, W), capped at the
    preview side; see `preview_images`."""
    _, grey = imaging.render_depth(depth, "controlnet" if near_white else "depth", size=preview_size(*size))
    return preview_images(grey.expand(-1, 3, -1, -1).movedim(1, -1), "ppd_depth_preview")
