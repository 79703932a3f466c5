"""Flow-matching sampling: the official timestep list and the Euler step on the linear schedule (T = 1000).

Schedule: x_t = (1 - t/T) x_0 + (t/T) noise; the DiT predicts the velocity v = noise - x_0.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .errors import InputError

T = 1000


def sampling_timesteps(steps: int) -> list[int]:
    """The official list for `steps` steps, always computed as the official CPU code does.

    torch.arange(T, -1, -(T+1)/steps) in float32 on the CPU, rounded half to even. For 29, 49, ...
    steps float rounding adds a final t = -1 (one extra DiT evaluation), as in the official loop.
    The official GPU run builds this list on CUDA, whose arange rounds differently for 18, 20, 24,
    30, 36, 40 and 42 steps (one timestep off by one, ~2e-3 in depth); we always use the CPU list so
    that a seed means the same thing on every device.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"steps must be a whole number >= 1, got {steps!r}; PPD's default is 4.")
    values = torch.arange(T, -1, -(T + 1) / steps, dtype=torch.float32, device="cpu")
    return values.round().int().tolist()


def next_timesteps(timesteps: list[int]) -> list[int]:
    """The timestep each step moves to: the following entry, -1 after the last."""
    return timesteps[1:] + [-1]


def euler_step(x: Tensor, v: Tensor, t: int, s: int) -> Tensor:
    """Move x_t to x_s with velocity v: lerp between x0_hat and xT_hat at s/T; s < 0 returns x0_hat."""
    tt = torch.tensor(t, dtype=torch.int32).float() / T
    x0 = x - tt * v
    if s < 0:
        return x0
    ss = torch.tensor(min(max(s, 0), T), dtype=torch.int32).float() / T
    xT = x + (1 - tt) * v
    return (1 - ss) * x0 + ss * xT


def make_noise(batch: int, height: int, width: int, seed: int) -> Tensor:
    """Initial latent (batch,1,H,W) from a CPU generator, so a seed gives the same noise on every device.

    Every image of the batch gets the same noise (what the official code draws for one image with
    this seed): results do not depend on batch size or chunking, and video frames stay consistent.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed) % 2 ** 64)   # ComfyUI seeds reach 2^64 - 1
    return torch.randn((1, 1, height, width), generator=gen).expand(batch, -1, -1, -1).contiguous()


StepCallback = Callable[[int, int], None]


def sample(velocity: Callable[[Tensor, Tensor], Tensor], noise: Tensor, steps: int,
           callback: StepCallback | None = None) -> Tensor:
    """Run Euler sampling from `noise`; `velocity(latent, t)` is the DiT; returns the final latent.

    `callback(done, total)` runs after every DiT evaluation (progress bars; may raise to interrupt).
    """
    timesteps = sampling_timesteps(steps)
    x = noise.float()
    for i, (t, s) in enumerate(zip(timesteps, next_timesteps(timesteps))):
        v = velocity(x, torch.tensor(t, dtype=torch.int32, device=x.device)).float()
        x = euler_step(x, v, t, s)
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x
