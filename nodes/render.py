"""PPD Depth Render (IMAGE + MASK for graphs) and Save PPD Depth (16-bit PNG, float NPY / EXR, preview)."""
from __future__ import annotations

import os
import uuid

import comfy.model_management as mm
import folder_paths

from ..comfyui_ppd import imaging, tasks
from ..comfyui_ppd.errors import InputError

SIZES = ["input", "processing"]
NORMALISATION = ["per image", "whole batch"]


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
            "normalization": (NORMALISATION, {
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
    DESCRIPTION = ("Saves PPD depth to the output folder with ComfyUI's numbered names (never overwrites): "
                   "16-bit PNG, the raw float depth as .npy, and OpenEXR (float32, written by the pack itself, "
                   "no extra library needed). Shows a preview.")
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
                                                            "log-depth, larger = farther) as .npy."}),
            "exr": ("BOOLEAN", {"default": False, "tooltip": "Write the raw float32 PPD depth as an OpenEXR "
                                                             "file (one channel 'Y'; written by the pack, no "
                                                             "library needed)."}),
            "output_size": (SIZES, {"default": "input",
                                    "tooltip": "input: the original image size (bilinear). processing: PPD's own "
                                               "size, no interpolation (best for geometry)."}),
        }}

    def save(self, ppd_depth, filename_prefix: str, png16: bool, png_orientation: str, npy: bool, exr: bool,
             output_size: str):
        check_depth(ppd_depth)
        if not (png16 or npy or exr):
            raise InputError("nothing to save: switch on at least one of png16, npy, exr.")
        size = target_size(ppd_depth, output_size)
        depth = ppd_depth["depth"]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), size[1], size[0])
        for i in range(depth.shape[0]):
            mm.throw_exception_if_processing_interrupted()      # stop between images, never mid-file
            base = os.path.join(folder, f"{name}_{counter + i:05}_")
            files = {kind: base + ext for kind, ext, on in (("png16", ".png", png16), ("npy", ".npy", npy),
                                                            ("exr", ".exr", exr)) if on}
            tasks.save_depth(depth[i], files, size=size, near_white=png_orientation == "near = white")
        return {"ui": {"images": self.preview(imaging.resize_depth(depth, size))}}

    @staticmethod
    def preview(depth) -> list[dict]:
        """Colour-mapped 8-bit previews in the temp folder, shown under the node like PreviewImage."""
        temp = folder_paths.get_temp_directory()
        prefix = "ppd_preview_" + uuid.uuid4().hex[:8]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            prefix, temp, depth.shape[-1], depth.shape[-2])
        out = []
        for i in range(depth.shape[0]):
            file = f"{name}_{counter + i:05}_.png"
            tasks.save_depth(depth[i], {"color": os.path.join(folder, file)})
            out.append({"filename": file, "subfolder": subfolder, "type": "temp"})
        return out
