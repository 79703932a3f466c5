"""Flicker metric (comfyui_ppd.flicker) on synthetic depth videos of the analytic room (tests/support/scenes.py):
exact depth scores 0, injected per-frame scale/shift jitter is recovered, PPVD's window alignment removes
per-window jitter (alone and inside VideoDepthPipeline)."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch

from comfyui_ppd.align import fit_affine, fit_scale_shift_f32
from comfyui_ppd.errors import InputError
from comfyui_ppd.families.ppvd import align_windows
from comfyui_ppd.flicker import measure_flicker
from scenes import (
    WINDOW_JITTER,
    background_mask,
    frame_windows,
    jitter_frames,
    pan_clip,
    ppd_video,
    still_clip,
    unaligned_video,
    window_predictions,
)

EPS32 = torch.finfo(torch.float32).eps
FIGURES = ("scale_jump", "shift_jump", "scale_spread", "shift_spread", "mean_change", "mean_residual")


@pytest.fixture(scope="module")
def still():
    return ppd_video(still_clip(12, 36, 48))


@pytest.fixture(scope="module")
def pan():
    metric = pan_clip(12, 36, 48)[1]
    return ppd_video(metric), background_mask(metric)


def fit_bound(video: torch.Tensor) -> float:
    """Error bound of one pair's fitted (log s, b) from float32 storage of the frames.

    Every stored value carries a rounding error <= EPS32 * max|v|, so the error vector has 2-norm <=
    sqrt(n) * EPS32 * max|v| in the target and as much (times s ~ 1) in the prediction; least squares on
    A = [p, 1] amplifies it by 1 / sigma_min(A) <= sqrt((E[p^2] + 1) / (n var p)) (lambda_min >= det / trace).
    """
    v = video.double()
    return 2 * EPS32 * v.abs().max().item() * math.sqrt((v.square().mean().item() + 1) / v.var().item())


def test_exact_depth_scores_zero(still, pan):
    # Identical pixels make the normal equations' numerators equal det term for term, so s = 1 and b = 0
    # exactly (no rounding), and every difference is exactly 0.
    for video, mask in ((still, None), pan):
        r = measure_flicker(video[:, None], mask)
        assert all(getattr(r, k) == 0 for k in FIGURES), r.summary
        assert torch.all(r.frame_log_scale == 0) and torch.all(r.frame_shift == 0)
    static = pan[1][:-1] & pan[1][1:]
    assert 0.5 < static.float().mean() < 0.9          # wall and floor, not the moving box and sphere
    moving = measure_flicker(pan[0])                  # every pixel: the moving objects are not static
    assert moving.mean_change > 0.002 and moving.mean_residual > 0.002


@pytest.mark.parametrize("sigma", [0.02, 0.05])
@pytest.mark.parametrize("camera", ["still", "pan"])
def test_injected_jitter_is_recovered(still, pan, camera, sigma):
    clean, mask = (still, None) if camera == "still" else pan
    video, ls, c = jitter_frames(clean, sigma, sigma, seed=3)
    r = measure_flicker(video, mask)
    tol = len(video) * fit_bound(video)               # pair errors add up along the chain of N - 1 pairs
    # per frame: frame t = exp(l_t) * frame 0 + c_t exactly (frame 0 carries no jitter)
    assert (r.frame_log_scale - ls).abs().max() < tol
    assert (r.frame_shift - c).abs().max() < tol
    # the spreads are the std of the jitter actually drawn
    assert abs(r.scale_spread - ls.std(correction=0).item()) < tol
    assert abs(r.shift_spread - c.std(correction=0).item()) < tol
    # pairs: s_t = exp(l_t - l_{t+1}), b_t = c_t - s_t c_{t+1}
    log_s = ls[:-1] - ls[1:]
    assert abs(r.scale_jump - log_s.square().mean().sqrt().item()) < fit_bound(video)
    assert abs(r.shift_jump - (c[:-1] - log_s.exp() * c[1:]).square().mean().sqrt().item()) < 2 * fit_bound(video)
    # affine jitter only: nothing left after the per-pair fit, the raw change is not
    assert r.mean_residual < fit_bound(video) and r.mean_change > sigma / 4
    assert f"over {len(video) - 1} frame pairs" in r.summary


def test_change_and_residual_measure_pixel_noise(still):
    # Independent N(0, s^2) noise per pixel and frame: |n_t - n_{t+1}| has mean 2 s / sqrt(pi). Over
    # 11 pairs x 1,728 px the mean of |X| has relative std sqrt(pi/2 - 1) / sqrt(19,008) = 0.55 %; 3 % is > 5 sd.
    s = 0.01
    noisy = still + s * torch.randn(still.shape, generator=torch.Generator().manual_seed(0))
    r = measure_flicker(noisy)
    expected = 2 * s / math.sqrt(math.pi)
    assert r.mean_change == pytest.approx(expected, rel=0.03)
    assert r.mean_residual == pytest.approx(expected, rel=0.03)   # the fit takes out ~2 of 1,728 dof
    assert r.scale_jump < 0.01


def _f32_align_bound(windows: torch.Tensor) -> float:
    """Error bound of the official float32 normal equations on the aligner's 3 x H x W overlap.

    Each numpy float32 sum has relative error <= EPS32 * (log2(n) + 8) (pairwise summation in blocks of 8);
    det = a00 a11 - a01^2 cancels a00 a11 / det = E[p^2] / var(p), so (s, b) is off by about
    4 (log2(n) + 8) EPS32 E[p^2] / var(p), and the windows chain that error along.
    """
    p = windows[:, :3].double()
    n = p[0].numel()
    cond = max((w.square().mean() / w.var()).item() for w in p)
    return len(windows) * 4 * (math.log2(n) + 8) * EPS32 * cond * p.abs().max().item()


def test_window_alignment_removes_window_jitter():
    metric = pan_clip(42, 24, 32)[1]                              # 42 frames = 3 windows (16 + 13 + 13)
    clean, mask = ppd_video(metric), background_mask(metric)
    windows, plan = window_predictions(clean)
    assert len(plan) == 3
    w = frame_windows(42)
    ls = torch.tensor([WINDOW_JITTER[i][0] for i in w], dtype=torch.float64)
    c = torch.tensor([WINDOW_JITTER[i][1] for i in w], dtype=torch.float64)

    before = measure_flicker(unaligned_video(windows, 42), mask)
    tol = 3 * fit_bound(windows)
    assert (before.frame_log_scale - ls).abs().max() < tol        # the injected per-window jitter, seen
    assert (before.frame_shift - c).abs().max() < tol
    assert before.scale_spread > 0.05 and before.shift_jump > 0.01

    after = measure_flicker(align_windows(windows), mask)
    bound = _f32_align_bound(windows) + 3 * fit_bound(windows)
    assert max(getattr(after, k) for k in FIGURES) < bound, (after.summary, bound)
    assert after.frame_log_scale.abs().max() < bound and after.frame_shift.abs().max() < bound


def test_pipeline_alignment_removes_window_jitter(monkeypatch):
    """VideoDepthPipeline with a stand-in for the networks that predicts exact depth with a scale/shift per window."""
    from comfyui_ppd import VideoDepthPipeline
    from tiny_ppvd import tiny_pi3, tiny_video_dit

    rgb, metric = pan_clip(40, 32, 64)                            # 40 frames: 3 windows, the last one padded
    clean, mask = ppd_video(metric), background_mask(metric)
    windows, _ = window_predictions(clean)
    pipe = VideoDepthPipeline(tiny_video_dit(), tiny_pi3(), process_size=(32, 64))
    calls = []

    def stand_in(frames, noise, steps, callback=None):            # (16,3,H,W) -> (16,1,h,w)
        calls.append(len(calls))
        return windows[len(calls) - 1][:, None]

    monkeypatch.setattr(pipe, "window_prediction", stand_in)
    result = pipe.run(rgb, steps=1)
    assert len(calls) == 3
    assert torch.equal(result.depth[:, 0], align_windows(windows)[:40])   # the pipeline's own alignment
    for (s, _), (ls, _) in zip(result.scale_shift, WINDOW_JITTER[1:]):
        assert s == pytest.approx(math.exp(-ls), abs=_f32_align_bound(windows))
    before = measure_flicker(unaligned_video(windows, 40), mask)
    after = measure_flicker(result.depth, mask)
    bound = _f32_align_bound(windows) + 3 * fit_bound(windows)
    assert before.scale_spread > 0.05
    assert max(getattr(after, k) for k in FIGURES) < bound, after.summary


def test_masks_non_finite_pixels_and_bad_input(still):
    video = still.clone()
    video[3, :5, :5] = math.nan
    video[7, -2:] = math.inf
    r = measure_flicker(video)
    assert all(getattr(r, k) == 0 for k in FIGURES)
    assert r.static_fraction[2] < 1 and r.static_fraction[0] == 1
    # a pair without static pixels is left out (NaN), the rest still counts
    mask = torch.ones(still.shape, dtype=torch.bool)
    mask[5] = False
    r = measure_flicker(jitter_frames(still, 0.02, 0.02)[0], mask)
    assert torch.isnan(r.pair_log_scale[4:6]).all() and torch.isfinite(r.pair_log_scale[:4]).all()
    assert torch.isnan(r.frame_log_scale[5:]).all() and math.isfinite(r.scale_jump)
    assert "over 9 frame pairs" in r.summary
    json.dumps(r.as_dict())
    empty = measure_flicker(still, torch.zeros(still.shape[-2:], dtype=torch.bool))
    assert "no static pixels" in empty.summary and math.isnan(empty.mean_change)
    with pytest.raises(InputError, match="at least 2 frames"):
        measure_flicker(still[:1])
    with pytest.raises(InputError, match="static mask"):
        measure_flicker(still, torch.ones(5, 36, 48, dtype=torch.bool))
    with pytest.raises(InputError, match=r"\(N,1,H,W\)"):
        measure_flicker(still[:, None, None])


def test_batched_fit_is_the_official_fit():
    """The flicker metric's fit (align.fit_affine, float64, centred) against the official float32 fitter."""
    gen = torch.Generator().manual_seed(0)
    p, t = torch.rand(4, 3, 20, 24, generator=gen), torch.rand(4, 3, 20, 24, generator=gen)
    t[1] = 1.7 * p[1] - 0.3
    mask = torch.rand(4, 3, 20, 24, generator=gen) > 0.3
    fit = fit_affine(p.flatten(1).double(), t.flatten(1).double(), mask.flatten(1))
    batched = torch.cat([fit.scale, fit.shift], 1)
    for i in range(4):
        s, b = fit_scale_shift_f32(p[i], t[i], mask[i])
        # float32 normal equations: sums good to ~ (log2 n + 8) EPS32, det amplifies by E[p^2]/var(p) ~ 4
        assert batched[i].tolist() == pytest.approx([s, b], abs=1e-4)
    assert batched[1].tolist() == pytest.approx([1.7, -0.3], abs=1e-6)   # float32 data, float64 solve
    flat = fit_affine(torch.full((1, 10), 2.0, dtype=torch.float64), torch.full((1, 10), 2.5, dtype=torch.float64))
    assert [flat.scale.item(), flat.shift.item()] == [1.0, 0.5]          # constant: shift only


def test_summary_caps_figures_of_unrelated_frames():
    """A scene cut (frames that share nothing) gives huge figures: the UI line says '>999%', not 30 digits."""
    ramp = torch.linspace(1, 2, 64).reshape(1, 8, 8)
    video = torch.cat([ramp, ramp * 1e6, ramp])                           # a 10^6 jump in scale and back
    summary = measure_flicker(video).summary
    assert ">999%" in summary
    assert all(float(v) <= 999 for v in re.findall(r"(-?[\d.]+)%", summary))
