"""PPD Edge Metric Preview: flying pixels (no ground truth) and edge errors (with it) as a heat map and numbers."""
from __future__ import annotations

import math

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..comfyui_ppd import imaging, metrics, outputs
from .common import (
    camera,
    camera_inputs,
    color_batch,
    depth_inputs,
    kind_input,
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

NUMBERS = ("edge_ratio", "image_ratio", "chamfer", "abs_rel", "delta1")


class PPD_EdgeMetricPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_EdgeMetricPreview", "PPD Edge Metric Preview",
            "Measures how clean a depth map's edges are. Without ground truth: the share of flying pixels (points "
            "stranded between foreground and background) in the edge band and in the image. With a metric ground "
            "truth: edge Chamfer distance, AbsRel and delta1. Shows flying pixels in red.",
            ["edge", "flying pixels", "depth metric", "depth quality", "chamfer", "abs rel", "delta1", "heatmap",
             "evaluate depth", "ppd"],
            inputs=[
                kind_input(), *camera_inputs(),
                *range_inputs(" Here only the flying-pixel test uses it; the ground-truth metrics fit their own "
                              "scale."),
                *depth_inputs(),
                io.Mask.Input("gt_depth", optional=True,
                              tooltip="Ground-truth metric depth in metres (0 or inf = unknown); resized nearest to "
                                      "the depth grid. Enables Chamfer, AbsRel and delta1."),
                io.Image.Input("image", optional=True,
                               tooltip="Background for the heat map. Without it a PPD depth uses its own resized "
                                       "image, other depth is shown grey."),
            ],
            outputs=[
                output(io.Image, "heatmap", "Flying pixels in red over the dimmed image (or the depth, near = "
                                            "bright), one per image, at the depth grid."),
                output(io.Float, "edge_flying_ratio", "Flying pixels / edge-band pixels (0-1), averaged "
                                                      "over the batch."),
                output(io.Float, "image_flying_ratio", "Flying pixels / all valid pixels (0-1), averaged "
                                                       "over the batch."),
                output(io.Int, "flying_count", "Number of flying pixels, summed over the batch."),
                output(io.Float, "edge_chamfer", "Edge Chamfer distance in metres (mean of both directions, "
                                                 "after a least-squares fit to the ground truth), averaged "
                                                 "over the batch. NaN without ground truth."),
                output(io.Float, "abs_rel", "Mean absolute relative error over all valid pixels, averaged "
                                            "over the batch. NaN without ground truth."),
                output(io.Float, "delta1", "Share of pixels with max(pred/gt, gt/pred) < 1.25, averaged "
                                           "over the batch. NaN without ground truth."),
                output(io.String, "summary", "One line per image (also shown on the node)."),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,   # it shows its numbers and heat map, so it may end a workflow on its own
        )

    @classmethod
    def execute(cls, depth_kind: str, fov_deg: float, focal_px: float, near: float, far: float, ppd_depth=None,
                depth_image=None, depth_map=None, gt_depth=None, image=None) -> io.NodeOutput:
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
        show_text(cls, summary)
        return io.NodeOutput(heatmap, numbers[0], numbers[1], count, *numbers[2:], summary,
                             ui={"images": preview_images(heatmap, "ppd_edge_preview")})


def batch_mean(values: list[float]) -> float:
    """Mean of the finite values (an image without edges has no Chamfer), NaN when none is."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
