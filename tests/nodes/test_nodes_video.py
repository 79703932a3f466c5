"""The video nodes (Load PPD Video Model, PPD Video Depth, PPD Flicker Metric) on tiny random PPVD checkpoints."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from pack_nodes import node
from tiny_models import tiny_dit_state_dict
from tiny_ppvd import write_tiny_ppvd

FAST = {"process_width": 32, "process_height": 32}       # the smallest size the video DiT takes


@pytest.fixture()
def video_model(pack, comfy_env):
    write_tiny_ppvd(Path(comfy_env.folder_paths.get_folder_paths("ppd")[-1]))
    model, = node(pack, "PPD_LoadVideoModel").load("ppvd.pth", "pi3.safetensors", "auto")
    return model


def frames(n: int, h: int = 20, w: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, h, w, 3), generator=torch.Generator().manual_seed(seed))


def run(pack, model, images, steps: int = 2, seed: int = 0, **sizes):
    out = node(pack, "PPD_VideoDepth").predict(model, images, steps, seed, **{**FAST, **sizes})
    return out["ui"], out["result"]


def test_loader_wraps_the_model_for_the_memory_manager(video_model):
    container = video_model.patcher.model
    assert type(container).__name__ == "ModelBundle"                  # what ComfyUI's log names
    assert container.dit is video_model.engine.dit and container.encoder is video_model.engine.encoder


def test_loaders_refuse_each_others_files(pack, comfy_env, video_model):
    folder = comfy_env.folder_paths.get_folder_paths("ppd")[-1]
    torch.save(tiny_dit_state_dict(), f"{folder}/image_dit.pth")
    with pytest.raises(ValueError, match="image model \\(PPD\\); use the image nodes"):
        node(pack, "PPD_LoadVideoModel").load("image_dit.pth", "pi3.safetensors", "auto")
    with pytest.raises(ValueError, match="video model \\(PPVD\\); use the video nodes"):
        node(pack, "PPD_LoadModel").load("ppvd.pth", "depth_anything_v2_vitl.pth", "auto")
    with pytest.raises(ValueError, match="Pi3 is the semantic encoder of the video model"):
        node(pack, "PPD_LoadModel").load("ppd.pth", "pi3.safetensors", "auto")
    Path(folder, "pi3.safetensors").unlink()                               # Pi3 missing: where to get it
    with pytest.raises(ValueError, match="download https://huggingface.co/yyfz233/Pi3/resolve/main/model.safetensors"):
        node(pack, "PPD_LoadVideoModel").load("ppvd.pth", "pi3.safetensors", "auto")
    Path(folder, "ppvd.pth").unlink()                                      # both missing: both named at once
    with pytest.raises(ValueError, match="(?s)2 missing.*ppvd.pth.*Google Drive.*pi3.safetensors"):
        node(pack, "PPD_LoadVideoModel").load("ppvd.pth", "pi3.safetensors", "auto")


def test_outputs_match_the_image_sampler_and_the_pipeline(pack, comfy_env, video_model):
    images = frames(3)
    ui, (packet, depth_image, summary, per_frame, depth_video, files) = run(pack, video_model, images, seed=5)
    image_packet_keys = {"depth", "spread", "image", "input_size", "kind"}   # nodes/depth.py's PPD_DEPTH
    assert set(packet) == image_packet_keys and packet["kind"] == "ppd" and packet["input_size"] == (20, 28)
    assert packet["depth"].shape == (3, 1, 20, 28) and packet["image"].shape == (3, 3, 20, 28)
    pipe = video_model.engine.at_size((32, 32))
    noise = torch.randn((16, 1, 32, 32), generator=torch.Generator().manual_seed(5))
    assert torch.equal(packet["depth"], pipe(images.movedim(-1, 1), steps=2, noise=noise))
    # near = white over the whole clip: one range, so only the clip's extremes reach 0 and 1
    grey = depth_image[..., 0]
    assert depth_image.shape == (3, 20, 28, 3) and float(grey.min()) == 0.0 and float(grey.max()) == 1.0
    d = packet["depth"][:, 0]
    assert torch.equal(grey.flatten().argmin(), d.flatten().argmax())      # the farthest pixel is black
    assert "3 frames 28 x 20, 1 window(s)" in summary and ui["text"] == [summary]
    assert len(per_frame.splitlines()) == 4                                 # header + one line per frame
    render, _ = node(pack, "PPD_DepthRender").render(packet, "colormap", "spectral", "whole batch", "input")
    assert render.shape == (3, 20, 28, 3)
    metric = node(pack, "PPD_FlickerMetric").measure(packet)["result"]
    assert metric[0] in summary and metric[1] == per_frame
    assert torch.equal(depth_video.get_components().images, depth_image) and files == ""     # frames: in memory


def test_progress_per_window_and_step_and_cancel_between_steps(pack, comfy_env, video_model, progress_seen):
    seen = progress_seen(cancel_at=3)                                       # Cancel during window 2
    with pytest.raises(comfy_env.InterruptProcessingException):
        run(pack, video_model, frames(20), steps=2)                         # 2 windows x 2 evaluations
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4)]               # 0 at once; stopped before the 4th step


@pytest.mark.parametrize("images, match", [
    (torch.zeros(0, 20, 28, 3), "no frames"),
    ([frames(2), frames(1, 24, 28)], "one size"),
    (frames(2, 20, 28)[..., :2], "2 channels"),
])
def test_bad_frames(pack, video_model, images, match):
    with pytest.raises(ValueError, match=match):
        run(pack, video_model, images)


def test_a_list_of_same_size_batches_is_one_clip(pack, video_model):
    _, (packet, *_) = run(pack, video_model, [frames(2), frames(1, seed=1)])
    assert packet["depth"].shape == (3, 1, 20, 28)


def test_long_clip_on_cpu_warns_with_an_estimate(pack, comfy_env, video_model, monkeypatch, caplog):
    video_steps = pack.comfyui_ppd.families.ppvd.steps        # the pack's own engine copy, as the node uses it
    monkeypatch.setattr(video_steps, "video_seconds", lambda pipe, n, steps=4: 7200.0)
    with caplog.at_level(logging.WARNING, logger="comfyui_ppd"):
        ui, (_, _, summary, *_) = run(pack, video_model, frames(2))
    assert "will take roughly 2.0 h" in summary and "2.0 h" in caplog.text
    assert summary.splitlines()[0] in ui["text"][0]


def test_time_estimate_is_flop_over_measured_rate(pack, video_model, monkeypatch):
    """video_seconds = windows x window FLOP / the measured matmul rate (1-16 frames: 1 window; 17-29: 2)."""
    video_steps = pack.comfyui_ppd.families.ppvd.steps
    from comfyui_ppd.families.ppvd.flops import window_flop
    pipe = video_model.engine.at_size((32, 64))
    assert video_steps.matmul_rate(pipe.device) > 0
    monkeypatch.setattr(video_steps, "matmul_rate", lambda device: 1e9)
    flop = window_flop(pipe.dit.config, pipe.encoder.config, 32, 64, 4)
    assert video_steps.video_seconds(pipe, 16) == flop / 1e9 and video_steps.video_seconds(pipe, 29) == 2 * flop / 1e9
    assert video_steps.long_video_warning(pipe, 2, limit_s=1e9) is None


def test_flicker_metric_on_one_frame_and_bad_input(pack):
    one = {"depth": torch.rand(1, 1, 8, 8), "spread": None, "image": None, "input_size": (8, 8), "kind": "ppd"}
    summary, table, change, jump = node(pack, "PPD_FlickerMetric").measure(one)["result"]
    assert "one frame" in summary and table == "" and change != change and jump != jump
    with pytest.raises(ValueError, match="PPD_DEPTH"):
        node(pack, "PPD_FlickerMetric").measure("depth")


# --- a core VIDEO (Load Video) streamed window by window ----------------------------------------------------------
def stream(pack, comfy_env, model, clip, **kwargs):
    """-> (every text the node showed, outputs)."""
    from comfy_api.latest import InputImpl
    out = node(pack, "PPD_VideoDepth").predict(model, None, 1, 0, **FAST, video=InputImpl.VideoFromFile(str(clip)),
                                               **kwargs)
    return out.texts, out["result"]


@pytest.fixture()
def clip(tmp_path):
    from scenes import write_example_clip
    path = tmp_path / "pan.mp4"
    write_example_clip(str(path), frames=20, height=24, width=36)        # 2 windows
    return path


def test_video_input_streams_to_a_depth_video_and_files(pack, comfy_env, video_model, clip):
    from comfy_execution.graph_utils import ExecutionBlocker

    from comfyui_ppd.io.video import read_video
    texts, (packet, depth_image, summary, per_frame, depth_video, files) = stream(pack, comfy_env, video_model, clip)
    assert all(isinstance(v, ExecutionBlocker) for v in (packet, depth_image, per_frame))    # would hold the clip
    out = Path(comfy_env.folder_paths.get_output_directory())
    assert files == str(out / "ppd_video" / "depth_00001")
    assert Path(depth_video.get_stream_source()) == out / "ppd_video" / "depth_00001_depth_grey.mp4"
    from comfyui_ppd.io.video import VideoSource
    assert depth_video.get_dimensions() == (36, 24) and VideoSource(depth_video.get_stream_source()).fps == 12
    assert len(list((out / "ppd_video" / "depth_00001_depth16").iterdir())) == 20
    assert not list((out / "ppd_video").glob("*.partial.f32")) and "20 frames 36 x 24 at 12 fps" in summary
    # the same depth as the IMAGE-batch path on the decoded frames
    raw = __import__("numpy").load(out / "ppd_video" / "depth_00001_depth.npz")["depth"]
    _, (batch, *_) = run(pack, video_model, read_video(clip).rgb.float() / 255, steps=1)
    assert torch.equal(torch.from_numpy(raw), batch["depth"][:, 0])
    assert texts[0] == "window 0 of about 2" and texts[1].startswith("window 1 of about 2, about ")
    assert texts[2].startswith("window 2 of about 2, about 0 s left") and texts[-1] == summary


def test_video_input_progress_per_window_and_cancel_leaves_nothing(pack, comfy_env, video_model, clip,
                                                                   progress_seen):
    seen = progress_seen(cancel_at=1)                                       # Cancel during window 2
    with pytest.raises(comfy_env.InterruptProcessingException):
        stream(pack, comfy_env, video_model, clip)
    assert seen == [(0, 2), (1, 2)]                     # 0 of 2 windows at once, then window 1; stopped in window 2
    folder = Path(comfy_env.folder_paths.get_output_directory()) / "ppd_video"
    assert not [p for p in folder.iterdir() if p.is_file()]                      # working files removed


def test_video_and_frames_together_or_neither_are_refused(pack, comfy_env, video_model, clip):
    from comfy_api.latest import InputImpl
    with pytest.raises(ValueError, match="not both"):
        node(pack, "PPD_VideoDepth").predict(video_model, frames(2), 1, 0, **FAST,
                                             video=InputImpl.VideoFromFile(str(clip)))
    with pytest.raises(ValueError, match="not neither"):
        node(pack, "PPD_VideoDepth").predict(video_model, None, 1, 0, **FAST)
