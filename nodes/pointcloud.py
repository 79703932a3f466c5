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

import os

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io

from ..comfyui_ppd import depth3d, imaging, outputs, preview
from ..comfyui_ppd.errors import InputError
from ..comfyui_ppd.families.moge2 import steps as moge2_steps
from ..comfyui_ppd.io import meshes
from . import moge
from .common import (
    Geometry,
    MoGeGeometry,
    PPDPoints,
    camera,
    camera_inputs,
    color_batch,
    depth_inputs,
    kind_input,
    logged_warnings,
    megabytes,
    output,
    per_image,
    pick,
    preview_images,
    range_inputs,
    read_depth,
    schema,
    show_text,
    to_mask_batch,
)

ALIASES = ["point cloud", "pointcloud", "3d", "unproject", "depth to 3d", "ply", "glb", "mesh", "metric",
           "camera", "intrinsics", "ppd"]


class PPD_DepthToPointCloud(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_DepthToPointCloud", "PPD Depth to Point Cloud",
            "Unprojects depth into a coloured metric point cloud at the depth's own grid (PPD's processing size, no "
            "upsampling). Scale comes from a near/far range, a reference metric depth, PPD MoGe-2 Geometry (the "
            "official metric pipeline: log-space fit to MoGe-2's depth, its camera) or core MoGe geometry. Mask, "
            "stride, a discontinuity filter and the statistical outlier filter are optional; PPD's sharp edges "
            "need no filter by default.",
            ALIASES + ["metric depth", "moge"],
            inputs=[
                kind_input(), *camera_inputs(), *range_inputs(),
                io.Int.Input("stride", default=1, min=1, max=64,
                             tooltip="Keep every n-th row and column (2 = a quarter of the points). Points stay at "
                                     "their own pixel centres."),
                io.Float.Input("discontinuity_threshold", default=0.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Drop points whose 3x3 depth span / depth exceeds this (core MoGe uses "
                                       "0.04). 0 = off, the default: PPD has no flying pixels to remove."),
                io.Boolean.Input("outlier_filter", default=False,
                                 tooltip="The official statistical outlier filter (20 neighbours, 3 sigma), "
                                         "neighbours searched in a 9x9 pixel window. Off by default: on sharp depth "
                                         "it removes no flying pixels but thins sparse far surfaces; on blurred "
                                         "depth it removes ~70% of flying pixels (README)."),
                *depth_inputs(),
                io.Image.Input("image", optional=True,
                               tooltip="Colours for the points, resized to the depth grid. Without it a PPD depth "
                                       "uses its own resized image, other depth is shaded grey."),
                io.Mask.Input("reference_depth", optional=True,
                              tooltip="Metric depth in metres (any size, e.g. a depth sensor or Convert Image to "
                                      "Mask of a metric depth image); the depth is fitted to it robustly. Wins over "
                                      "moge_geometry's depth."),
                Geometry.Input("geometry", optional=True,
                               tooltip="PPD MoGe-2 Geometry output: PPD depth is fitted to its metric depth in "
                                       "log(1 + d) (the official run_point_cloud.py alignment), its intrinsics set "
                                       "the camera (unless focal_px is set) and only its valid pixels are kept."),
                MoGeGeometry.Input("moge_geometry", optional=True,
                                   tooltip="Core MoGe inference output: its metric depth sets the scale and its "
                                           "intrinsics the camera (unless focal_px is set)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Pixels to keep: 1 = keep, 0 = drop (resized nearest to the depth grid). Load "
                                      "Image's mask is 1 where the PNG is transparent: pass it through InvertMask "
                                      "to keep the opaque subject."),
            ],
            outputs=[
                output(PPDPoints, "points", "Point clouds (metres, OpenCV camera frame) with what a mesh "
                                            "needs, for Save Point Cloud."),
                output(io.String, "summary", "Point counts per image (also shown on the node)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, depth_kind: str, fov_deg: float, focal_px: float, near: float, far: float, stride: int,
                discontinuity_threshold: float, outlier_filter: bool = False, ppd_depth=None, depth_image=None,
                depth_map=None, image=None, reference_depth=None, geometry=None, moge_geometry=None,
                mask=None) -> io.NodeOutput:
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
        summary = show_text(cls, "\n".join(lines))
        return io.NodeOutput({"stride": stride, "frames": frames}, summary)


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


class PPD_SavePointCloud(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_SavePointCloud", "Save Point Cloud (PPD)",
            "Saves point clouds to the output folder with ComfyUI's numbered names (never overwrites): binary "
            "PLY, GLB points, and optionally a GLB mesh cut at depth discontinuities. Wire glb_path into core "
            "Preview 3D to see the cloud (ComfyUI frontend 1.27+ draws GLB points).",
            ALIASES + ["save point cloud", "export 3d"],
            inputs=[
                PPDPoints.Input("points", tooltip="Point clouds from PPD Depth to Point Cloud."),
                io.String.Input("filename_prefix", default="ppd/points",
                                tooltip="File name prefix; may include sub-folders of the output folder and "
                                        "ComfyUI tokens like %date:yyyy-MM-dd%."),
                io.Boolean.Input("ply", default=True, tooltip="Write a binary PLY (float xyz, 8-bit colour; y up, "
                                                             "-z forward, metres) for Blender, MeshLab, "
                                                             "CloudCompare."),
                io.Boolean.Input("glb", default=True, tooltip="Write a GLB with one POINTS primitive, for Preview "
                                                             "3D and three.js / Blender."),
                io.Boolean.Input("mesh", default=False, tooltip="Also write a GLB mesh: the depth grid triangulated "
                                                               "at the cloud's stride, cut where depth jumps."),
                io.Float.Input("mesh_discontinuity_threshold", default=0.04, min=0.0, max=10.0, step=0.01,
                               tooltip="Mesh only: drop a grid quad when its depth span / nearest depth exceeds "
                                       "this (0.04 as core MoGe). 0 = never cut (edges become stretched walls)."),
            ],
            outputs=[
                output(io.String, "glb_path", "The first image's point GLB, relative to the output folder: "
                                              "wire into Preview 3D's model_file. Empty when glb is off."),
                output(io.String, "ply_path", "The first image's PLY, relative to the output folder. Empty "
                                              "when ply is off."),
                output(io.String, "mesh_path", "The first image's mesh GLB, relative to the output folder "
                                               "(Preview 3D shows it too). Empty when mesh is off."),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, points, filename_prefix: str, ply: bool, glb: bool, mesh: bool,
                mesh_discontinuity_threshold: float) -> io.NodeOutput:
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
            written.append(per_image(i, len(frames), lambda: cls.write(
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
        show_text(cls, "\n".join(lines) + "\nPreview: front view | top view (far side up).")
        views = torch.stack([preview.cloud_views(frame["cloud"]) for frame in frames[:4]])
        ui = {"3d": files, "images": preview_images(views, "ppd_cloud_preview")}
        return io.NodeOutput(*paths, ui=ui)

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
