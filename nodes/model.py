"""Load PPD Model: DiT + semantic encoder from models/ppd, wrapped for ComfyUI's memory manager."""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths
import torch

from ..comfyui_ppd import catalogue, inventory, runtime
from ..comfyui_ppd.errors import CheckpointError
from ..comfyui_ppd.families.ppd import steps as ppd_steps
from ..comfyui_ppd.families.ppd.pipeline import PPDPipeline
from ..comfyui_ppd.family import SLOTS

log = logging.getLogger("comfyui_ppd")
FOLDER = "ppd"
EXTENSIONS = {".pth", ".pt", ".safetensors"}
MISSING = " (missing: see README)"


def register_model_folder() -> list[str]:
    """models/ppd in folder_paths, restricted to .pth/.pt/.safetensors; paths already set (by
    extra_model_paths.yaml, applied before packs load) are kept. Creates models/ppd when it is absent."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    known = folder_paths.folder_names_and_paths.get(FOLDER)
    paths = list(known[0]) if known else []
    if default not in paths:
        paths.append(default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))
    try:
        os.makedirs(default, exist_ok=True)
    except OSError as e:  # a read-only install still starts; the Load node names the folder when run
        log.warning("PPD: could not create %s (%s)", default, e)
    return list(paths)


def model_choices(role: str) -> list[str]:
    """Files in models/ppd this node loads in that role (told from their keys; files that cannot be read
    cheaply are listed in both), or one "<official name> (missing: see README)" entry when there is none."""
    files = []
    for name in folder_paths.get_filename_list(FOLDER):
        path = folder_paths.get_full_path(FOLDER, name)
        kind = inventory.file_kind(path) if path else inventory.FileKind(None)
        if inventory.fits(kind, role):
            files.append(name)
    return files or [catalogue.DEFAULT_NAMES[role] + MISSING]


def target_folder() -> str:
    """Where missing files should go: models/ppd (the last registered path is the default one)."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths = folder_paths.get_folder_paths(FOLDER)
    return default if default in paths else paths[0]


def model_paths(names: dict[str, str]) -> dict[str, str]:
    """{role: file name} -> {role: full path}; every missing file is named at once with its URL and path."""
    found, missing = {}, []
    for role, name in names.items():
        name = name.removesuffix(MISSING)
        path = folder_paths.get_full_path(FOLDER, name)
        if path:
            found[role] = path
        else:
            missing.append((role, name))
    if missing:
        where = target_folder()
        lines = "\n".join(f"- {SLOTS[r]} {catalogue.how_to_get(n, where)}" for r, n in missing)
        listed = ", ".join(n for _, n in missing)
        raise CheckpointError(listed, f"model files in {where}", f"{len(missing)} missing",
                              f"Get every missing file:\n{lines}\nThen refresh the node (press R) and run again.")
    return found


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


class PPD_LoadModel:
    DESCRIPTION = ("Loads Pixel-Perfect Depth: the DiT and its semantic encoder (Depth Anything v2 for "
                   "ppd.pth, MoGe-2 for ppd_moge.pth) from models/ppd. ComfyUI moves it to the GPU for "
                   "work and offloads it when other models need the memory.")
    CATEGORY = "PPD"
    FUNCTION = "load"
    RETURN_TYPES = ("PPD_MODEL", "STRING")
    RETURN_NAMES = ("ppd_model", "info")
    OUTPUT_TOOLTIPS = ("The loaded PPD model, for the Semantic Encoder and Depth Sampler nodes.",
                       "What was loaded, in what precision, and any warning (a DiT / encoder mismatch, fp16 "
                       "on the CPU); also shown under the node. Wire into Preview Any to keep it visible.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit_name": (dits := model_choices("dit"), {
                "default": catalogue.DEFAULT_NAMES["dit"] if catalogue.DEFAULT_NAMES["dit"] in dits else dits[0],
                "tooltip": "The PPD DiT checkpoint in models/ppd: ppd.pth (Depth Anything v2 semantics) or "
                           "ppd_moge.pth (MoGe-2 semantics), or a .safetensors made by "
                           "`python -m comfyui_ppd convert`."}),
            "encoder_name": (encoders := model_choices("encoder"), {
                "default": (catalogue.DEFAULT_NAMES["encoder"] if catalogue.DEFAULT_NAMES["encoder"] in encoders
                            else encoders[0]),
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

    @classmethod
    def VALIDATE_INPUTS(cls, dit_name, encoder_name):
        """Skips ComfyUI's "value not in list" for the file names: a missing file reaches `load`, whose error
        names every missing file with its URL (and the Google Drive how-to) and the exact target path."""
        for name in (dit_name, encoder_name):
            if not isinstance(name, str) or not name:
                return f"expected a model file name, got {name!r}"
        return True

    def load(self, dit_name: str, encoder_name: str, precision: str, compile: bool = False):
        paths = model_paths({"dit": dit_name, "encoder": encoder_name})
        dit_name, encoder_name = (os.path.basename(paths[r]) for r in ("dit", "encoder"))
        device, offload = mm.get_torch_device(), mm.unet_offload_device()
        policy = runtime.precision(precision, device)
        with warnings.catch_warnings(record=True) as caught:     # the engine's pairing guess goes to the UI
            warnings.simplefilter("always")
            pipeline = ppd_steps.load_pipeline(paths["dit"], paths["encoder"], policy, device=offload, compile=compile)
        dit, encoder, dtype = pipeline.dit, pipeline.encoder, pipeline.weight_dtype
        bundle = PPDModelBundle(dit, encoder)
        patcher = comfy.model_patcher.ModelPatcher(bundle, load_device=device, offload_device=offload,
                                                   size=mm.module_size(bundle))
        notes = [f"precision: {precision} is not supported well on the {device.type.upper()}; using fp32 instead."
                 ] if precision in runtime.DTYPES and runtime.DTYPES[precision] != policy.weights else []
        pairing = inventory.pairing_note(inventory.file_kind(paths["dit"]), inventory.file_kind(paths["encoder"]),
                                         dit_name, encoder_name)
        notes += [pairing] if pairing else [str(w.message) for w in caught]
        for note in notes:
            log.warning("PPD: %s", note)
        info = "\n".join([f"{dit_name} (DiT, {dit.config.depth} blocks) + {encoder_name} ({encoder.kind} encoder), "
                           f"weights {str(dtype).removeprefix('torch.')}, runs on {device}"]
                          + [f"WARNING {n}" for n in notes])
        return {"ui": {"text": [info]}, "result": (PPDModel(pipeline, patcher, dit_name, encoder_name, dtype), info)}


class PPDModelBundle(torch.nn.Module):
    """The DiT and its semantic encoder as one module for ComfyUI's ModelPatcher (named in its log lines)."""

    def __init__(self, dit: torch.nn.Module, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.dit, self.encoder = dit, encoder
