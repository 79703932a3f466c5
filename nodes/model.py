"""Load PPD Model: DiT + semantic encoder from models/ppd, wrapped for ComfyUI's memory manager."""
from __future__ import annotations

import os
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths
import torch

from ..comfyui_ppd import catalogue, runtime, tasks
from ..comfyui_ppd.errors import CheckpointError
from ..comfyui_ppd.families.ppd.pipeline import PPDPipeline

FOLDER = "ppd"
EXTENSIONS = {".pth", ".pt", ".safetensors"}


def register_model_folder() -> list[str]:
    """models/ppd in folder_paths, restricted to .pth/.pt/.safetensors; paths already set (by
    extra_model_paths.yaml, applied before packs load) are kept."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    known = folder_paths.folder_names_and_paths.get(FOLDER)
    paths = list(known[0]) if known else []
    if default not in paths:
        paths.append(default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))
    return list(paths)


def model_choices(role: str) -> list[str]:
    """Files in models/ppd, plus the official default name so a fresh install still validates."""
    files = folder_paths.get_filename_list(FOLDER)
    default = catalogue.DEFAULT_NAMES[role]
    return files if default in files else [default, *files]


@dataclass
class PPDModel:
    """The PPD_MODEL socket value: the pipeline and the ModelPatcher that moves it between devices."""

    pipeline: PPDPipeline
    patcher: object
    dit_name: str
    encoder_name: str
    dtype: torch.dtype

    def load(self, height: int, width: int, batch: int = 1) -> None:
        """Ask ComfyUI for room (weights + an activation estimate) and move the weights to the GPU."""
        need = self.pipeline.activation_bytes(height, width) * batch
        mm.load_models_gpu([self.patcher], memory_required=need, force_full_load=True)


def model_path(name: str, role: str) -> str:
    path = folder_paths.get_full_path(FOLDER, name)
    if path:
        return path
    entry = catalogue.OFFICIAL_FILES.get(name)
    where = folder_paths.get_folder_paths(FOLDER)[0]
    source = (f"Download it from {entry.url}" if entry and entry.url else
              entry.note if entry else "Download the official files (see the pack's README)")
    raise CheckpointError(name, f"a {role} file in {where}", "no such file",
                          f"{source} and put it in {where}, then refresh the node (press R).")


class PPD_LoadModel:
    DESCRIPTION = ("Loads Pixel-Perfect Depth: the DiT and its semantic encoder (Depth Anything v2 for "
                   "ppd.pth, MoGe-2 for ppd_moge.pth) from models/ppd. ComfyUI moves it to the GPU for "
                   "work and offloads it when other models need the memory.")
    CATEGORY = "PPD"
    FUNCTION = "load"
    RETURN_TYPES = ("PPD_MODEL",)
    RETURN_NAMES = ("ppd_model",)
    OUTPUT_TOOLTIPS = ("The loaded PPD model, for the Semantic Encoder and Depth Sampler nodes.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit_name": (model_choices("dit"), {
                "default": catalogue.DEFAULT_NAMES["dit"],
                "tooltip": "The PPD DiT checkpoint in models/ppd: ppd.pth (Depth Anything v2 semantics) or "
                           "ppd_moge.pth (MoGe-2 semantics), or a .safetensors made by "
                           "`python -m comfyui_ppd convert`."}),
            "encoder_name": (model_choices("encoder"), {
                "default": catalogue.DEFAULT_NAMES["encoder"],
                "tooltip": "The semantic encoder that matches the DiT: depth_anything_v2_vitl.pth for ppd.pth, "
                           "the MoGe-2 model.pt (moge2_vitl_normal.pt) for ppd_moge.pth."}),
            "precision": (list(runtime.CHOICES), {
                "default": "auto",
                "tooltip": "auto: the official numerics, fp32 weights with bf16 autocast on CUDA (fp16 where the "
                           "GPU has no bf16), fp32 elsewhere. fp16/bf16: half-precision weights (half the memory) "
                           "computed in that dtype. fp32: no autocast. The CLI uses the same rule; fp16/bf16 on "
                           "the CPU fall back to fp32."}),
        }, "optional": {
            "compile": ("BOOLEAN", {
                "default": False,
                "tooltip": "torch.compile the DiT blocks: the first run per image size is slow (compiling), "
                           "later runs may be faster on a GPU. Falls back to normal execution if it fails."}),
        }}

    def load(self, dit_name: str, encoder_name: str, precision: str, compile: bool = False):
        device, offload = mm.get_torch_device(), mm.unet_offload_device()
        pipeline = tasks.load_pipeline(model_path(dit_name, "DiT"), model_path(encoder_name, "semantic encoder"),
                                       runtime.precision(precision, device), device=offload, compile=compile)
        dit, encoder, dtype = pipeline.dit, pipeline.encoder, pipeline.weight_dtype
        container = torch.nn.ModuleDict({"dit": dit, "encoder": encoder})
        patcher = comfy.model_patcher.ModelPatcher(container, load_device=device, offload_device=offload,
                                     size=mm.module_size(container))
        return (PPDModel(pipeline, patcher, dit_name, encoder_name, dtype),)
