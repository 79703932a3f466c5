"""VideoDepthPipeline: frames -> temporally consistent depth with Pixel-Perfect Video Depth (PPVD).

The official `infer_video`, window by window: frames (as B,G,R) resized to the processing size ->
windows of 16 frames (stride 13; slots 0..2 of every later window hold keyframes: video frame 0 and the
previous window's slots 8 and 15) -> Pi3 semantics of the window -> Euler sampling of DiT_Video from
the same initial noise in every window -> prediction resized back to the frame size -> scale/shift
alignment of each window to the previous ones (align.py). Only the depth output grows with the video.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ... import runtime
from ...encoders.base import SemanticEncoder
from ...errors import InputError, PPDError
from ...sampling import sample, sampling_timesteps
from .align import KEYFRAMES, OVERLAP, WindowAligner
from .dit import VideoDiT

WINDOW = 16                   # frames per window
STRIDE = WINDOW - OVERLAP     # 13 new frames per later window
BGR = [2, 1, 0]               # the official pipeline converts to RGB twice: the networks see B,G,R
Frames = Tensor | Sequence[Tensor]
ProgressCallback = Callable[[int, int], None]


def window_plan(num_frames: int) -> list[list[int]]:
    """The video frame in each of the 16 slots of every window, as the official `infer_video` fills them.

    Window w >= 1 starts at 13w; its slots 0..2 are replaced by the previous window's slots 0, 8 and 15,
    so slot 0 is always frame 0. The video is padded with copies of its last frame to 16 + 13k frames.
    The official code makes no window for 1-3 frames (it crashes); here they are padded to one window
    exactly like 4-15 frames are, e.g. 1 frame -> [0]*16, 3 frames -> [0, 1, 2, 2, ...].
    """
    if num_frames < 1:
        raise InputError("the video has no frames; give at least one frame.")
    rest = (num_frames - WINDOW) % STRIDE
    padded = max(WINDOW, num_frames + (STRIDE - rest if rest else 0))
    plan: list[list[int]] = []
    for start in range(0, padded - WINDOW + 1, STRIDE):
        slots = [min(i, num_frames - 1) for i in range(start, start + WINDOW)]
        if plan:
            slots[:OVERLAP] = [plan[-1][k] for k in KEYFRAMES]
        plan.append(slots)
    return plan


def validate_frames(frames: Frames) -> tuple[int, int, int]:
    """Check frames (N,3,H,W) or a sequence of (3,H,W): RGB, one size, finite floats in [0,1]; -> (N, H, W).

    Values are checked 16 frames at a time, so a long video is never copied whole.
    """
    if isinstance(frames, Tensor):
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise InputError(f"expected RGB frames (N,3,H,W), got shape {tuple(frames.shape)}; convert to 3 "
                             "channels first (ComfyUI IMAGE batches are (N,H,W,3): permute(0,3,1,2)).")
        sizes = {tuple(frames.shape[-2:])}
    elif isinstance(frames, Sequence) and all(isinstance(f, Tensor) for f in frames):
        bad = [i for i, f in enumerate(frames) if f.ndim != 3 or f.shape[0] != 3]
        if bad:
            raise InputError(f"frame {bad[0]} has shape {tuple(frames[bad[0]].shape)}; every frame must be RGB "
                             "(3,H,W).")
        sizes = {tuple(f.shape[-2:]) for f in frames}
    else:
        raise InputError("expected a frame tensor (N,3,H,W) or a list of (3,H,W) tensors, got "
                         f"{type(frames).__name__}.")
    n = len(frames)
    if n == 0:
        raise InputError("the video has no frames; give at least one frame.")
    if len(sizes) > 1:
        raise InputError(f"all frames must have one size, found {len(sizes)}: {sorted(sizes)[:4]}; resize them "
                         "to a common size first.")
    h, w = sizes.pop()
    if h < 1 or w < 1:
        raise InputError(f"frames are {h}x{w} px; give frames with at least one pixel.")
    for start in range(0, n, WINDOW):
        chunk = gather(frames, list(range(start, min(start + WINDOW, n))))
        if not chunk.is_floating_point():
            raise InputError(f"expected float pixels in [0,1], got {chunk.dtype}; divide 8-bit frames by 255.")
        finite = torch.isfinite(chunk)
        if not finite.all():
            raise InputError(f"frames {start}..{start + len(chunk) - 1} hold {(~finite).sum().item()} NaN or "
                             "infinite values; fix the node that produced them.")
        lo, hi = chunk.min().item(), chunk.max().item()
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(f"pixel values must lie in [0,1], frames {start}..{start + len(chunk) - 1} hold "
                             f"{lo:.3g}..{hi:.3g}; divide 8-bit frames by 255.")
    return n, h, w


def gather(frames: Frames, index: list[int]) -> Tensor:
    """The frames at `index` as one (len, 3, H, W) tensor."""
    if isinstance(frames, Tensor):
        return frames[torch.tensor(index, device=frames.device)]
    return torch.stack([frames[i] for i in index])


def network_frames(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """RGB frames (N,3,H,W) in [0,1] -> what the networks see: B,G,R order, bilinear (no antialias) to `size`."""
    x = frames.float().clamp(0, 1)[:, BGR]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@dataclass
class VideoDepthResult:
    """depth (N,1,H,W) float32 at the frames' size; the (scale, shift) fitted for each window after the first."""

    depth: Tensor
    scale_shift: list[tuple[float, float]]
    windows: list[list[int]]


class VideoDepthPipeline(runtime.DiTPrecision):
    """`pipe(frames, steps=4, noise=None, generator=None)` -> depth (N,1,H,W), larger = farther, aligned
    across windows; frames (N,3,H,W) RGB in [0,1] (or a list of (3,H,W)), any N >= 1.

    1-3 frames (an official crash) are padded with copies of the last frame to one 16-frame window, the
    official rule for 4-15 frames; the result equals running that padded clip and keeping the first N.
    """

    dit: VideoDiT

    def __init__(self, dit: VideoDiT, encoder: SemanticEncoder, *, process_size: tuple[int, int] = (512, 512),
                 autocast: torch.dtype | None | str = "auto") -> None:
        """`process_size` (height, width): multiples of 16, at least 32 (512x512 is the trained size);
        `autocast`: "auto" (runtime's precision policy for the DiT's weight dtype: the official bf16, else fp16,
        on CUDA for fp32 weights; none elsewhere), a dtype, or None."""
        if not isinstance(dit, VideoDiT):
            raise InputError(f"VideoDepthPipeline needs the PPVD video DiT (ppvd.pth), got {type(dit).__name__}; "
                             "the image DiT (ppd.pth) goes to PPDPipeline.")
        if encoder.semantic_dim != dit.config.semantic_dim:
            raise InputError(f"the video DiT expects {dit.config.semantic_dim}-wide semantics but the {encoder.kind} "
                             f"encoder gives {encoder.semantic_dim}; pair ppvd.pth with pi3.safetensors.")
        h, w = (int(s) for s in process_size)
        m, low = dit.config.size_multiple, dit.config.min_side
        if h < low or w < low or h % m or w % m:
            raise InputError(f"process_size must be (height, width) with multiples of {m}, at least {low}, got "
                             f"{process_size}; PPVD was trained at (512, 512).")
        self.dit, self.encoder, self.process_size = dit, encoder, (h, w)
        self._autocast = autocast

    def at_size(self, process_size: tuple[int, int]) -> VideoDepthPipeline:
        """The same weights and precision at another processing size (height, width)."""
        return VideoDepthPipeline(self.dit, self.encoder, process_size=process_size, autocast=self._autocast)

    def autocast_dtype(self) -> torch.dtype | None:
        """The official code autocasts on every device (fp16 on a CPU); the policy autocasts on CUDA only."""
        if isinstance(self._autocast, str):                              # "auto": the precision policy
            return runtime.autocast_for(self.device, self.weight_dtype)
        return self._autocast

    def activation_bytes(self) -> int:
        """Peak activation memory of one window, an estimate like PPDPipeline's: ~12 (tokens, width) tensors
        for the 16 frames' fine-grid DiT tokens or Pi3's tokens, whichever is larger (4 bytes each in fp32,
        ~3 under half-precision autocast); SDPA keeps no N^2 score matrix."""
        h, w = self.process_size
        c = self.dit.config
        dit = (h // c.patch_size) * (w // c.patch_size) * c.hidden_size
        pi3 = ((h // 16) * (w // 16) + 5) * self.encoder.semantic_dim // 2
        compute = self.autocast_dtype() or self.weight_dtype
        return 12 * WINDOW * max(dit, pi3) * (4 if compute == torch.float32 else 3)

    def noise(self, noise: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """The (16,1,h,w) initial latent shared by every window: given, drawn from `generator`, or global RNG."""
        shape = (WINDOW, 1, *self.process_size)
        if noise is None:
            device = generator.device if generator is not None else "cpu"
            noise = torch.randn(shape, generator=generator, device=device)
        if tuple(noise.shape) != shape:
            raise InputError(f"noise must have shape {shape} (window, 1, processing height, width), "
                             f"got {tuple(noise.shape)}.")
        return noise.float()

    @torch.inference_mode()
    def window_prediction(self, frames: Tensor, noise: Tensor, steps: int,
                          callback: ProgressCallback | None = None) -> Tensor:
        """One window: RGB frames (16,3,H,W) -> prediction (16,1,h,w) at the processing size (latent + 0.5)."""
        x = network_frames(frames.to(self.device), self.process_size)
        with self.autocast():
            semantics = self.encoder(x).float()
            cond = x - 0.5
            latent = sample(lambda z, t: self.dit(torch.cat([z, cond], dim=1), semantics, t),
                            noise.to(self.device), steps, callback)
        if not torch.isfinite(latent).all():
            raise PPDError("the model produced NaN/inf depth; with fp16 weights this is an overflow: "
                           "use bf16 or fp32 precision.")
        return latent + 0.5

    def run(self, frames: Frames, steps: int = 4, noise: Tensor | None = None,
            generator: torch.Generator | None = None, callback: ProgressCallback | None = None) -> VideoDepthResult:
        """Depth for every frame plus the alignment record; `callback(done, total)` after every DiT evaluation
        (windows x evaluations in total) may raise to stop between steps."""
        n_evals = len(sampling_timesteps(steps))
        n, h, w = validate_frames(frames)
        noise = self.noise(noise, generator)
        plan = window_plan(n)
        total = len(plan) * n_evals
        depth = torch.empty((n, 1, h, w), dtype=torch.float32)
        aligner, written = WindowAligner(), 0
        for i, slots in enumerate(plan):
            def step(done: int, _: int, base: int = i * n_evals) -> None:
                if callback is not None:
                    callback(base + done, total)

            pred = self.window_prediction(gather(frames, slots), noise, steps, step)
            pred = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False)
            new = aligner.add(pred[:, 0].cpu())[: n - written]
            depth[written: written + len(new), 0] = new
            written += len(new)
        return VideoDepthResult(depth, aligner.scale_shift, plan)

    def __call__(self, frames: Frames, steps: int = 4, noise: Tensor | None = None,
                 generator: torch.Generator | None = None, callback: ProgressCallback | None = None) -> Tensor:
        """depth (N,1,H,W) float32 at the frames' size, aligned across windows as the official `infer_video`."""
        return self.run(frames, steps, noise, generator, callback).depth
