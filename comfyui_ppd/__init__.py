"""Pixel-Perfect Depth engine: checkpoint-exact PPD and PPVD in plain PyTorch, usable without ComfyUI.

    dit = load_dit("ppd.pth"); enc = load_semantic_encoder("depth_anything_v2_vitl.pth")
    depth = PPDPipeline(dit, enc)(image)          # (B,1,h,w) normalised log-depth, larger = farther

    dit = load_dit("ppvd.pth"); enc = load_semantic_encoder("pi3.safetensors")
    depth = VideoDepthPipeline(dit, enc)(frames)  # frames (N,3,H,W) in [0,1] -> (N,1,H,W), aligned over the clip

    depth = tiled_depth(image, predict, tile_size=(768, 1024))  # (3,H,W) -> (H,W): whole-image layout + tile detail
"""
from __future__ import annotations

from .errors import CheckpointError, InputError, PPDError
from .families.moge2 import align_to_metric
from .families.ppd.pipeline import DepthResult, PPDPipeline, Prepared
from .families.ppvd import VideoDepthPipeline
from .loaders import load_dit, load_geometry_model, load_semantic_encoder
from .sampling import sampling_timesteps
from .tiling import tiled_depth

__all__ = ["load_dit", "load_semantic_encoder", "sampling_timesteps", "PPDPipeline", "Prepared",
           "DepthResult", "VideoDepthPipeline", "PPDError", "CheckpointError", "InputError", "load_geometry_model",
           "align_to_metric", "tiled_depth"]
__version__ = "0.1.0"
