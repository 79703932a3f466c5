"""MoGe files in ComfyUI core's key layout (what core's LoadMoGeModel builds: its DINOv2 port's names under
`encoder.backbone.`, separate query/key/value) mapped to the official layout our modules use, by keys alone."""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

CORE_ANCHOR = "encoder.backbone.embeddings.patch_embeddings.projection.weight"
_TOP = {                                    # core name -> official name, under the backbone prefix
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.mask_token": "mask_token",
    "embeddings.register_tokens": "register_tokens",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_BLOCK = (("layer_scale1.lambda1", "ls1.gamma"), ("layer_scale2.lambda1", "ls2.gamma"),
          ("attention.output.dense.", "attn.proj."), ("mlp.weights_in.", "mlp.w12."),
          ("mlp.weights_out.", "mlp.w3."))
_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")


def is_core_layout(keys: Mapping[str, Tensor] | set[str]) -> bool:
    """True for a MoGe-2 state dict in core's layout (prefix already removed)."""
    return CORE_ANCHOR in keys


def from_core_layout(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Core-layout MoGe-2 tensors -> official layout (`encoder.backbone.blocks.N.attn.qkv`, ...); q, k, v are
    concatenated in that order. Keys outside the backbone (projections, neck, heads) keep their names."""
    prefix = "encoder.backbone."
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            out[key] = value
            continue
        rel = key[len(prefix):]
        if rel in _TOP:
            out[prefix + _TOP[rel]] = value
        elif m := _QKV.match(rel):
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
        elif m := re.match(r"encoder\.layer\.(\d+)\.(.+)", rel):
            sub = m.group(2)
            for old, new in _BLOCK:
                sub = sub.replace(old, new)
            out[f"{prefix}blocks.{m.group(1)}.{sub}"] = value
        else:
            out[key] = value                 # unknown: left as is, so the strict load names it
    for (block, kind), parts in qkv.items():
        name = f"{prefix}blocks.{block}.attn.qkv.{kind}"
        if set(parts) == {"query", "key", "value"}:
            out[name] = torch.cat([parts["query"], parts["key"], parts["value"]])
        else:                                # incomplete: keep the parts so the strict load names them
            out.update({f"{prefix}encoder.layer.{block}.attention.attention.{p}.{kind}": t for p, t in parts.items()})
    return out
