"""The shared output steps: which metric scale wins (the node and the CLI ask the same function), and the one
metric point cloud in its two conventions."""
from __future__ import annotations

import pytest
import torch

from comfyui_ppd import imaging
from comfyui_ppd.errors import InputError
from comfyui_ppd.families.moge2 import align_to_metric, metric_point_cloud
from comfyui_ppd.families.moge2.steps import metric_cloud
from comfyui_ppd.outputs import scale_source


@pytest.mark.parametrize("kind, reference, moge2, moge, want", [
    ("ppd", True, True, False, "reference"),          # a given reference wins over everything
    ("ppd", False, True, False, "log_fit"),           # PPD depth + this pack's MoGe-2: the official log fit
    ("depth", False, True, False, "geometry"),        # other depth: MoGe-2's depth as a robust reference
    ("ppd", False, False, True, "geometry"),          # core MoGe: its depth as a robust reference
    ("disparity", False, False, False, "near_far"),
])
def test_scale_source(kind, reference, moge2, moge, want):
    assert scale_source(kind, reference=reference, moge2=moge2, moge=moge) == want


def scene(h=12, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ppd = torch.rand(6, 8, generator=g)                                    # PPD's own (coarser) grid
    metric = 1 + 4 * torch.rand(h, w, generator=g)
    mask = torch.rand(h, w, generator=g) > 0.2
    K = torch.tensor([[0.9, 0, 0.5], [0, 1.2, 0.5], [0, 0, 1]])
    return ppd, metric, mask, K, torch.rand(h, w, 3, generator=g)


def test_official_convention_is_run_point_cloud_on_the_resized_depth():
    ppd, metric, mask, K, image = scene()
    cloud, aligned, K_px = metric_cloud(ppd, metric, mask, K, convention="official", colors=image,
                                        outlier_filter="off")
    pred = imaging.resize_depth(ppd[None, None], metric.shape)[0, 0]
    points, colours, pixels = metric_point_cloud(pred, metric, mask, K, image, outlier_filter="off")
    assert torch.equal(cloud.points, points.float()) and torch.equal(cloud.pixels, pixels)
    assert torch.equal(cloud.colors, colours) and torch.equal(aligned, align_to_metric(pred, metric, mask))
    assert (cloud.height, cloud.width) == metric.shape and K_px[0, 2] == metric.shape[1] / 2   # cx = W/2


def test_centres_convention_stays_on_the_ppd_grid():
    ppd, metric, mask, K, _ = scene()
    cloud, aligned, K_px = metric_cloud(ppd, metric, mask, K)
    assert aligned.shape == ppd.shape and (cloud.height, cloud.width) == ppd.shape
    assert K_px[0, 2] == ppd.shape[1] / 2 and cloud.points.shape[0] <= ppd.numel()


def test_conventions_refuse_what_they_do_not_take():
    ppd, metric, mask, K, image = scene()
    with pytest.raises(InputError, match="choose one of"):
        metric_cloud(ppd, metric, mask, K, convention="corners")
    with pytest.raises(InputError, match="remove_outliers"):
        metric_cloud(ppd, metric, mask, K, outlier_filter="window")
    with pytest.raises(InputError, match="official convention"):
        metric_cloud(ppd, metric, mask, K, convention="official", colors=image, stride=2)
