"""PPD Depth Render (IMAGE + MASK for graphs) and Save PPD Depth (16-bit PNG, float NPY / EXR, preview)."""
from __future__ import annotations

import os
import uuid

import comfy.model_management as mm
import folder_paths
import numpy as np
import torch
from PIL import Image

from ..comfyui_ppd import imaging, outputs
from ..comfyui_ppd.errors import InputError

SIZES = ["input", "processing"]
NORMALIZATION = ["per image", "whole batch"]
PREVIEW_SIDE = 1024     # previews are for the eye: at most this long side, fast PNG compression
PNG16_COMPRESSION = 1   # zlib level for the 16-bit PNG: ~2x faster than PIL's 6 for a few % more bytes


def wxh(size) -> str:
    """(H, W) -> "W x H", the order ComfyUI shows sizes in."""
    return f"{int(size[1])} x {int(size[0])}"


def megabytes(path: str) -> str:
    """A file's size for the UI: "12.3 MB", or "45.6 kB" below 0.1 MB."""
    size = os.path.getsize(path)
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def preview_images(images: torch.Tensor, prefix: str = "ppd_preview") -> list[dict]:
    """(B,H,W,3) [0,1] -> 8-bit PNGs in the temp folder, at most PREVIEW_SIDE long, shown under the node."""
    temp = folder_paths.get_temp_directory()
    h, w = images.shape[1:3]
    scale = min(1.0, PREVIEW_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        f"{prefix}_{uuid.uuid4().hex[:8]}", temp, size[0], size[1])
    out = []
    for i, image in enumerate(images):
        pixels = (image.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        img = Image.fromarray(np.ascontiguousarray(pixels))
        if img.size != size:
            img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        file = f"{name}_{counter + i:05}_.png"
        img.save(os.path.join(folder, file), compress_level=1)
        out.append({"filename": file, "subfolder": subfolder, "type": "temp"})
    return out


def check_depth(ppd_depth) -> None:
    if not isinstance(ppd_depth, dict) or "depth" not in ppd_depth:
        raise InputError("expected a PPD_DEPTH packet from PPD Depth Sampler.")


def target_size(ppd_depth: dict, output_size: str) -> tuple[int, int]:
    return tuple(ppd_depth["input_size"]) if output_size == "input" else tuple(ppd_depth["depth"].shape[-2:])


class PPD_DepthRender:
    DESCRIPTION = ("Turns PPD depth into an image: 'controlnet' (near = white), 'depth' (far = white) or a "
                   "colour map, normalised per image or over the whole batch (no flicker across video frames). "
                   "Also outputs the normalised depth as a MASK for masking graphs.")
    CATEGORY = "PPD"
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The rendered depth image (3 channels).",
                       "The normalised depth in [0,1] with the same orientation as the image (controlnet: "
                       "near = 1; depth and colormap: far = 1).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ppd_depth": ("PPD_DEPTH", {"tooltip": "Depth from PPD Depth Sampler."}),
            "mode": (list(imaging.RENDER_MODES), {
                "default": "colormap",
                "tooltip": "controlnet: near = white (what depth ControlNets expect); depth: far = white; "
                           "colormap: a colour map (far = the map's end)."}),
            "colormap": (list(imaging.COLORMAPS), {
                "default": "spectral",
                "tooltip": "Colour map for mode 'colormap'. spectral is the official PPD look "
                           "(near red, far violet)."}),
            "normalization": (NORMALIZATION, {
                "default": "per image",
                "tooltip": "per image: each image uses its full range. whole batch: one range for all frames, "
                           "so video does not flicker."}),
            "output_size": (SIZES, {
                "default": "input",
                "tooltip": "input: resized back to the original image size (bilinear). processing: the size PPD "
                           "worked at (no interpolation)."}),
        }}

    def render(self, ppd_depth, mode: str, colormap: str, normalization: str, output_size: str):
        check_depth(ppd_depth)
        rgb, grey = imaging.render_depth(ppd_depth["depth"], mode, colormap, normalization == "per image",
                                         target_size(ppd_depth, output_size))
        device = mm.intermediate_device()
        return (rgb.movedim(1, -1).to(device), grey[:, 0].to(device))


class PPD_SaveDepth:
    DESCRIPTION = ("Saves PPD depth to the output folder with ComfyUI's numbered names (never overwrites): a "
                   "16-bit PNG at output_size, and the raw float depth (.npy, OpenEXR written by the pack itself) "
                   "at PPD's processing size unless raw_size says input (the size is in the raw file names). "
                   "Shows a small preview of the PNG as saved and lists the files.")
    CATEGORY = "PPD"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ppd_depth": ("PPD_DEPTH", {"tooltip": "Depth from PPD Depth Sampler."}),
            "filename_prefix": ("STRING", {"default": "ppd/depth",
                                           "tooltip": "File name prefix; may include sub-folders of the output "
                                                      "folder and ComfyUI tokens like %date:yyyy-MM-dd%."}),
            "png16": ("BOOLEAN", {"default": True, "tooltip": "Write a 16-bit greyscale PNG (normalised per image)."}),
            "png_orientation": (["near = white", "far = white"], {
                "default": "near = white",
                "tooltip": "For the PNG: near = white is what depth ControlNets use; far = white is a z-depth look."}),
            "npy": ("BOOLEAN", {"default": True, "tooltip": "Write the raw float32 PPD depth (normalised "
                                                            "log-depth, larger = farther) as .npy, at raw_size."}),
            "exr": ("BOOLEAN", {"default": False, "tooltip": "Write the raw float32 PPD depth as an OpenEXR "
                                                             "file (one channel 'Y'; written by the pack, no "
                                                             "library needed), at raw_size."}),
            "output_size": (SIZES, {"default": "input",
                                    "tooltip": "Size of the 16-bit PNG. input: the original image size (bilinear). "
                                               "processing: PPD's own size, no interpolation."}),
        }, "optional": {
            "raw_size": (SIZES, {"default": "processing",
                                 "tooltip": "Size of the raw .npy / .exr: processing (default) keeps PPD's own "
                                            "values, no interpolation, small files; input upsamples (bilinear) to "
                                            "the original size. The size (W x H) is in the raw file names."}),
        }}

    def save(self, ppd_depth, filename_prefix: str, png16: bool, png_orientation: str, npy: bool, exr: bool,
             output_size: str, raw_size: str = "processing"):
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
        text = "\n".join(lines)
        return {"ui": {"images": self.preview(depth, near_white), "text": [text]}}

    @staticmethod
    def preview(depth, near_white: bool = True) -> list[dict]:
        """The grey PNG look as saved (near = white unless asked), rendered small; see `preview_images`."""
        h, w = depth.shape[-2:]
        scale = min(1.0, PREVIEW_SIDE / max(h, w))
        _, grey = imaging.render_depth(depth, "controlnet" if near_white else "depth",
                                       size=(max(1, round(h * scale)), max(1, round(w * scale))))
        return preview_images(grey.expand(-1, 3, -1, -1).movedim(1, -1), "ppd_depth_preview")
