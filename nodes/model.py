"""Load PPD Model: DiT + semantic encoder from models/ppd, wrapped for ComfyUI's memory manager."""
from __future__ import annotations

import os
import warnings

import comfy.model_management as mm
from comfy_api.latest import io

from ..comfyui_ppd import inventory, runtime
from ..comfyui_ppd.families.ppd import steps as ppd_steps
from .common import (
    LoadedModel,
    ModelBundle,
    PPDModel,
    log,
    model_input,
    model_paths,
    output,
    patcher,
    schema,
    show_text,
    validate_file_names,
)

PRECISION_TOOLTIP = ("auto: the official numerics, fp32 weights with bf16 autocast on CUDA (fp16 where the GPU has "
                     "no bf16), fp32 elsewhere. fp16/bf16: half-precision weights (half the memory) computed in that "
                     "dtype. fp32: no autocast. The CLI uses the same rule; fp16/bf16 on the CPU fall back to fp32.")


def precision_input() -> io.Combo.Input:
    return io.Combo.Input("precision", options=list(runtime.CHOICES), default="auto", tooltip=PRECISION_TOOLTIP)


class PPD_LoadModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_LoadModel", "Load PPD Model",
            "Loads Pixel-Perfect Depth: the DiT and its semantic encoder (Depth Anything v2 for ppd.pth, MoGe-2 "
            "for ppd_moge.pth) from models/ppd. ComfyUI moves it to the GPU for work and offloads it when other "
            "models need the memory.",
            ["pixel perfect depth", "depth model", "depth loader", "monocular depth", "ppd"],
            inputs=[
                model_input("dit_name", "dit",
                            "The PPD DiT checkpoint in models/ppd: ppd.pth (Depth Anything v2 semantics) or "
                            "ppd_moge.pth (MoGe-2 semantics), or a .safetensors made by "
                            "`python -m comfyui_ppd convert`."),
                model_input("encoder_name", "encoder",
                            "The semantic encoder that matches the DiT: depth_anything_v2_vitl.pth for ppd.pth, "
                            "the MoGe-2 model.pt (moge2_vitl_normal.pt) for ppd_moge.pth."),
                precision_input(),
                io.Boolean.Input("compile", default=False, optional=True,
                                 tooltip="torch.compile the DiT blocks: the first run per image size is slow "
                                         "(compiling), later runs may be faster on a GPU. Falls back to normal "
                                         "execution if it fails."),
            ],
            outputs=[
                output(PPDModel, "ppd_model", "The loaded PPD model, for the Semantic Encoder and Depth "
                                              "Sampler nodes."),
                output(io.String, "info", "What was loaded, in what precision, and any warning (a DiT / "
                                          "encoder mismatch, fp16 on the CPU); also shown on the node."),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def validate_inputs(cls, dit_name, encoder_name):
        return validate_file_names(dit_name=dit_name, encoder_name=encoder_name)

    @classmethod
    def execute(cls, dit_name: str, encoder_name: str, precision: str, compile: bool = False) -> io.NodeOutput:
        paths = model_paths({"dit": dit_name, "encoder": encoder_name}, getattr(cls.hidden, "prompt", None))
        dit_name, encoder_name = (os.path.basename(paths[r]) for r in ("dit", "encoder"))
        device = mm.get_torch_device()
        policy = runtime.precision(precision, device)
        with warnings.catch_warnings(record=True) as caught:     # the engine's pairing guess goes to the UI
            warnings.simplefilter("always")
            pipeline = ppd_steps.load_pipeline(paths["dit"], paths["encoder"], policy, device=mm.unet_offload_device(),
                                           compile=compile)
        dit, encoder, dtype = pipeline.dit, pipeline.encoder, pipeline.weight_dtype
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
        show_text(cls, info)
        model = LoadedModel(pipeline, patcher(ModelBundle(dit, encoder)), (dit_name, encoder_name))
        return io.NodeOutput(model, info)
