"""PPDPipeline: image -> depth. Resize to the processing size, semantics once per image, Euler sampling.

depth = final latent + 0.5: an affine-invariant, per-image normalised log(1 + depth), larger = farther,
at the processing resolution (resizing back to the input size is the caller's choice).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ... import imaging, runtime
from ...align import fit_affine
from ...encoders.base import SemanticEncoder
from ...errors import InputError, PPDError
from ...sampling import make_noise, sample, sampling_timesteps
from . import pairing_problem
from .dit import PPDDiT

ProgressCallback = Callable[[int, int], None]


def validate_image(image: Tensor, min_side: int) -> Tensor:
    """Check an RGB batch (B,3,H,W) of finite floats in [0,1], sides >= min_side; return it as float32."""
    if not isinstance(image, Tensor):
        raise InputError(f"expected an image tensor (B,3,H,W), got {type(image).__name__}.")
    if image.ndim == 3:
        image = image[None]
    if image.ndim == 4 and image.shape[1] != 3 and image.shape[-1] in (3, 4):
        raise InputError(f"expected an RGB image batch (B,3,H,W), got shape {tuple(image.shape)}: channels last "
                         "(B,H,W,C), as a ComfyUI IMAGE is. Use image[..., :3].permute(0, 3, 1, 2).")
    if image.ndim != 4 or image.shape[1] != 3:
        channels = image.shape[1] if image.ndim == 4 else "?"
        raise InputError(f"expected an RGB image batch (B,3,H,W), got shape {tuple(image.shape)} "
                         f"({channels} channels); convert it to RGB first (repeat a grey channel, drop an alpha "
                         "channel).")
    if image.shape[0] == 0:
        raise InputError("the image batch is empty.")
    if min(image.shape[-2:]) < min_side:
        raise InputError(f"image is {image.shape[-1]} x {image.shape[-2]} px (W x H); PPD needs at least {min_side} px "
                         "on each side. Use a larger image.")
    if not image.is_floating_point():
        raise InputError(f"expected float pixels in [0,1], got {image.dtype}; divide 8-bit images by 255.")
    image = image.float()
    bad = (~torch.isfinite(image)).sum().item()
    if bad:
        raise InputError(f"the image has {bad} NaN or infinite values; fix the node that produced it.")
    lo, hi = image.min().item(), image.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"pixel values must lie in [0,1], found {lo:.3g}..{hi:.3g}; divide 8-bit images by 255.")
    return image.clamp(0, 1)


@dataclass
class Prepared:
    """An image batch ready for sampling: resized image (B,3,h,w), semantics (B,N,C), input size."""

    image: Tensor
    semantics: Tensor
    input_size: tuple[int, int]


@dataclass
class DepthResult:
    """depth (B,1,h,w) normalised log-depth; spread (B,1,h,w) across an ensemble, or None."""

    depth: Tensor
    spread: Tensor | None
    image: Tensor
    input_size: tuple[int, int]


class PPDPipeline(runtime.DiTPrecision):
    """`pipe(image, steps=4, noise=None, generator=None, resize=True)` -> depth (B,1,h,w)."""

    dit: PPDDiT

    def __init__(self, dit: PPDDiT, encoder: SemanticEncoder, *, area: int = imaging.DEFAULT_AREA,
                 autocast: torch.dtype | None | str = "auto", compile: bool | str = False) -> None:
        """`autocast`: "auto" (runtime's precision policy for the DiT's weight dtype), a dtype, or None;
        `compile`: torch.compile the DiT blocks (True, or a torch.compile mode), eager if it fails."""
        check_pair(dit, encoder)
        self.dit, self.encoder, self.area = dit, encoder, area
        self._autocast = autocast
        if compile:
            runtime.compile_blocks(dit, mode=None if compile is True else compile)

    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype in use; autocast runs only on CUDA, where the official code uses it."""
        if self.device.type != "cuda":
            return None
        if isinstance(self._autocast, str):                              # "auto": the precision policy
            return runtime.autocast_for(self.device, self.weight_dtype)
        return self._autocast

    # -- stages -----------------------------------------------------------------------------
    def preprocess(self, image: Tensor, resize: bool = True, area: int | None = None,
                   long_side: int | None = None) -> Tensor:
        """Validate and resize as the official code does: to `area` (default the pipeline's, 1024x768) with
        the aspect kept, or to a `long_side`; sides multiples of 16; area filter when shrinking, else bicubic."""
        image = validate_image(image, self.dit.config.token_px)       # one coarse DiT token
        h, w = image.shape[-2:]
        px = self.dit.config.token_px
        if not resize:
            if h % px or w % px:
                raise InputError(f"with resize=False the image sides must be multiples of {px}, got {w} x {h} (W x H); "
                                 "use resize=True or crop/pad the image.")
            return image
        return imaging.resize_keep_aspect(image, area or self.area, long_side, multiple=px)

    @torch.inference_mode()
    def encode(self, image: Tensor) -> Tensor:
        """Semantic tokens (B, h/16*w/16, C) of a preprocessed image, computed once per image."""
        with self.autocast():
            return self.encoder(image.to(self.device), self.dit.config.token_px).float()

    @torch.inference_mode()
    def sample(self, image: Tensor, semantics: Tensor, steps: int = 4, noise: Tensor | None = None,
               callback: ProgressCallback | None = None) -> Tensor:
        """Euler sampling for a preprocessed image and its semantics -> depth (B,1,h,w) on the CPU."""
        sampling_timesteps(steps)                                   # validates steps before any work
        b, _, h, w = image.shape
        if noise is None:
            noise = torch.randn((b, 1, h, w))
        if tuple(noise.shape) != (b, 1, h, w):
            raise InputError(f"noise must have shape {(b, 1, h, w)} (batch, 1, processing height, width), "
                             f"got {tuple(noise.shape)}.")
        device = self.device
        with self.autocast():
            cond = self.dit.condition(image.to(device) - 0.5, semantics.to(device))
            latent = sample(lambda x, t: self.dit.forward_condition(x, cond, t), noise.to(device), steps, callback)
        if not torch.isfinite(latent).all():
            raise PPDError("the model produced NaN/inf depth; with fp16 weights this is an overflow: "
                           "use bf16 or fp32 precision.")
        return (latent + 0.5).cpu()

    def __call__(self, image: Tensor, steps: int = 4, noise: Tensor | None = None,
                 generator: torch.Generator | None = None, resize: bool = True) -> Tensor:
        """depth (B,1,h,w) = final latent + 0.5 at the processing resolution."""
        sampling_timesteps(steps)
        x = self.preprocess(image, resize=resize)
        if noise is None and generator is not None:
            noise = torch.randn((x.shape[0], 1, *x.shape[-2:]), generator=generator, device=generator.device)
        return self.sample(x, self.encode(x), steps, noise)

    # -- batches, seeds and ensembles -----------------------------------------------------------
    def prepare(self, image: Tensor, area: int | None = None, long_side: int | None = None,
                batch_size: int | None = None, callback: ProgressCallback | None = None) -> Prepared:
        """Resize (see `preprocess`) and encode a batch in chunks (the encoder runs once per image)."""
        x = self.preprocess(image, area=area, long_side=long_side)
        chunk = batch_size or self.max_batch(*x.shape[-2:])
        semantics = []
        for start in range(0, x.shape[0], chunk):
            semantics.append(self.encode(x[start:start + chunk]))
            if callback:
                callback(min(start + chunk, x.shape[0]), x.shape[0])
        return Prepared(x, torch.cat(semantics), (image.shape[-2], image.shape[-1]))

    def predict(self, prepared: Prepared, steps: int = 4, seed: int = 0, ensemble_size: int = 1,
                batch_size: int | None = None, callback: ProgressCallback | None = None) -> DepthResult:
        """Depth for every image; an ensemble runs `ensemble_size` seeds (seed, seed+1, ...) and merges them.

        Rows (image, seed) are sampled in chunks of `batch_size` (default: from a memory estimate);
        `callback(done, total)` counts DiT evaluations over the whole batch.
        """
        if ensemble_size < 1:
            raise InputError(f"ensemble_size must be >= 1, got {ensemble_size}.")
        n_evals = len(sampling_timesteps(steps))
        image, sem = prepared.image, prepared.semantics
        b, _, h, w = image.shape
        rows = [(i, k) for i in range(b) for k in range(ensemble_size)]
        noises = [make_noise(1, h, w, seed + k) for k in range(ensemble_size)]
        chunk = batch_size or self.max_batch(h, w)
        out = []
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            idx = torch.tensor([i for i, _ in part])
            noise = torch.cat([noises[k] for _, k in part])
            done_before = start * n_evals

            def step_cb(done: int, total: int, _base=done_before, _n=len(part)) -> None:
                if callback:
                    callback(_base + done * _n, len(rows) * n_evals)

            out.append(self.sample(image[idx], sem[idx], steps, noise, step_cb))
        members = torch.cat(out).view(b, ensemble_size, 1, h, w)
        if ensemble_size == 1:
            return DepthResult(members[:, 0], None, image, prepared.input_size)
        depth, spread = merge_ensemble(members)
        return DepthResult(depth, spread, image, prepared.input_size)

    def activation_bytes(self, height: int, width: int) -> int:
        """Peak activation memory of one image in one DiT step (see `activation_bytes`)."""
        return activation_bytes(self.dit, height, width, self.autocast_dtype())

    def max_batch(self, height: int, width: int) -> int:
        """How many images fit one forward pass: half the free memory over the per-image estimate."""
        return runtime.items_that_fit(self.device, self.activation_bytes(height, width))


def merge_ensemble(members: Tensor) -> tuple[Tensor, Tensor]:
    """(B,N,1,h,w) -> mean and std after aligning each member to the per-pixel median by scale and shift.

    PPD depth is affine-invariant, so members may differ by a scale and shift; least squares per member.
    """
    ref = members.median(dim=1, keepdim=True).values
    x = members.flatten(2)                                          # (B, N, P)
    scale, shift, _ = fit_affine(x, ref.flatten(2).expand_as(x))    # (B, N, 1) each
    aligned = (x * scale + shift).view_as(members)
    return aligned.mean(1), aligned.std(1, unbiased=False)


def check_pair(dit: PPDDiT, encoder: SemanticEncoder) -> None:
    """The DiT must be trained for this encoder's semantics: widths must agree, and the kind if known."""
    if not isinstance(dit, PPDDiT):
        raise InputError(f"PPDPipeline needs the PPD image DiT (ppd.pth), got {type(dit).__name__}; the video "
                         "DiT (ppvd.pth) goes to VideoDepthPipeline with pi3.safetensors.")
    if encoder.kind == "pi3":
        raise InputError("Pi3 is the video model's semantic encoder; PPDPipeline needs depth_anything_v2_vitl.pth "
                         "(ppd.pth) or the MoGe-2 model.pt (ppd_moge.pth).")
    want = dit.config.semantic_dim
    if encoder.semantic_dim != want:
        raise InputError(f"the DiT expects {want}-wide semantic tokens but the {encoder.kind} encoder gives "
                         f"{encoder.semantic_dim}; pair ppd.pth with depth_anything_v2_vitl.pth and "
                         "ppd_moge.pth with the MoGe-2 model.pt.")
    message = pairing_problem(dit.semantics_kind, dit.semantics_kind_source, encoder.kind, "this DiT",
                              f"the {encoder.kind} encoder")
    if message and dit.semantics_kind_source == "metadata":
        raise InputError(message)
    if message:
        warnings.warn(message, stacklevel=3)


def activation_bytes(dit: PPDDiT, height: int, width: int, autocast: torch.dtype | None = None) -> int:
    """Peak activation memory of one image in one DiT step: ~12 fine-grid (N, D) tensors (measured 8-13
    on CPU fp32 with `bench`); SDPA keeps no N^2 score matrix. Half-precision autocast keeps LayerNorm
    and RoPE outputs in fp32, so ~3 bytes per element there."""
    c = dit.config
    tokens = (height // c.patch_size) * (width // c.patch_size)               # fine grid
    compute = autocast or dit.x_embedder.proj.weight.dtype
    return 12 * tokens * c.hidden_size * (4 if compute == torch.float32 else 3)
