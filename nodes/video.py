"""Video depth with PPVD: Load PPD Video Model (ppvd.pth + pi3.safetensors), PPD Video Depth, PPD Flicker Metric.

PPD Video Depth gives the same PPD_DEPTH packet as the image sampler (see nodes/depth.py), with the depth at the
frames' own size (the video pipeline resizes back itself), so Render, Save, Point Cloud and Edge Metric work on it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import torch

from ..comfyui_ppd import catalogue, imaging, runtime
from ..comfyui_ppd.errors import InputError
from ..comfyui_ppd.families.ppvd import Pi3Semantics, VideoDepthPipeline, VideoDiT, window_plan
from ..comfyui_ppd.families.ppvd import steps as video_steps
from ..comfyui_ppd.sampling import sampling_timesteps
from .depth import image_to_bchw, progress
from .model import model_choices, model_paths

log = logging.getLogger("comfyui_ppd")


class PPVDModel(torch.nn.Module):
    """The video DiT and Pi3 as one module for ComfyUI's memory manager (its log names this class)."""

    def __init__(self, dit: VideoDiT, encoder: Pi3Semantics) -> None:
        super().__init__()
        self.dit, self.encoder = dit, encoder


@dataclass
class PPDVideoModel:
    """The PPD_VIDEO_MODEL socket value: the pipeline (at 512x512) and the ModelPatcher that moves it."""

    pipeline: VideoDepthPipeline
    patcher: object
    dit_name: str
    encoder_name: str

    def at_size(self, height: int, width: int) -> VideoDepthPipeline:
        """The same weights at another processing size (height, width)."""
        return self.pipeline.at_size((height, width))

    def load(self, pipe: VideoDepthPipeline) -> None:
        """Ask ComfyUI for room (weights + one window's activations) and move the weights to the GPU."""
        mm.load_models_gpu([self.patcher], memory_required=pipe.activation_bytes(), force_full_load=True)


def frames_to_bchw(image) -> torch.Tensor:
    """IMAGE (N,H,W,C), or a list of IMAGE batches of one size, -> (N,3,H,W); clear errors otherwise."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise InputError("the video has no frames; connect a batch of at least one frame.")
        sizes = sorted({tuple(i.shape[1:3]) for i in image})
        if len(sizes) > 1:
            raise InputError(f"all frames must have one size, found {len(sizes)}: {sizes[:4]}; resize them to "
                             "a common size first (e.g. core Upscale Image).")
        image = torch.cat(list(image))
    if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] == 0:
        raise InputError("the video has no frames (an empty IMAGE batch); check the Load Video / Get Video "
                         "Components nodes.")
    return image_to_bchw(image)


class PPD_LoadVideoModel:
    DESCRIPTION = ("Loads Pixel-Perfect Video Depth (PPVD): the video DiT ppvd.pth and its semantic encoder "
                   "pi3.safetensors from models/ppd. ComfyUI moves it to the GPU for work and offloads it when "
                   "other models need the memory.")
    CATEGORY = "PPD"
    FUNCTION = "load"
    RETURN_TYPES = ("PPD_VIDEO_MODEL",)
    RETURN_NAMES = ("video_model",)
    OUTPUT_TOOLTIPS = ("The loaded video model, for PPD Video Depth.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit_name": (dits := model_choices("video_dit"), {
                "default": catalogue.DEFAULT_NAMES["video_dit"] if catalogue.DEFAULT_NAMES["video_dit"] in dits
                else dits[0],
                "tooltip": "The PPVD video DiT in models/ppd: ppvd.pth (Google Drive only; see the pack's README). "
                           "The image DiT ppd.pth belongs to Load PPD Model."}),
            "encoder_name": (encoders := model_choices("video_encoder"), {
                "default": (catalogue.DEFAULT_NAMES["video_encoder"] if catalogue.DEFAULT_NAMES["video_encoder"]
                            in encoders else encoders[0]),
                "tooltip": "Pi3, the video model's semantic encoder: pi3.safetensors (Hugging Face yyfz233/Pi3, "
                           "model.safetensors). Only its encoder and decoder are used."}),
            "precision": (list(runtime.CHOICES), {
                "default": "auto",
                "tooltip": "auto: the official numerics, fp32 weights with bf16 autocast on CUDA (fp16 where the "
                           "GPU has no bf16), fp32 elsewhere. fp16/bf16: half-precision weights computed in that "
                           "dtype. fp32: no autocast. On the CPU everything runs in fp32."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, dit_name, encoder_name):
        """Skips "value not in list" for the file names, so a missing ppvd.pth reaches `load`, whose error names
        every missing file with its URL or the Google Drive how-to and the exact target path."""
        for name in (dit_name, encoder_name):
            if not isinstance(name, str) or not name:
                return f"expected a model file name, got {name!r}"
        return True

    def load(self, dit_name: str, encoder_name: str, precision: str):
        device, offload = mm.get_torch_device(), mm.unet_offload_device()
        paths = model_paths({"video_dit": dit_name, "video_encoder": encoder_name})
        pipeline = video_steps.load_video_pipeline(paths["video_dit"], paths["video_encoder"],
                                             runtime.precision(precision, device), device=offload)
        container = PPVDModel(pipeline.dit, pipeline.encoder)
        patcher = comfy.model_patcher.ModelPatcher(container, load_device=device, offload_device=offload,
                                                   size=mm.module_size(container))
        return (PPDVideoModel(pipeline, patcher, dit_name, encoder_name),)


SIZE = {"min": 32, "max": 2048, "step": 32}


class PPD_VideoDepth:
    DESCRIPTION = ("Depth for a video (a batch of frames, e.g. from core Load Video -> Get Video Components) with "
                   "PPVD: windows of 16 frames with temporal attention and keyframes, each window's scale and "
                   "shift aligned to the previous ones, so the depth does not flicker. Any resolution and length; "
                   "the same outputs as PPD Depth Sampler plus a flicker readout.")
    CATEGORY = "PPD"
    FUNCTION = "predict"
    RETURN_TYPES = ("PPD_DEPTH", "IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("ppd_depth", "depth_image", "summary", "flicker_per_frame")
    OUTPUT_TOOLTIPS = (
        "Raw depth (normalised log-depth, larger = farther) at the frames' size, for Render / Save / Point "
        "Cloud / Edge Metric nodes.",
        "Depth frames at the input size, near = white, normalised over the whole clip (no flicker from "
        "normalisation): wire it into a depth ControlNet or Create Video.",
        "One line for Preview Any: frames, windows, flicker figures (and a run-time warning for long clips "
        "on a CPU).",
        "Per-frame flicker values as tab-separated text: scale and shift relative to frame 0, change and "
        "residual to the previous frame (every pixel counted as static).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video_model": ("PPD_VIDEO_MODEL", {"tooltip": "The model from Load PPD Video Model."}),
            "frames": ("IMAGE", {"tooltip": "The video frames as an IMAGE batch (any size and count), e.g. the "
                                            "images output of core Get Video Components."}),
            "steps": ("INT", {"default": 4, "min": 1, "max": 50,
                              "tooltip": "Sampling steps per window. 4 is the official default."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Noise seed; every window starts from the same noise, as in the official "
                                        "pipeline. The same seed gives the same depth on every device."}),
            "process_width": ("INT", {"default": 512, **SIZE,
                                      "tooltip": "Width the networks work at (multiple of 32). PPVD was trained "
                                                 "at 512x512; the depth is resized back to the frame size."}),
            "process_height": ("INT", {"default": 512, **SIZE,
                                       "tooltip": "Height the networks work at (multiple of 32); 512 is the "
                                                  "trained size."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def predict(self, video_model, frames, steps: int, seed: int, process_width: int = 512,
                process_height: int = 512, unique_id=None):
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}.")
        x = frames_to_bchw(frames)
        n, _, h, w = x.shape
        pipe = video_model.at_size(process_height, process_width)
        notes = []
        warning = video_steps.long_video_warning(pipe, n, steps)
        if warning:
            log.warning(warning)
            notes.append(warning)
        video_model.load(pipe)
        total = len(window_plan(n)) * len(sampling_timesteps(steps))
        result = video_steps.predict_video(pipe, x, steps=steps, seed=seed, progress=progress(total, unique_id))
        depth = result.depth
        packet = {"depth": depth, "spread": None, "image": x.cpu(), "input_size": (h, w), "kind": "ppd"}
        rgb, _ = imaging.render_depth(depth, "controlnet", per_image=False)
        summary, table = video_steps.flicker_text(video_steps.flicker_report(depth))
        text = "\n".join([*notes, f"{n} frames {w}x{h}, {len(result.windows)} window(s) at "
                          f"{process_width}x{process_height}, {steps} steps; {summary}"])
        return {"ui": {"text": [text]},
                "result": (packet, rgb.movedim(1, -1).to(mm.intermediate_device()), text, table)}


class PPD_FlickerMetric:
    DESCRIPTION = ("Measures how much a depth video flickers: for each pair of neighbouring frames the scale and "
                   "shift that best align them, and the frame-to-frame change before and after that fit. Exact "
                   "depth scores 0. Every pixel counts as static, so use it on a still (or slow) camera, or read "
                   "it as a comparison between models on the same clip.")
    CATEGORY = "PPD"
    FUNCTION = "measure"
    RETURN_TYPES = ("STRING", "STRING", "FLOAT", "FLOAT")
    RETURN_NAMES = ("summary", "per_frame", "change_percent", "scale_jump_percent")
    OUTPUT_TOOLTIPS = ("One line for Preview Any.",
                       "Per-frame values, tab-separated: log-scale and shift relative to frame 0, change and "
                       "residual to the previous frame.",
                       "Mean frame-to-frame change in % of the depth range (2-98 %).",
                       "RMS of the neighbour-to-neighbour scale jumps in %.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ppd_depth": ("PPD_DEPTH", {"tooltip": "Depth of a frame batch: from PPD Video Depth, or from PPD "
                                                   "Depth Sampler run on the frames (to compare the image model)."}),
        }}

    def measure(self, ppd_depth):
        if not isinstance(ppd_depth, dict) or "depth" not in ppd_depth:
            raise InputError("expected a PPD_DEPTH packet from PPD Video Depth or PPD Depth Sampler.")
        report = video_steps.flicker_report(ppd_depth["depth"])
        summary, table = video_steps.flicker_text(report)
        nan = float("nan")
        change = report.percent_of_range(report.mean_change) if report else nan
        jump = 100 * report.scale_jump if report else nan
        return {"ui": {"text": [summary]}, "result": (summary, table, change, jump)}
