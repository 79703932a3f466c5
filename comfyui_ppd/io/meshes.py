"""Point-cloud and mesh files: binary PLY and GLB (glTF 2.0), written in the viewer frame (y up, -z forward)."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import torch

from ..depth3d import PointCloud, opencv_to_gltf
from ..errors import InputError
from .files import atomic_write


def write_ply(path: str | os.PathLike, cloud: PointCloud, *, overwrite: bool = False) -> Path:
    """Binary little-endian PLY (float x, y, z; uchar red, green, blue), viewer frame (y up, -z forward)."""
    pts = _np32(opencv_to_gltf(cloud.points))
    rgb = _np_u8(cloud.colors)
    rec = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                    ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    rec["red"], rec["green"], rec["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = ("ply\nformat binary_little_endian 1.0\n"
              "comment comfyui-ppd point cloud, metres, y up, -z forward\n"
              f"element vertex {len(pts)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")

    def write(f) -> None:
        f.write(header.encode("ascii"))
        f.write(rec.data)

    return atomic_write(path, write, overwrite)


def write_glb(path: str | os.PathLike, cloud: PointCloud, *, overwrite: bool = False) -> Path:
    """glTF 2.0 binary with one POINTS primitive (POSITION and float COLOR_0), viewer frame."""
    data = _glb(_np32(opencv_to_gltf(cloud.points)), _np32(cloud.colors.clamp(0, 1)), None)
    return atomic_write(path, lambda f: f.write(data), overwrite)


def write_glb_mesh(path: str | os.PathLike, vertices: torch.Tensor, faces: torch.Tensor,
                   colors: torch.Tensor, *, overwrite: bool = False) -> Path:
    """glTF 2.0 binary with one TRIANGLES primitive (uint32 indices), OpenCV-frame input, viewer frame out."""
    indices = faces.detach().cpu().numpy().astype("<u4").reshape(-1)
    data = _glb(_np32(opencv_to_gltf(vertices)), _np32(colors.clamp(0, 1)), indices)
    return atomic_write(path, lambda f: f.write(data), overwrite)


def _glb(positions: np.ndarray, colors: np.ndarray, indices: np.ndarray | None) -> bytes:
    """The bytes of a one-mesh GLB; every bufferView starts on a 4-byte boundary."""
    if len(positions) == 0:
        raise InputError("nothing to write: the cloud or mesh is empty.")
    blobs = [positions.tobytes(), colors.tobytes()] + ([indices.tobytes()] if indices is not None else [])
    views, offset = [], 0
    for i, blob in enumerate(blobs):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(blob),
                      "target": 34963 if i == 2 else 34962})
        offset += len(blob)  # all blobs are 4-byte multiples (float32 / uint32)
    accessors = [
        {"bufferView": 0, "componentType": 5126, "count": len(positions), "type": "VEC3",
         "min": positions.min(0).tolist(), "max": positions.max(0).tolist()},
        {"bufferView": 1, "componentType": 5126, "count": len(colors), "type": "VEC3"},
    ]
    primitive = {"attributes": {"POSITION": 0, "COLOR_0": 1}, "mode": 0}
    if indices is not None:
        accessors.append({"bufferView": 2, "componentType": 5125, "count": len(indices), "type": "SCALAR"})
        primitive.update(indices=2, mode=4)
    doc = {"asset": {"version": "2.0", "generator": "comfyui-ppd"}, "scene": 0, "scenes": [{"nodes": [0]}],
           "nodes": [{"mesh": 0}], "meshes": [{"primitives": [primitive]}],
           "buffers": [{"byteLength": offset}], "bufferViews": views, "accessors": accessors}
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    binary = b"".join(blobs)
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(text), b"JSON") + text
            + struct.pack("<I4s", len(binary), b"BIN\x00") + binary)


def _np32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy(), dtype="<f4")


def _np_u8(colors: torch.Tensor) -> np.ndarray:
    return (colors.detach().to("cpu", torch.float32).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
