"""predict_depth_tiled: PPD (tiny random models) as tiled_depth's predict, per image of a batch, with seeds,
ensembles and progress counted over every pass."""
from __future__ import annotations

import pytest
import torch

from comfyui_ppd import PPDPipeline, imaging, load_dit, load_semantic_encoder
from comfyui_ppd.families.ppd import steps as ppd_steps
from comfyui_ppd.tiling import pass_count
from tiny_models import tiny_da2_state_dict, tiny_dit_state_dict

AREA = 64 * 96
TILE = (64, 96)


@pytest.fixture(scope="module")
def pipe():
    return PPDPipeline(load_dit(tiny_dit_state_dict()), load_semantic_encoder(tiny_da2_state_dict()), area=AREA)


def test_one_tile_is_the_plain_pass_resized(pipe):
    image = torch.rand(1, 3, 60, 90, generator=torch.Generator().manual_seed(0))
    tiled = ppd_steps.predict_depth_tiled(pipe, image, tile_size=TILE, steps=2, seed=5)
    plain = ppd_steps.predict_depth(pipe, image, steps=2, seed=5).depth
    assert torch.equal(tiled, imaging.resize_depth(plain, (60, 90)))


@pytest.mark.parametrize("ensemble_size", [1, 2])
def test_a_batch_is_tiled_image_by_image_with_progress_over_every_pass(pipe, ensemble_size):
    images = torch.rand(2, 3, 100, 170, generator=torch.Generator().manual_seed(1))
    calls = []
    out = ppd_steps.predict_depth_tiled(pipe, images, tile_size=TILE, overlap=0.25, steps=2, seed=3,
                                        ensemble_size=ensemble_size, progress=lambda d, t: calls.append((d, t)))
    passes = pass_count(100, 170, TILE, 0.25)
    total = 2 * passes * ensemble_size * 2
    assert out.shape == (2, 1, 100, 170) and torch.isfinite(out).all()
    assert passes > 2 and calls[-1] == (total, total) and all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)               # never goes back
    alone = ppd_steps.predict_depth_tiled(pipe, images[1:], tile_size=TILE, steps=2, seed=3,
                                          ensemble_size=ensemble_size)
    assert torch.equal(out[1:], alone)                                        # batch = each image on its own
