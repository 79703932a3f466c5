"""Load PPD Model: DiT + semantic encoder from models/ppd, wrapped for ComfyUI's memory manager."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

import comfyui_ppd
from comfyui_ppd import download
from comfyui_ppd.errors import CheckpointError
from comfyui_ppd.pipeline import PPDPipeline

from . import comfy

log = logging.getLogger("comfyui_ppd")
FOLDER = "ppd"
EXTENSIONS = {".pth", ".pt", ".safetensors"}
PRECISIONS = ["auto", "fp32", "fp16", "bf16"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def register_model_folder() -> None:
    """models/ppd in folder_paths (extra_model_paths.yaml entries are kept), listing .pth/.pt/.safetensors."""
    comfy.register_model_folder(FOLDER, EXTENSIONS)


def model_choices(role: str) -> list[str]:
    """Files in models/ppd, plus the official default name so a fresh install still validates."""
    files = comfy.folder_paths.get_filename_list(FOLDER)
    default = download.DEFAULT_NAMES[role]
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
        comfy.mm.load_models_gpu([self.patcher], memory_required=need, force_full_load=True)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """auto: bf16 where the GPU supports it, else fp16 on CUDA, fp32 on CPU/MPS; half on CPU -> fp32."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if comfy.mm.should_use_bf16(device) else torch.float16
        return torch.float32
    dtype = DTYPES[precision]
    if device.type == "cpu" and dtype != torch.float32:
        log.warning("PPD: %s is not supported well on the CPU; using fp32 instead.", precision)
        return torch.float32
    return dtype


def model_path(name: str, role: str) -> str:
    path = comfy.folder_paths.get_full_path(FOLDER, name)
    if path:
        return path
    entry = download.OFFICIAL_FILES.get(name)
    where = comfy.folder_paths.get_folder_paths(FOLDER)[0]
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
                "default": download.DEFAULT_NAMES["dit"],
                "tooltip": "The PPD DiT checkpoint in models/ppd: ppd.pth (Depth Anything v2 semantics) or "
                           "ppd_moge.pth (MoGe-2 semantics), or a .safetensors made by `python -m comfyui_ppd convert`."}),
            "encoder_name": (model_choices("encoder"), {
                "default": download.DEFAULT_NAMES["encoder"],
                "tooltip": "The semantic encoder that matches the DiT: depth_anything_v2_vitl.pth for ppd.pth, "
                           "the MoGe-2 model.pt (moge2_vitl_normal.pt) for ppd_moge.pth."}),
            "precision": (PRECISIONS, {
                "default": "auto",
                "tooltip": "Weight precision. auto: bf16 on GPUs that support it, else fp16 on CUDA, fp32 on "
                           "CPU/Mac. Half precision halves the memory; fp16/bf16 on the CPU fall back to fp32."}),
        }, "optional": {
            "compile": ("BOOLEAN", {
                "default": False,
                "tooltip": "torch.compile the DiT blocks: the first run per image size is slow (compiling), "
                           "later runs may be faster on a GPU. Falls back to normal execution if it fails."}),
        }}

    def load(self, dit_name: str, encoder_name: str, precision: str, compile: bool = False):
        device, offload = comfy.mm.get_torch_device(), comfy.mm.unet_offload_device()
        dtype = resolve_precision(precision, device)
        dit = comfyui_ppd.load_dit(model_path(dit_name, "DiT"), device=offload, dtype=dtype)
        encoder = comfyui_ppd.load_semantic_encoder(model_path(encoder_name, "semantic encoder"),
                                                    device=offload, dtype=dtype)
        autocast = None if dtype == torch.float32 else dtype
        pipeline = PPDPipeline(dit, encoder, autocast=autocast, compile=compile)
        container = torch.nn.ModuleDict({"dit": dit, "encoder": encoder})
        patcher = comfy.ModelPatcher(container, load_device=device, offload_device=offload,
                                     size=comfy.mm.module_size(container))
        return (PPDModel(pipeline, patcher, dit_name, encoder_name, dtype),)
