"""PPD Depth to Point Cloud and Save Point Cloud: depth -> PPD_POINTS -> PLY / GLB files for Preview 3D.

PPD_POINTS (a plain dict, CPU tensors): "stride" (int, the grid step the points were taken with) and
"frames", one dict per image of the batch:
  cloud       comfyui_ppd.depth3d.PointCloud: points (N,3) float32 metres in the OpenCV camera frame
              (x right, y down, z forward), colors (N,3) in [0,1], pixels (N,2) int64 (row, col) on the
              depth grid, height and width of that grid
  depth       (h,w) metric depth in metres on the depth grid (before the mask and the filter)
  intrinsics  (3,3) float64 pixel intrinsics of the depth grid
  image       (H',W',3) colours in [0,1] at any size (resized to the depth grid when used), or None
              (points shaded by depth)
  mask        (H",W") keep-mask (1 = keep) at any size (resized nearest when used), or None
The writers turn the OpenCV frame into the viewer frame (y up, -z forward) on the way out.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import comfy.model_management as mm
import folder_paths
import torch

from ..comfyui_ppd import depth3d, imaging, outputs, preview
from ..comfyui_ppd.errors import InputError
from ..comfyui_ppd.families.moge2 import steps as moge2_steps
from ..comfyui_ppd.io import meshes
from . import moge
from .depth import image_to_bchw
from .render import check_depth, megabytes, preview_images

log = logging.getLogger("comfyui_ppd")

DEPTH_KINDS = {"disparity (near = larger)": "disparity", "depth (far = larger)": "depth",
               "PPD log-depth": "ppd"}


# ------------------------------------------------------------------ shared input handling (also nodes/metrics.py)

@dataclass
class DepthInput:
    """One depth batch, whatever socket it came from."""
    depth: torch.Tensor            # (B,h,w) in the units of `kind`
    kind: str                      # "ppd", "depth" or "disparity" (depth3d.KINDS)
    input_width: int               # width of the original image, the unit of focal_px
    colors: torch.Tensor | None   # (B,h,w,3) the PPD packet's resized image, or None


def read_depth(ppd_depth, depth_image, depth_map, depth_kind: str) -> DepthInput:
    """Exactly one of PPD_DEPTH, a depth IMAGE (first channel) or a depth MASK, as (B,h,w)."""
    given = [name for name, value in (("ppd_depth", ppd_depth), ("depth_image", depth_image),
                                      ("depth_map", depth_map)) if value is not None]
    if not given:
        raise InputError("no depth is connected: connect ppd_depth (from PPD Depth Sampler), or a depth map "
                         "from another node to depth_image (IMAGE) or depth_map (MASK).")
    if len(given) > 1:
        raise InputError(f"connect only one depth input, got {' and '.join(given)}: disconnect the others.")
    if ppd_depth is not None:
        check_depth(ppd_depth)
        d = ppd_depth["depth"]
        return DepthInput(d[:, 0], ppd_depth.get("kind", "ppd"), int(ppd_depth["input_size"][1]),
                          ppd_depth["image"].movedim(1, -1))
    if depth_kind not in DEPTH_KINDS:
        raise InputError(f"unknown depth kind {depth_kind!r}; choose one of {list(DEPTH_KINDS)}.")
    if depth_image is not None:
        if not isinstance(depth_image, torch.Tensor) or depth_image.ndim != 4:
            raise InputError(f"depth_image must be an IMAGE (batch, height, width, channels), got "
                             f"{getattr(depth_image, 'shape', type(depth_image).__name__)}.")
        if (depth_image[..., :3] - depth_image[..., :1]).abs().max() > 1 / 255:
            log.warning("PPD: the depth image's colour channels differ (a colour-mapped render?); using its "
                        "first channel. Connect a grey depth image, or the raw depth as a MASK.")
        d = depth_image[..., 0]
    else:
        d = to_mask_batch(depth_map, "depth_map")
    return DepthInput(d.float(), DEPTH_KINDS[depth_kind], int(d.shape[-1]), None)


def to_mask_batch(mask, name: str) -> torch.Tensor | None:
    """A MASK as (B,H,W); a single (H,W) map becomes a batch of one."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise InputError(f"{name} must be a MASK (batch, height, width), got "
                         f"{getattr(mask, 'shape', type(mask).__name__)}.")
    return mask[None] if mask.ndim == 2 else mask


def color_batch(image) -> torch.Tensor | None:
    """An IMAGE as (B,H,W,3): alpha dropped, grey repeated (as the Semantic Encoder reads it)."""
    return None if image is None else image_to_bchw(image).movedim(1, -1)


def pick(batch: torch.Tensor | None, index: int, total: int, name: str) -> torch.Tensor | None:
    """Item `index` of a batch that has one entry for all images or one per depth image."""
    if batch is None:
        return None
    if batch.shape[0] not in (1, total):
        raise InputError(f"{name} has {batch.shape[0]} images but the depth has {total}: give one {name} "
                         "for the whole batch, or one per depth image.")
    return batch[0 if batch.shape[0] == 1 else index]


def camera(height: int, width: int, input_width: int, fov_deg: float, focal_px: float,
           packet: dict | None = None, index: int = 0) -> torch.Tensor:
    """(3,3) intrinsics of the depth grid: focal_px (original-image pixels) > MoGe intrinsics > FOV."""
    if focal_px > 0:  # a field of view spans the whole width at any resolution
        return depth3d.camera_intrinsics(height, width, fov_deg=depth3d.fov_from_focal(focal_px, input_width))
    if packet is not None and packet.get("intrinsics") is not None:
        return moge.intrinsics(packet, height, width, index)
    return depth3d.camera_intrinsics(height, width, fov_deg=fov_deg)


def per_image(index: int, total: int, work):
    """Run `work()`, naming the image in a batch when it raises InputError."""
    try:
        return work()
    except InputError as e:
        if total == 1:
            raise
        raise InputError(f"image {index + 1} of {total}: {e}") from e


def logged_warnings(work):
    """Run `work()`; engine warnings (e.g. a cloud over 10 M points) go to the ComfyUI log. -> (result, messages)"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = work()
    messages = [str(w.message) for w in caught]
    for message in messages:
        log.warning("PPD: %s", message)
    return result, messages


CAMERA_INPUTS = {
    "fov_deg": ("FLOAT", {"default": 60.0, "min": 1.0, "max": 179.0, "step": 0.1,
                          "tooltip": "Horizontal field of view in degrees (60 suits most photos; phone main "
                                     "cameras are about 65-70). Used when focal_px is 0 and no MoGe intrinsics "
                                     "are connected."}),
    "focal_px": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100000.0, "step": 0.1,
                           "tooltip": "Focal length in pixels of the original image (the one given to PPD "
                                      "Semantic Encoder, or the depth map's own size). 0 = use fov_deg. When "
                                      "set it wins over fov_deg and MoGe intrinsics."}),
}
DEPTH_INPUTS = {
    "ppd_depth": ("PPD_DEPTH", {"tooltip": "Depth from PPD Depth Sampler (used at its processing grid, no "
                                           "upsampling). Connect this or depth_image or depth_map."}),
    "depth_image": ("IMAGE", {"tooltip": "A depth map from another node as an IMAGE (first channel is read); "
                                         "set depth_kind to say what it holds."}),
    "depth_map": ("MASK", {"tooltip": "A depth map from another node as a float MASK (e.g. metric depth in "
                                       "metres); set depth_kind to say what it holds."}),
}
KIND_INPUT = {"depth_kind": (list(DEPTH_KINDS), {
    "default": "disparity (near = larger)",
    "tooltip": "What depth_image / depth_map holds: disparity or inverse depth (near = larger, e.g. "
               "ControlNet-style depth images; zero has no finite depth, so give a reference or a mask), "
               "depth (far = larger, e.g. metres), or PPD's normalised log-depth. Ignored for ppd_depth."})}
RANGE_INPUTS = {
    "near": ("FLOAT", {"default": 1.0, "min": 0.001, "max": 10000.0, "step": 0.01,
                       "tooltip": "Metres at PPD's near end (log-depth 0, the 2% nearest pixels). Used for "
                                  "PPD log-depth without a reference; other kinds are taken as they are."}),
    "far": ("FLOAT", {"default": 10.0, "min": 0.01, "max": 100000.0, "step": 0.01,
                      "tooltip": "Metres at PPD's far end (log-depth 1, the 2% farthest pixels), e.g. 5 for a "
                                 "room, 50 for a street. Used for PPD log-depth without a reference."}),
}


# ------------------------------------------------------------------ nodes

class PPD_DepthToPointCloud:
    DESCRIPTION = ("Unprojects depth into a coloured metric point cloud at the depth's own grid (PPD's processing "
                   "size, no upsampling). Scale comes from a near/far range, a reference metric depth, PPD MoGe-2 "
                   "Geometry (the official metric pipeline: log-space fit to MoGe-2's depth, its camera) or core "
                   "MoGe geometry. Mask, stride, a discontinuity filter and the statistical outlier filter are "
                   "optional; PPD's sharp edges need no filter by default.")
    CATEGORY = "PPD"
    FUNCTION = "unproject"
    RETURN_TYPES = ("PPD_POINTS", "STRING")
    RETURN_NAMES = ("points", "summary")
    OUTPUT_TOOLTIPS = ("Point clouds (metres, OpenCV camera frame) with what a mesh needs, for Save Point Cloud.",
                       "Point counts per image (wire into Preview Any).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **KIND_INPUT, **CAMERA_INPUTS, **RANGE_INPUTS,
            "stride": ("INT", {"default": 1, "min": 1, "max": 64,
                               "tooltip": "Keep every n-th row and column (2 = a quarter of the points). Points "
                                          "stay at their own pixel centres."}),
            "discontinuity_threshold": ("FLOAT", {
                "default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01,
                "tooltip": "Drop points whose 3x3 depth span / depth exceeds this (core MoGe uses 0.04). "
                           "0 = off, the default: PPD has no flying pixels to remove."}),
            "outlier_filter": ("BOOLEAN", {
                "default": False,
                "tooltip": "The official statistical outlier filter (20 neighbours, 3 sigma), neighbours searched "
                           "in a 9x9 pixel window. Off by default: on sharp depth it removes no flying pixels but "
                           "thins sparse far surfaces; on blurred depth it removes ~70% of flying pixels (README)."}),
        }, "optional": {
            **DEPTH_INPUTS,
            "image": ("IMAGE", {"tooltip": "Colours for the points, resized to the depth grid. Without it a "
                                           "PPD depth uses its own resized image, other depth is shaded grey."}),
            "reference_depth": ("MASK", {"tooltip": "Metric depth in metres (any size, e.g. a depth sensor or "
                                                    "Convert Image to Mask of a metric depth image); the depth "
                                                    "is fitted to it robustly. Wins over moge_geometry's depth."}),
            "geometry": ("PPD_GEOMETRY", {"tooltip": "PPD MoGe-2 Geometry output: PPD depth is fitted to its "
                                                     "metric depth in log(1 + d) (the official run_point_cloud.py "
                                                     "alignment), its intrinsics set the camera (unless focal_px "
                                                     "is set) and only its valid pixels are kept."}),
            "moge_geometry": ("MOGE_GEOMETRY", {"tooltip": "Core MoGe inference output: its metric depth sets "
                                                           "the scale and its intrinsics the camera (unless "
                                                           "focal_px is set)."}),
            "mask": ("MASK", {"tooltip": "Pixels to keep: 1 = keep, 0 = drop (resized nearest to the depth grid). "
                                         "Load Image's mask is 1 where the PNG is transparent: pass it through "
                                         "InvertMask to keep the opaque subject."}),
        }}

    def unproject(self, depth_kind: str, fov_deg: float, focal_px: float, near: float, far: float, stride: int,
                  discontinuity_threshold: float, outlier_filter: bool = False, ppd_depth=None, depth_image=None,
                  depth_map=None, image=None, reference_depth=None, geometry=None, moge_geometry=None, mask=None):
        source = read_depth(ppd_depth, depth_image, depth_map, depth_kind)
        if moge_geometry is not None and not isinstance(moge_geometry, dict):
            raise InputError("moge_geometry must be the MOGE_GEOMETRY output of core MoGe inference.")
        if geometry is not None:
            if not isinstance(geometry, dict) or geometry.get("kind") != "moge2":
                raise InputError("geometry must be the PPD_GEOMETRY output of PPD MoGe-2 Geometry.")
            if moge_geometry is not None:
                raise InputError("connect only one of geometry (PPD MoGe-2 Geometry) and moge_geometry (core "
                                 "MoGe): disconnect the other.")
        colors = color_batch(image) if image is not None else source.colors
        references, masks = to_mask_batch(reference_depth, "reference_depth"), to_mask_batch(mask, "mask")
        total = source.depth.shape[0]
        frames, lines = [], []
        for i in range(total):
            mm.throw_exception_if_processing_interrupted()

            def work(i=i):
                color, keep = pick(colors, i, total, "image"), pick(masks, i, total, "mask")
                reference, valid = pick(references, i, total, "reference_depth"), None
                packet = geometry if geometry is not None else moge_geometry
                scale = outputs.scale_source(source.kind, reference=reference is not None,
                                             moge2=geometry is not None, moge=moge_geometry is not None)
                if scale == "log_fit":
                    g = moge.batch_index(geometry, i)
                    K = (camera(*source.depth[i].shape, source.input_width, fov_deg, focal_px)
                         if focal_px > 0 else None)
                    cloud, metric, K = moge2_steps.metric_cloud(
                        source.depth[i], geometry["depth"][g], geometry["mask"][g], geometry["intrinsics"][g],
                        colors=color, mask=keep, stride=stride, discontinuity_threshold=discontinuity_threshold,
                        camera=K)
                else:
                    if scale == "geometry":
                        reference, valid = moge.reference(packet, i)
                    K = camera(*source.depth[i].shape, source.input_width, fov_deg, focal_px, packet, i)
                    cloud, metric, K = outputs.depth_to_cloud(
                        source.depth[i], source.kind, near=near, far=far, intrinsics=K, colors=color,
                        reference=reference, reference_mask=valid, mask=keep, stride=stride,
                        discontinuity_threshold=discontinuity_threshold, drop_invalid=True)
                if outlier_filter:
                    cloud = outputs.remove_outliers(cloud, metric, K)
                kept = torch.isfinite(metric)                           # dropped pixels are NaN
                if keep is not None:
                    kept &= imaging.resize_depth(keep[None, None].float(), tuple(metric.shape), "nearest")[0, 0] > 0.5
                return {"cloud": cloud, "depth": metric, "intrinsics": K, "image": color, "mask": kept,
                        "dropped": int(torch.isnan(metric).sum())}

            frame, notes = logged_warnings(lambda: per_image(i, total, work))
            frames.append(frame)
            lines.append(describe(frame, stride, i if total > 1 else None) + "".join(f" ({n})" for n in notes))
        return ({"stride": stride, "frames": frames}, "\n".join(lines))


def describe(frame: dict, stride: int, index: int | None) -> str:
    """One summary line for a frame: points, grid (W x H), depth range, focal length, dropped pixels."""
    cloud, z = frame["cloud"], frame["cloud"].points[:, 2]
    head = "" if index is None else f"image {index + 1}: "
    dropped = frame.get("dropped", 0)
    tail = (f"; {dropped:,} pixels dropped: their depth maps to <= 0 or infinity (with near/far: raise near "
            "or lower far to keep them)" if dropped else "")
    return (f"{head}{cloud.points.shape[0]:,} points from the {cloud.width} x {cloud.height} (W x H) depth grid "
            f"(stride {stride}), depth {float(z.min()):.2f}-{float(z.max()):.2f} m, "
            f"focal {float(frame['intrinsics'][0, 0]):.1f} px{tail}")


def check_points(points) -> None:
    if not isinstance(points, dict) or not points.get("frames"):
        raise InputError("expected a PPD_POINTS packet from PPD Depth to Point Cloud.")


def relative(subfolder: str, file: str) -> str:
    """A path relative to the output folder with '/' separators, as core Preview 3D's model_file wants."""
    return "/".join(part for part in (*subfolder.replace(os.sep, "/").split("/"), file) if part)


class PPD_SavePointCloud:
    DESCRIPTION = ("Saves point clouds to the output folder with ComfyUI's numbered names (never overwrites): "
                   "binary PLY, GLB points, and optionally a GLB mesh cut at depth discontinuities. Wire glb_path "
                   "into core Preview 3D to see the cloud (ComfyUI frontend 1.27+ draws GLB points).")
    CATEGORY = "PPD"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("glb_path", "ply_path", "mesh_path")
    OUTPUT_TOOLTIPS = ("The first image's point GLB, relative to the output folder: wire into Preview 3D's "
                       "model_file. Empty when glb is off.",
                       "The first image's PLY, relative to the output folder (for point-cloud previews that read "
                       "PLY). Empty when ply is off.",
                       "The first image's mesh GLB, relative to the output folder (Preview 3D shows it too). "
                       "Empty when mesh is off.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "points": ("PPD_POINTS", {"tooltip": "Point clouds from PPD Depth to Point Cloud."}),
            "filename_prefix": ("STRING", {"default": "ppd/points",
                                           "tooltip": "File name prefix; may include sub-folders of the output "
                                                      "folder and ComfyUI tokens like %date:yyyy-MM-dd%."}),
            "ply": ("BOOLEAN", {"default": True, "tooltip": "Write a binary PLY (float xyz, 8-bit colour; y up, "
                                                            "-z forward, metres) for Blender, MeshLab, CloudCompare."}),
            "glb": ("BOOLEAN", {"default": True, "tooltip": "Write a GLB with one POINTS primitive, for Preview 3D "
                                                            "and three.js / Blender."}),
            "mesh": ("BOOLEAN", {"default": False, "tooltip": "Also write a GLB mesh: the depth grid triangulated "
                                                              "at the cloud's stride, cut where depth jumps."}),
            "mesh_discontinuity_threshold": ("FLOAT", {
                "default": 0.04, "min": 0.0, "max": 10.0, "step": 0.01,
                "tooltip": "Mesh only: drop a grid quad when its depth span / nearest depth exceeds this "
                           "(0.04 as core MoGe). 0 = never cut (edges become stretched walls)."}),
        }}

    def save(self, points, filename_prefix: str, ply: bool, glb: bool, mesh: bool,
             mesh_discontinuity_threshold: float):
        check_points(points)
        if not (ply or glb or mesh):
            raise InputError("nothing to save: switch on at least one of ply, glb, mesh.")
        frames = points["frames"]
        first = frames[0]["cloud"]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), first.width, first.height)
        stride, written = points.get("stride", 1), []
        for i, frame in enumerate(frames):
            mm.throw_exception_if_processing_interrupted()      # stop between images, never mid-file
            base = f"{name}_{counter + i:05}_"
            written.append(per_image(i, len(frames), lambda: self.write(
                folder, base, frame, stride, ply, glb, mesh, mesh_discontinuity_threshold)))
        files = [{"filename": f, "subfolder": subfolder, "type": "output"} for w in written for f in w.values()]
        paths = tuple(relative(subfolder, written[0][k]) if k in written[0] else "" for k in ("glb", "ply", "mesh"))
        lines = []
        for i, (frame, names) in enumerate(zip(frames, written)):
            cloud = frame["cloud"]
            head = f"image {i + 1}: " if len(frames) > 1 else ""
            lines.append(f"{head}{cloud.points.shape[0]:,} points ({cloud.width} x {cloud.height} grid, stride "
                         f"{stride}): " + ", ".join(f"{n} ({megabytes(os.path.join(folder, n))})"
                                                   for n in names.values()))
        views = torch.stack([preview.cloud_views(frame["cloud"]) for frame in frames[:4]])
        ui = {"3d": files, "text": ["\n".join(lines) + "\nPreview: front view | top view (far side up)."],
              "images": preview_images(views, "ppd_cloud_preview")}
        return {"ui": ui, "result": paths}

    @staticmethod
    def write(folder: str, base: str, frame: dict, stride: int, ply: bool, glb: bool, mesh: bool,
              threshold: float) -> dict[str, str]:
        """Write one frame's files; returns {"ply" | "glb" | "mesh": file name}."""
        out = {}
        if ply:
            out["ply"] = meshes.write_ply(os.path.join(folder, base + ".ply"), frame["cloud"]).name
        if glb:
            out["glb"] = meshes.write_glb(os.path.join(folder, base + ".glb"), frame["cloud"]).name
        if mesh:
            m = depth3d.depth_to_mesh(frame["depth"], frame["intrinsics"], frame["image"], mask=frame["mask"],
                                       stride=stride, discontinuity_threshold=threshold)
            out["mesh"] = meshes.write_glb_mesh(os.path.join(folder, base + "mesh.glb"), m.vertices, m.faces,
                                                  m.colors).name
        return out
