"""Video depth with PPVD: Load PPD Video Model (ppvd.pth + pi3.safetensors), PPD Video Depth, PPD Flicker Metric.

PPD Video Depth gives the same PPD_DEPTH packet as the image sampler (see nodes/depth.py), with the depth at the
frames' own size (the video pipeline resizes back itself), so Render, Save, Point Cloud and Edge Metric work on it.
"""
from __future__ import annotations

import math
import time
from fractions import Fraction
from pathlib import Path

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import InputImpl, Types, io
from comfy_execution.graph_utils import ExecutionBlocker

from ..comfyui_ppd import imaging, runtime
from ..comfyui_ppd.errors import InputError
from ..comfyui_ppd.families.ppvd import clip as video_clip
from ..comfyui_ppd.families.ppvd import steps as video_steps
from ..comfyui_ppd.families.ppvd import window_plan
from ..comfyui_ppd.families.ppvd.stream import windows_for
from ..comfyui_ppd.io.video import VideoSource
from ..comfyui_ppd.sampling import sampling_timesteps
from .common import (
    LoadedModel,
    ModelBundle,
    PPDDepth,
    VideoModel,
    cancellable,
    check_depth,
    image_to_bchw,
    loaded,
    log,
    model_input,
    model_paths,
    node_id,
    output,
    patcher,
    progress,
    schema,
    show_text,
    to_image,
    validate_file_names,
)

ALIASES = ["video", "video depth", "temporal depth", "consistent depth", "ppvd", "pixel perfect video depth",
           "flicker", "frames", "ppd"]


def frames_to_bchw(image) -> torch.Tensor:
    """IMAGE (N,H,W,C), or a list of IMAGE batches of one size, -> (N,3,H,W); clear errors otherwise."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise InputError("the video has no frames; connect a batch of at least one frame.")
        sizes = sorted({tuple(i.shape[1:3]) for i in image})
        if len(sizes) > 1:
            raise InputError(f"all frames must have one size, found {len(sizes)}: {sizes[:4]}; resize them to "
                             "a common size first (e.g. core Upscale Image).")
        image = torch.cat(list(image))
    if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] == 0:
        raise InputError("the video has no frames (an empty IMAGE batch); check the Load Video / Get Video "
                         "Components nodes.")
    return image_to_bchw(image)


class PPD_LoadVideoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_LoadVideoModel", "Load PPD Video Model",
            "Loads Pixel-Perfect Video Depth (PPVD): the video DiT ppvd.pth and its semantic encoder "
            "pi3.safetensors from models/ppd. ComfyUI moves it to the GPU for work and offloads it when other "
            "models need the memory.",
            ALIASES + ["video model", "pi3", "video depth loader"],
            inputs=[
                model_input("dit_name", "video_dit",
                            "The PPVD video DiT in models/ppd: ppvd.pth (Google Drive only; see the pack's README). "
                            "The image DiT ppd.pth belongs to Load PPD Model."),
                model_input("encoder_name", "video_encoder",
                            "Pi3, the video model's semantic encoder: pi3.safetensors (Hugging Face yyfz233/Pi3, "
                            "model.safetensors). Only its encoder and decoder are used."),
                io.Combo.Input("precision", options=list(runtime.CHOICES), default="auto",
                               tooltip="auto: the official numerics, fp32 weights with bf16 autocast on CUDA (fp16 "
                                       "where the GPU has no bf16), fp32 elsewhere. fp16/bf16: half-precision "
                                       "weights computed in that dtype. fp32: no autocast. On the CPU everything "
                                       "runs in fp32."),
            ],
            outputs=[output(VideoModel, "video_model", "The loaded video model, for PPD Video Depth.")],
            hidden=[io.Hidden.prompt],
        )

    @classmethod
    def validate_inputs(cls, dit_name, encoder_name):
        return validate_file_names(dit_name=dit_name, encoder_name=encoder_name)

    @classmethod
    def execute(cls, dit_name: str, encoder_name: str, precision: str) -> io.NodeOutput:
        paths = model_paths({"video_dit": dit_name, "video_encoder": encoder_name},
                            getattr(cls.hidden, "prompt", None))
        pipeline = video_steps.load_video_pipeline(paths["video_dit"], paths["video_encoder"],
                                             runtime.precision(precision, mm.get_torch_device()),
                                             device=mm.unet_offload_device())
        bundle = ModelBundle(pipeline.dit, pipeline.encoder)
        return io.NodeOutput(LoadedModel(pipeline, patcher(bundle), (dit_name, encoder_name)))


SIZE = {"min": 32, "max": 2048, "step": 16}


class PPD_VideoDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_VideoDepth", "PPD Video Depth",
            "Depth for a video with PPVD: windows of 16 frames with temporal attention and keyframes, each "
            "window's scale and shift aligned to the previous ones, so the depth does not flicker. Connect a VIDEO "
            "(core Load Video) for any length in the memory of one window: it streams window by window into "
            "depth_video (for Save Video) and raw files in the output folder. Or connect frames (an IMAGE batch) "
            "for short clips: the same outputs as PPD Depth Sampler plus a flicker readout.",
            ALIASES + ["depth", "depth map", "video to depth", "controlnet depth"],
            inputs=[
                VideoModel.Input("video_model", tooltip="The model from Load PPD Video Model."),
                io.Image.Input("frames", optional=True,
                               tooltip="The video frames as an IMAGE batch (any size), e.g. from core Get Video "
                                       "Components: the whole clip is held in memory as float, so use it for short "
                                       "clips and frames from other nodes. Connect this or video, not both."),
                io.Video.Input("video", optional=True,
                               tooltip="A VIDEO (core Load Video): streamed window by window, so any length runs in "
                                       "the memory of one window. Gives depth_video and the raw files; ppd_depth, "
                                       "depth_image and flicker_per_frame are left out (they would hold the clip)."),
                io.Int.Input("steps", default=4, min=1, max=50,
                             tooltip="Sampling steps per window. 4 is the official default."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; every window starts from the same noise, as in the official "
                                     "pipeline. The same seed gives the same depth on every device."),
                io.Int.Input("process_width", default=512, **SIZE,
                             tooltip="Width the networks work at (multiple of 16). PPVD was trained at 512x512; "
                                     "the depth is resized back to the frame size."),
                io.Int.Input("process_height", default=512, **SIZE,
                             tooltip="Height the networks work at (multiple of 16); 512 is the trained size."),
                io.String.Input("filename_prefix", default="ppd_video/depth", optional=True,
                                tooltip="VIDEO input only: where the depth goes in the output folder: "
                                        "<prefix>_NNNNN_depth.mp4 (ControlNet grey, near = white; the depth_video "
                                        "output), _depth16/ (16-bit PNG per frame) and _depth.npz (raw float)."),
            ],
            outputs=[
                output(PPDDepth, "ppd_depth", "Raw depth (normalised log-depth, larger = farther) at the "
                                              "frames' size, for Render / Save / Point Cloud / Edge Metric "
                                              "nodes."),
                output(io.Image, "depth_image", "Depth frames at the input size, near = white, normalised "
                                                "over the whole clip (no flicker from normalisation): wire "
                                                "it into a depth ControlNet or Create Video."),
                output(io.String, "summary", "Frames, windows, flicker figures (and a run-time warning for "
                                             "long clips on a CPU); also shown on the node."),
                output(io.String, "flicker_per_frame", "Per-frame flicker values as tab-separated text: "
                                                       "scale and shift relative to frame 0, change and "
                                                       "residual to the previous frame (every pixel counted "
                                                       "as static)."),
                output(io.Video, "depth_video", "The depth as a VIDEO at the clip's size and frame rate, ControlNet "
                                                "grey (near = white) normalised over the whole clip: for Save Video. "
                                                "With frames (IMAGE) input it plays at 24 fps."),
                output(io.String, "depth_files", "VIDEO input: the folder and name of the raw files written "
                                                 "(16-bit PNG sequence, .npz float depth, the .mp4)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, video_model, frames=None, steps: int = 4, seed: int = 0, process_width: int = 512,
                process_height: int = 512, video=None, filename_prefix: str = "ppd_video/depth") -> io.NodeOutput:
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}.")
        if (frames is None) == (video is None):
            raise InputError("connect either frames (an IMAGE batch) or video (a VIDEO from Load Video), not "
                             f"{'both' if frames is not None else 'neither'}.")
        model = loaded(video_model, "video_model", "Load PPD Video Model")
        pipe = model.engine.at_size((process_height, process_width))
        if video is not None:
            return cls.stream(model, pipe, video, steps, seed, filename_prefix)
        x = frames_to_bchw(frames)
        n, _, h, w = x.shape
        notes = []
        warning = video_steps.long_video_warning(pipe, n, steps)
        if warning:
            log.warning(warning)
            notes.append(warning)
            show_text(cls, warning)
        model.load(pipe.activation_bytes())
        total = len(window_plan(n)) * len(sampling_timesteps(steps))
        with cancellable(pipe.dit, pipe.encoder):   # the bar shows 0 at once; Cancel acts within a block
            result = video_steps.predict_video(pipe, x, steps=steps, seed=seed, progress=progress(total, node_id(cls)))
        depth = result.depth
        packet = {"depth": depth, "spread": None, "image": x.cpu(), "input_size": (h, w), "kind": "ppd"}
        rgb, _ = imaging.render_depth(depth, "controlnet", per_image=False)
        summary, table = video_steps.flicker_text(video_steps.flicker_report(depth))
        text = show_text(cls, "\n".join([*notes, f"{n} frames {w} x {h}, {len(result.windows)} window(s) at "
                                         f"{process_width} x {process_height}, {steps} steps; {summary}"]))
        image = to_image(rgb)
        clip = InputImpl.VideoFromComponents(Types.VideoComponents(images=image, frame_rate=Fraction(24)))
        return io.NodeOutput(packet, image, text, table, clip, "")

    @classmethod
    def stream(cls, model, pipe, video, steps: int, seed: int, filename_prefix: str) -> io.NodeOutput:
        """A VIDEO through families/ppvd/clip.py: one window in memory, files in the output folder."""
        source = video_file(video)
        out_dir, stem = output_stem(filename_prefix)
        evals = len(sampling_timesteps(steps))
        count = VideoSource(source).frame_count                 # the container's count: an estimate, may be None
        model.load(pipe.activation_bytes())
        report = window_progress(cls, evals, windows_for(count) if count else 1)
        try:
            with cancellable(pipe.dit, pipe.encoder):
                done = video_clip.predict_video_file(pipe, source, out_dir, stem=stem, steps=steps, seed=seed,
                                                     preview="controlnet", progress=report,
                                                     warn=lambda text: log.warning(text))
        except mm.InterruptProcessingException:
            for path in video_clip.working_paths(out_dir, stem).values():     # a cancelled run leaves nothing
                path.unlink(missing_ok=True)
            raise
        h, w = done["size"]
        files = done["paths"]
        text = show_text(cls, f"{done['frames']} frames {w} x {h} at {done['fps']:.3g} fps, streamed at "
                              f"{pipe.process_size[1]} x {pipe.process_size[0]}, {steps} steps; "
                              f"files: {out_dir / stem}_depth*")
        blocked = ExecutionBlocker("PPD Video Depth: ppd_depth, depth_image and flicker_per_frame are not made for "
                                   "a streamed VIDEO (they would hold the whole clip); use depth_video and the files "
                                   "in depth_files, or connect frames instead of video.")
        return io.NodeOutput(blocked, blocked, text, blocked, InputImpl.VideoFromFile(str(files["preview"])),
                             str(out_dir / stem))


def video_file(video) -> Path:
    """The file behind a core VIDEO (Load Video's VideoFromFile), untrimmed; anything else -> InputError."""
    get = getattr(video, "get_stream_source", None)
    source = get() if get is not None else None
    if not isinstance(source, str):
        raise InputError("PPD Video Depth streams a VIDEO loaded from a file (core Load Video); this one is in "
                         "memory (e.g. made by Create Video): connect its frames (an IMAGE batch) instead.")
    trim = getattr(video, "get_active_trim_window", lambda: (0.0, 0.0))()
    if any(trim):
        raise InputError("a trimmed VIDEO (Video Slice) is not streamed yet; trim the file, or connect its frames "
                         "(Get Video Components) instead.")
    return Path(source)


def output_stem(prefix: str) -> tuple[Path, str]:
    """(folder, unique file stem) in ComfyUI's output folder for `prefix`, numbered like Save Image's files."""
    root = folder_paths.get_output_directory()
    folder, name, counter, _, _ = folder_paths.get_save_image_path(prefix, root)
    return Path(folder), f"{name}_{counter:05}"


def window_progress(cls, evals: int, windows: int):
    """progress() for a streamed clip (the bar at 0 of the estimated total at once) plus, after every window,
    "window k of K, about T s left" on the node."""
    start, bar = time.monotonic(), progress(windows * evals, node_id(cls))
    show_text(cls, f"window 0 of about {windows}")

    def callback(done: int, total: int) -> None:
        bar(done, total)
        if done % evals == 0:
            windows, k = total // evals, done // evals
            left = (time.monotonic() - start) / k * max(windows - k, 0)
            show_text(cls, f"window {k} of about {windows}, about {left:.0f} s left")

    return callback


class PPD_FlickerMetric(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            "PPD_FlickerMetric", "PPD Flicker Metric",
            "Measures how much a depth video flickers: for each pair of neighbouring frames the scale and shift "
            "that best align them, and the frame-to-frame change before and after that fit. Exact depth scores 0. "
            "Every pixel counts as static, so use it on a still (or slow) camera, or read it as a comparison "
            "between models on the same clip.",
            ALIASES + ["temporal consistency", "flicker metric", "stability"],
            inputs=[PPDDepth.Input("ppd_depth", tooltip="Depth of a frame batch: from PPD Video Depth, or from PPD "
                                                        "Depth Sampler run on the frames (to compare the image "
                                                        "model).")],
            outputs=[
                output(io.String, "summary", "One line (also shown on the node)."),
                output(io.String, "per_frame", "Per-frame values, tab-separated: log-scale and shift "
                                               "relative to frame 0, change and residual to the previous "
                                               "frame."),
                output(io.Float, "change_percent", "Mean frame-to-frame change in % of the depth range "
                                                   "(2-98 %)."),
                output(io.Float, "scale_jump_percent", "RMS of the neighbour-to-neighbour scale jumps in %."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, ppd_depth) -> io.NodeOutput:
        check_depth(ppd_depth)
        report = video_steps.flicker_report(ppd_depth["depth"])
        summary, table = video_steps.flicker_text(report)
        change = report.percent_of_range(report.mean_change) if report else math.nan
        jump = 100 * report.scale_jump if report else math.nan
        return io.NodeOutput(show_text(cls, summary), table, change, jump)
