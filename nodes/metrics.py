"""PPD Edge Metric Preview: flying pixels (no ground truth) and edge errors (with it) as a heat map and numbers."""
from __future__ import annotations

import math

import comfy.model_management as mm
import torch

from ..comfyui_ppd import imaging, metrics, outputs
from .pointcloud import (
    CAMERA_INPUTS,
    DEPTH_INPUTS,
    KIND_INPUT,
    RANGE_INPUTS,
    camera,
    color_batch,
    per_image,
    pick,
    read_depth,
    to_mask_batch,
)
from .render import preview_images

NUMBERS = ("edge_ratio", "image_ratio", "chamfer", "abs_rel", "delta1")
SCALE_INPUTS = {name: (kind, {**opts, "tooltip": opts["tooltip"] + " Here only the flying-pixel test uses it; "
                              "the ground-truth metrics fit their own scale."})
                for name, (kind, opts) in RANGE_INPUTS.items()}


class PPD_EdgeMetricPreview:
    DESCRIPTION = ("Measures how clean a depth map's edges are. Without ground truth: the share of flying pixels "
                   "(points stranded between foreground and background) in the edge band and in the image. With "
                   "a metric ground truth: edge Chamfer distance, AbsRel and delta1. Shows flying pixels in red.")
    CATEGORY = "PPD"
    FUNCTION = "measure"
    OUTPUT_NODE = True          # it shows its numbers and heat map, so it may end a workflow on its own
    RETURN_TYPES = ("IMAGE", "FLOAT", "FLOAT", "INT", "FLOAT", "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("heatmap", "edge_flying_ratio", "image_flying_ratio", "flying_count", "edge_chamfer",
                    "abs_rel", "delta1", "summary")
    OUTPUT_TOOLTIPS = (
        "Flying pixels in red over the dimmed image (or the depth, near = bright), one per image, at the depth grid.",
        "Flying pixels / edge-band pixels (0-1), averaged over the batch.",
        "Flying pixels / all valid pixels (0-1), averaged over the batch.",
        "Number of flying pixels, summed over the batch.",
        "Edge Chamfer distance in metres (mean of both directions, after a least-squares fit to the ground "
        "truth), averaged over the batch. NaN without ground truth.",
        "Mean absolute relative error over all valid pixels, averaged over the batch. NaN without ground truth.",
        "Share of pixels with max(pred/gt, gt/pred) < 1.25, averaged over the batch. NaN without ground truth.",
        "One line per image (wire into Preview Any).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**KIND_INPUT, **CAMERA_INPUTS, **SCALE_INPUTS},
                "optional": {
                    **DEPTH_INPUTS,
                    "gt_depth": ("MASK", {"tooltip": "Ground-truth metric depth in metres (0 or inf = unknown); "
                                                     "resized nearest to the depth grid. Enables Chamfer, AbsRel "
                                                     "and delta1."}),
                    "image": ("IMAGE", {"tooltip": "Background for the heat map. Without it a PPD depth uses its "
                                                   "own resized image, other depth is shown grey."}),
                }}

    def measure(self, depth_kind: str, fov_deg: float, focal_px: float, near: float, far: float, ppd_depth=None,
                depth_image=None, depth_map=None, gt_depth=None, image=None):
        source = read_depth(ppd_depth, depth_image, depth_map, depth_kind)
        colors = color_batch(image) if image is not None else source.colors
        truths = to_mask_batch(gt_depth, "gt_depth")
        total = source.depth.shape[0]
        results, heatmaps = [], []
        for i in range(total):
            mm.throw_exception_if_processing_interrupted()

            def work(i=i):
                d = source.depth[i]
                focal = float(camera(*d.shape, source.input_width, fov_deg, focal_px)[0, 0])
                truth = pick(truths, i, total, "gt_depth")
                if truth is not None:  # the ground truth goes to the depth grid, never the reverse
                    truth = imaging.resize_depth(truth[None, None].float(), tuple(d.shape), "nearest")[0, 0]
                return outputs.evaluate_edges(d, source.kind, focal, near=near, far=far, gt=truth,
                                            background=pick(colors, i, total, "image"), drop_invalid=True)

            result, heat = per_image(i, total, work)
            results.append(result)
            heatmaps.append(heat)
        numbers = [batch_mean([r.get(key, math.nan) for r in results]) for key in NUMBERS]
        count = sum(r["flying_count"] for r in results)
        lines = [metrics.format_summary(r) + (f"; {r['dropped']:,} pixels left out (their depth maps to <= 0 or "
                                              "infinity with near/far)" if r["dropped"] else "")
                 for r in results]
        summary = lines[0] if total == 1 else "\n".join(f"image {i + 1}: {s}" for i, s in enumerate(lines))
        heatmap = torch.stack(heatmaps).to(mm.intermediate_device())
        return {"ui": {"images": preview_images(heatmap, "ppd_edge_preview"), "text": [summary]},
                "result": (heatmap, numbers[0], numbers[1], count, *numbers[2:], summary)}


def batch_mean(values: list[float]) -> float:
    """Mean of the finite values (an image without edges has no Chamfer), NaN when none is."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
