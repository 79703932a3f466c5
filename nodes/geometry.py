"""MoGe-2 geometry: load the complete MoGe-2 model.pt and run it on an IMAGE -> PPD_GEOMETRY, normal map, depth, mask.

PPD_GEOMETRY (a plain dict of CPU tensors for a batch of B images of H x W; this is the one place its keys are
defined). The first four keys are those of core's MOGE_GEOMETRY, so everything that reads one reads the other:
  depth         (B,H,W) float32 metric depth in metres (z, OpenCV frame); +inf at invalid pixels when apply_mask
  mask          (B,H,W) bool, MoGe-2's valid pixels (mask probability > 0.5, in front of the camera)
  intrinsics    (B,3,3) float32, normalised by width and height: fx/W, fy/H, cx = cy = 0.5
  points        (B,H,W,3) float32 metric points, OpenCV frame (x right, y down, z forward); +inf where invalid
  normal        (B,H,W,3) float32 unit normals in the same frame, 0 where invalid; None when the model file has
                no normal head
  metric_scale  (B,) the scale MoGe-2's scale head gave
  kind          "moge2" (what made the packet)
"""
from __future__ import annotations

import math

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..comfyui_ppd import catalogue, load_geometry_model
from ..comfyui_ppd.errors import InputError
from ..comfyui_ppd.families.moge2 import steps as moge2_steps
from .common import (
    Geometry,
    GeometryModel,
    LoadedModel,
    cancellable,
    image_to_bchw,
    loaded,
    log,
    model_input,
    model_paths,
    output,
    patcher,
    schema,
    show_text,
    validate_file_names,
)

ALIASES = ["moge", "moge-2", "metric depth", "normal", "normal map", "surface normals", "camera", "intrinsics",
           "field of view", "fov", "geometry", "ppd"]


class PPD_LoadGeometryModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_LoadGeometryModel", "Load PPD MoGe-2 Geometry Model",
            "Loads the complete MoGe-2 model (model.pt, saved as moge2_vitl_normal.pt in models/ppd) for metric "
            "depth, the camera and normals. ComfyUI moves it to the GPU for work and offloads it when other models "
            "need the memory.",
            ALIASES + ["geometry loader", "moge loader"],
            inputs=[model_input("model_name", "geometry",
                                "The MoGe-2 model.pt in models/ppd (Ruicheng/moge-2-vitl-normal, saved as "
                                f"{catalogue.DEFAULT_NAMES['geometry']}; the same file is ppd_moge.pth's semantic "
                                "encoder). MoGe-1 and other files are refused with a message.")],
            outputs=[output(GeometryModel, "geometry_model", "The loaded MoGe-2 model, for PPD MoGe-2 "
                                                                    "Geometry.")],
            hidden=[io.Hidden.prompt],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        return validate_file_names(model_name=model_name)

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        path = model_paths({"geometry": model_name}, getattr(cls.hidden, "prompt", None))["geometry"]
        model = load_geometry_model(path, device=mm.unet_offload_device())
        if not model.has_normal:
            log.warning("PPD: %s has no normal head; PPD MoGe-2 Geometry will give no normals.", model_name)
        return io.NodeOutput(LoadedModel(model, patcher(model), (model_name,)))


class PPD_MoGe2Geometry(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_MoGe2Geometry", "PPD MoGe-2 Geometry",
            "Runs MoGe-2 on an image: metric depth (metres), the valid-pixel mask, the camera intrinsics and "
            "surface normals, as the official MoGe-2 infer. The geometry packet gives PPD Depth to Point Cloud its "
            "metric scale and camera; the normal map feeds a normal ControlNet.",
            ALIASES + ["normal controlnet", "depth estimation"],
            inputs=[
                GeometryModel.Input("geometry_model", tooltip="MoGe-2 from Load PPD MoGe-2 Geometry Model."),
                io.Image.Input("image", tooltip="The photo (the same one PPD gets); MoGe-2 works at its own "
                                                "resolution and returns maps at this image's size."),
                io.Int.Input("resolution_level", default=9, min=0, max=9,
                             tooltip="MoGe-2's token budget: 0 = 1200 tokens (fastest) ... 9 = 3600 tokens (finest, "
                                     "the official default)."),
                io.Float.Input("fov_x", default=0.0, min=0.0, max=179.0, step=0.1,
                               tooltip="Known horizontal field of view in degrees; 0 = let MoGe-2 estimate the "
                                       "camera (the default)."),
                io.Boolean.Input("apply_mask", default=True,
                                 tooltip="Set invalid pixels (sky, background MoGe-2 is unsure of) to infinite depth "
                                         "and zero normal, as the official default."),
                io.Combo.Input("normal_convention", options=list(moge2_steps.NORMAL_CONVENTIONS),
                               default=next(iter(moge2_steps.NORMAL_CONVENTIONS)),
                               tooltip="Colours of the normal map: ControlNet v1.1 NormalBae (what SD1.5 normal "
                                       "ControlNets take) or OpenGL (R right, G up, B toward the camera; normal-map "
                                       "textures)."),
            ],
            outputs=[
                output(Geometry, "geometry", "Metric depth, mask, normalised intrinsics, points and normals "
                                             "(see nodes/geometry.py), for PPD Depth to Point Cloud's "
                                             "geometry input."),
                output(io.Image, "normal_map", "Normals as colours in the chosen convention (ControlNet v1.1 "
                                               "NormalBae: R left, G up, B toward the camera, so a wall "
                                               "facing the camera is (0.5, 0.5, 1)); black when the model "
                                               "has no normal head."),
                output(io.Image, "metric_depth", "Metric depth in metres in all three channels (0 at invalid "
                                                 "pixels): raw values, not [0,1], so a preview looks white; "
                                                 "wire it to PPD Depth to Point Cloud's depth_image with "
                                                 "depth_kind 'depth'."),
                output(io.Mask, "mask", "MoGe-2's valid pixels (1 = valid)."),
                output(io.String, "summary", "Camera, depth range, valid share and normals per image (also "
                                             "shown on the node)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, geometry_model, image, resolution_level: int, fov_x: float, apply_mask: bool,
                normal_convention: str) -> io.NodeOutput:
        model = loaded(geometry_model, "geometry_model", "Load PPD MoGe-2 Geometry Model")
        x = image_to_bchw(image)
        h, w = x.shape[-2:]
        model.load((1 << 30) + h * w * 64 * 4)           # ~1 GiB of neck/head maps plus per-pixel outputs
        device = next(model.engine.parameters()).device
        outs = []
        with cancellable(model.engine):                  # Cancel acts within a block, as in the PPD nodes
            for i in range(x.shape[0]):
                mm.throw_exception_if_processing_interrupted()
                try:
                    outs.append(moge2_steps.estimate_geometry(model.engine, x[i:i + 1].to(device),
                                                        resolution_level=resolution_level,
                                                        fov_x=fov_x if fov_x > 0 else None, apply_mask=apply_mask))
                except InputError as e:
                    raise InputError(f"image {i + 1} of {x.shape[0]}: {e}" if x.shape[0] > 1 else str(e)) from e
        packet = {k: torch.cat([o[k] for o in outs]) for k in ("depth", "mask", "intrinsics", "points",
                                                               "metric_scale")}
        packet["normal"] = None if outs[0]["normal"] is None else torch.cat([o["normal"] for o in outs])
        packet["kind"] = "moge2"
        if packet["normal"] is None:
            normal_map = torch.zeros(*packet["depth"].shape, 3)
        else:
            normal_map = moge2_steps.normal_image(packet["normal"], normal_convention)
        depth = torch.where(packet["mask"] & torch.isfinite(packet["depth"]), packet["depth"], 0.0)
        summary = show_text(cls, "\n".join(describe(packet, i, model.names[0]) for i in range(x.shape[0])))
        return io.NodeOutput(packet, normal_map, depth[..., None].expand(-1, -1, -1, 3).contiguous(),
                             packet["mask"].float(), summary)


def describe(packet: dict, i: int, name: str) -> str:
    """One summary line: camera, depth range, valid share, normals."""
    mask, depth = packet["mask"][i], packet["depth"][i]
    h, w = mask.shape
    fx = float(packet["intrinsics"][i, 0, 0])
    fov = math.degrees(2 * math.atan(0.5 / fx))
    z = depth[mask & torch.isfinite(depth)]
    normals = ("normals: yes" if packet["normal"] is not None else
               f"normals: none ({name} has no normal head; the normal map is black)")
    return (f"image {i + 1}: {w} x {h} (W x H), focal {fx * w:.1f} px (horizontal FOV {fov:.1f} deg), depth "
            f"{float(z.min()):.2f}-{float(z.max()):.2f} m, {100 * float(mask.float().mean()):.1f}% valid, {normals}")
