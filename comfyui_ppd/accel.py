"""Opt-in torch.compile of the DiT blocks, falling back to eager execution when compilation fails.

The blocks are compiled one by one (not the whole DiT), so forward hooks, the Condition object and the
sampler stay plain Python; all blocks share one compiled graph per token-grid shape.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from .models.dit import PPDDiT


class Fallback:
    """Shared by the blocks of one DiT: after the first compile failure all of them run eagerly."""

    def __init__(self) -> None:
        self.failed = False

    def fail(self, error: Exception) -> None:
        if not self.failed:
            first_line = str(error).splitlines()[0][:200] if str(error) else ""
            warnings.warn(f"torch.compile of the DiT blocks failed, running them eagerly instead "
                          f"({type(error).__name__}: {first_line})", RuntimeWarning, stacklevel=3)
        self.failed = True


class CompiledOrEager:
    """A block's forward: the compiled function until a compile failure, then the eager one."""

    def __init__(self, compiled: Callable[..., Any], eager: Callable[..., Any], fallback: Fallback) -> None:
        self.compiled, self.eager, self.fallback = compiled, eager, fallback

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.fallback.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:                      # no C++ compiler, unsupported op, backend crash ...
                self.fallback.fail(e)
        return self.eager(*args, **kwargs)


def compile_dit(dit: PPDDiT, mode: str | None = None) -> PPDDiT:
    """Compile every DiT block's forward in place (torch.compile, inductor); returns the same DiT.

    `mode` is passed to torch.compile (e.g. "max-autotune" on CUDA). Compilation happens on the first
    call for each grid shape; if it fails, every block runs eagerly and one RuntimeWarning says why.
    """
    fallback = Fallback()
    for block in dit.blocks:
        eager = block.forward
        if isinstance(eager, CompiledOrEager):
            continue
        try:
            compiled = torch.compile(eager, mode=mode)
        except Exception as e:                          # e.g. torch.compile unsupported on this Python
            fallback.fail(e)
            compiled = eager
        block.forward = CompiledOrEager(compiled, eager, fallback)
    return dit


def is_compiled(dit: PPDDiT) -> bool:
    """True when the blocks run through compile_dit's wrapper and none has fallen back to eager."""
    return all(isinstance(b.forward, CompiledOrEager) and not b.forward.fallback.failed for b in dit.blocks)
