"""Core MoGe's MOGE_GEOMETRY packet (ComfyUI 0.27.0, a dict of batched CPU tensors) read into the plain tensors the
engine takes, and written from PPD MoGe-2 Geometry's packet. No ComfyUI import. Core's keys, each optional but
"image": points (B,H,W,3), depth (B,H,W), intrinsics (B,3,3) normalised (fx/W, fy/H, cx = cy = 0.5; absent for a
panorama), mask (B,H,W) bool, normal (B,H,W,3) (MoGe-2 only), image (B,H,W,3) in [0,1].
"""
from __future__ import annotations

import torch

from .. import depth3d
from ..errors import InputError


def batch_index(packet: dict, index: int) -> int:
    """Index into a MOGE_GEOMETRY batch: its only image, or the matching one."""
    batch = next((packet[k].shape[0] for k in ("depth", "intrinsics", "points") if packet.get(k) is not None), 1)
    return 0 if batch == 1 else index


def grid_size(packet: dict, height: int, width: int) -> tuple[int, int]:
    """(H, W) of a packet's own grid: depth is (B, H, W), image and points are (B, H, W, C)."""
    for key, last in (("depth", None), ("image", -1), ("points", -1)):
        if packet.get(key) is not None:
            shape = packet[key].shape[:last] if last else packet[key].shape
            return int(shape[-2]), int(shape[-1])
    return height, width


def intrinsics(packet: dict, height: int, width: int, index: int = 0) -> torch.Tensor:
    """(3, 3) pixel intrinsics of image `index` for a `height` x `width` grid (normalised or pixel K)."""
    K = packet.get("intrinsics")
    if K is None:
        raise InputError("the MoGe geometry has no 'intrinsics' (panorama geometry has none): "
                         "set the camera with a field of view or a focal length instead.")
    K = torch.as_tensor(K)
    if K.ndim not in (2, 3):
        raise InputError(f"intrinsics must be (3, 3) or (B, 3, 3), got {tuple(K.shape)}.")
    K = K[batch_index(packet, index)] if K.ndim == 3 else K
    return depth3d.pixel_intrinsics(K, height, width, grid_size(packet, height, width))


def reference(packet: dict, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(depth (H, W), valid (H, W) bool) of one image, for `depth3d.metric_depth(reference=...)`.

    Valid means inside the packet's mask (when present), finite (core MoGe sets masked pixels to inf)
    and positive.
    """
    if not isinstance(packet, dict) or "depth" not in packet:
        raise InputError("the MoGe geometry has no 'depth': run MoGe inference (not the panorama node) "
                         "or give a reference depth map instead.")
    if packet.get("intrinsics") is None and packet.get("points") is not None:
        raise InputError("the MoGe geometry is a panorama's (distance along each ray, no camera), which cannot "
                         "scale a perspective depth map: use Run MoGe Inference on the same photo instead.")
    i = batch_index(packet, index)
    depth = packet["depth"][i].float()
    valid = torch.isfinite(depth) & (depth > 0)
    if packet.get("mask") is not None:
        valid &= packet["mask"][i].to(valid.device).bool()
    return depth, valid


def to_core(packet: dict, image: torch.Tensor) -> dict:
    """PPD MoGe-2 Geometry's packet in core's MOGE_GEOMETRY layout, so core's Render MoGe Geometry and Convert MoGe
    Point Map to Mesh take it: no None values (a model without a normal head gives no "normal"), the source image
    (B,H,W,3) on the CPU; our extra keys (kind, metric_scale) ride along. Tensors are shared, not copied."""
    out = {k: v for k, v in packet.items() if v is not None}
    out["image"] = image[..., :3].cpu()
    return out
