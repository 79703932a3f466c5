"""Core Depth Anything 3's DA3_GEOMETRY packet (ComfyUI 0.27.0, a dict of CPU tensors) read as a camera and scale
source. No ComfyUI import: the layout is read from the dict, as core's DA3Inference writes it:
  depth       (B,H,W) the model's raw depth at the image size (metric only for DA3's metric models)
  image       (B,H,W,3) the source image; mode "mono" | "multiview"
  sky         (B,H,W) sky probability (Mono/Metric models); confidence (B,H,W) raw (Small/Base models)
  intrinsics  (1,S,3,3) pixel intrinsics of the model's processing grid (multiview only; cx = W'/2, cy = H'/2)
  extrinsics  (1,S,3,4) world-to-camera (multiview only; not used: each image keeps its own camera frame)
"""
from __future__ import annotations

import torch

from .. import depth3d
from ..errors import InputError

CONFIDENCE_FLOOR = 0.1        # core's DA3 mesh/cloud default: drop the least confident 10% of the range


def is_da3(packet: object) -> bool:
    """A DA3_GEOMETRY dict (core writes its "mode"; MOGE_GEOMETRY has none)."""
    return isinstance(packet, dict) and packet.get("mode") in ("mono", "multiview") and "depth" in packet


def _index(packet: dict, index: int) -> int:
    batch = packet["depth"].shape[0]
    return 0 if batch == 1 else index


def reference(packet: dict, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(depth (H, W), valid (H, W) bool) of one image: finite, positive, not sky (p < 0.5), and confidence at
    least CONFIDENCE_FLOOR of the image's range (core DA3's own mesh rule) when the packet has them."""
    if not is_da3(packet):
        raise InputError("da3_geometry must be the DA3_GEOMETRY output of core's Run Depth Anything 3.")
    i = _index(packet, index)
    depth = packet["depth"][i].float()
    valid = torch.isfinite(depth) & (depth > 0)
    if packet.get("sky") is not None:
        valid &= packet["sky"][i].to(valid.device) < 0.5
    if packet.get("confidence") is not None:
        c = packet["confidence"][i].float()
        lo, hi = c.min(), c.max()
        if hi > lo:
            valid &= (c - lo) / (hi - lo) >= CONFIDENCE_FLOOR
    if not valid.any():
        raise InputError(f"Depth Anything 3 image {i + 1} has no usable depth (all sky, low confidence or not "
                         "positive): use another scale source or disconnect da3_geometry.")
    return depth, valid


def has_camera(packet: dict) -> bool:
    """Multiview packets carry intrinsics; mono ones do not (the camera then comes from fov_deg / focal_px)."""
    return is_da3(packet) and packet.get("intrinsics") is not None


def intrinsics(packet: dict, height: int, width: int, index: int = 0) -> torch.Tensor:
    """(3, 3) pixel intrinsics of image `index` for a `height` x `width` grid. DA3 gives them on its processing
    grid, whose size is not stored: it is read from the principal point (core sets cx = W'/2, cy = H'/2)."""
    K = packet.get("intrinsics")
    if K is None:
        raise InputError("this Depth Anything 3 geometry has no camera (mono mode): set fov_deg or focal_px, or "
                         "run Depth Anything 3 in multiview mode.")
    K = torch.as_tensor(K).float()
    if K.ndim != 4 or K.shape[-2:] != (3, 3):
        raise InputError(f"DA3 intrinsics must be (1, views, 3, 3), got {tuple(K.shape)}.")
    k = K[0, _index(packet, index) if K.shape[1] > 1 else 0]
    cx, cy = float(k[0, 2]), float(k[1, 2])
    if not (cx > 1 and cy > 1):
        raise InputError(f"DA3 intrinsics have no usable principal point ({cx}, {cy}): set fov_deg or focal_px.")
    return depth3d.pixel_intrinsics(k, height, width, (2 * cy, 2 * cx))
