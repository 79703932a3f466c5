"""Reading checkpoints safely, finding the part we build, inferring its architecture from shapes.

Only `torch.load(weights_only=True)` and safetensors are used: a file that needs code to unpickle
is refused. Every failure is a CheckpointError naming the file, what was expected and what to do.
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Mapping, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open
from torch import Tensor, nn

from .errors import CheckpointError
from .models.dinov2 import ViTConfig
from .models.dit import DiTConfig, PPDDiT
from .models.encoders import DepthAnythingV2Encoder, MoGe2Encoder, SemanticEncoder

Source = Union[str, Path, Mapping]
STATE_DICT_EXTENSIONS = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin")
DOWNLOAD_HINT = ("Download the official files with `python -m comfyui_ppd download` or see the model "
                 "table in the README.")

# Anchors: one key that identifies each part; everything before it is the part's prefix.
DIT_ANCHOR = "x_embedder.proj.weight"
VIT_ANCHOR = "patch_embed.proj.weight"


class Checkpoint:
    """A loaded state dict (CPU tensors), its metadata and a label for messages."""

    def __init__(self, tensors: dict[str, Tensor], metadata: dict, label: str) -> None:
        self.tensors, self.metadata, self.label = tensors, metadata, label


def read_checkpoint(source: Source) -> Checkpoint:
    """Read a path (.safetensors or weights-only .pth/.pt) or a state dict; unwrap `state_dict`/`model`."""
    if isinstance(source, Mapping):
        return _unwrap(dict(source), {}, "<state dict>")
    path = Path(source).expanduser()
    if not path.is_file():
        raise CheckpointError(path, "a checkpoint file", "no such file", DOWNLOAD_HINT)
    if path.suffix.lower() in (".safetensors", ".sft"):
        return _read_safetensors(path)
    return _read_torch(path)


def _read_safetensors(path: Path) -> Checkpoint:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(path, "a readable safetensors file", f"a damaged file ({e})",
                              "The download is probably truncated or corrupted: delete it and download it again.")
    if "model_config" in metadata:
        metadata["model_config"] = json.loads(metadata["model_config"])
    return _unwrap(tensors, metadata, str(path))


def _read_torch(path: Path) -> Checkpoint:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        raise CheckpointError(path, "plain tensors (a weights-only loadable checkpoint)",
                              f"a pickle that needs code to load ({str(e).splitlines()[0][:200]})",
                              "For safety this pack never runs code from model files. Use the official "
                              "release file, or convert it on a trusted machine to .safetensors.")
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(path, "a complete PyTorch checkpoint", f"an unreadable file ({str(e)[:200]})",
                              "The download is probably truncated or corrupted: delete it and download it again.")
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, "a dict of tensors", f"a {type(obj).__name__}", DOWNLOAD_HINT)
    return _unwrap(dict(obj), {}, str(path))


def _unwrap(obj: dict, metadata: dict, label: str) -> Checkpoint:
    """Follow `state_dict` / `model` nesting; keep a MoGe `model_config` next to `model` as metadata."""
    for key in ("state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            if isinstance(obj.get("model_config"), Mapping):
                metadata = {**metadata, "model_config": dict(obj["model_config"])}
            return _unwrap(dict(inner), metadata, label)
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    return Checkpoint(tensors, metadata, label)


def describe(tensors: Mapping[str, Tensor]) -> str:
    """What a state dict looks like, for error messages."""
    keys = list(tensors)
    if not keys:
        return "no tensors at all"
    has = lambda s: any(s in k for k in keys)  # noqa: E731
    if has("model.diffusion_model.") or has("input_blocks.") or has("down_blocks."):
        kind = "a Stable Diffusion / image-generation UNet"
    elif has(DIT_ANCHOR) and has("temporal_blocks."):
        kind = "a PPVD video DiT (ppvd.pth)"
    elif has(DIT_ANCHOR) and has("proj_fusion."):
        kind = "a PPD DiT"
    elif has("encoder.register_tokens") and has("decoder.0.attn.q_norm."):
        kind = "a Pi3 model (pi3.safetensors)"
    elif has("depth_head.") or has("pretrained." + VIT_ANCHOR):
        kind = "a Depth Anything v2 model"
    elif has("output_projections.") and has("backbone."):
        kind = "a MoGe model"
    elif has(VIT_ANCHOR):
        kind = "a ViT (DINOv2-like) backbone"
    else:
        kind = "an unrecognised model"
    return f"{kind} ({len(keys)} tensors, e.g. {', '.join(keys[:3])})"


def _prefix_of(tensors: Mapping[str, Tensor], anchor: str) -> list[str]:
    return [k[: -len(anchor)] for k in tensors if k == anchor or k.endswith("." + anchor)]


def _subdict(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _count_blocks(tensors: Mapping[str, Tensor], prefix: str = "blocks.") -> int:
    idx = {int(m.group(1)) for k in tensors if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


# --- DiT -----------------------------------------------------------------------------------
def dit_part(ckpt: Checkpoint) -> dict[str, Tensor]:
    """The DiT tensors with their prefix (none, dit., module., model., pipeline.dit., ...) removed."""
    prefixes = [p for p in _prefix_of(ckpt.tensors, DIT_ANCHOR)
                if p + "proj_fusion.0.weight" in ckpt.tensors]
    if len(prefixes) != 1:
        found = describe(ckpt.tensors) if not prefixes else f"{len(prefixes)} DiTs ({', '.join(prefixes)})"
        raise CheckpointError(ckpt.label, "a Pixel-Perfect Depth DiT (ppd.pth or ppd_moge.pth)", found,
                              "Pick the PPD DiT file for the model input (the semantic encoder file goes to "
                              "the encoder input). " + DOWNLOAD_HINT)
    return _subdict(ckpt.tensors, prefixes[0])


def dit_config(sd: Mapping[str, Tensor], label: str = "<state dict>") -> DiTConfig:
    """Architecture from shapes: hidden and patch from the embedder, heads from q_norm, semantics from fusion."""
    try:
        hidden, in_ch, kernel, _ = sd["x_embedder.proj.weight"].shape
        head_dim = sd["blocks.0.attn.q_norm.weight"].shape[0]
        patch = kernel // 2
        cfg = DiTConfig(hidden_size=hidden, depth=_count_blocks(sd), num_heads=hidden // head_dim,
                        patch_size=patch, in_channels=in_ch,
                        out_channels=sd["final_layer.linear.weight"].shape[0] // patch ** 2,
                        mlp_hidden=sd["blocks.0.mlp.fc1.weight"].shape[0],
                        semantic_dim=sd["proj_fusion.0.weight"].shape[1] - hidden)
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(label, "a complete PPD DiT", f"a DiT without {e}",
                              "The file is incomplete or from another model; download ppd.pth again.")
    if kernel % 2 or hidden % head_dim or cfg.depth % 2 or sd["proj_fusion.0.weight"].shape[0] != 4 * hidden:
        raise CheckpointError(label, "a cascaded PPD DiT (even depth, 4x fusion width)",
                              f"inconsistent shapes ({cfg})", "This DiT variant is not supported.")
    return cfg


# --- semantic encoders -----------------------------------------------------------------------
def vit_config(sd: Mapping[str, Tensor], num_heads: int | None, label: str) -> ViTConfig:
    """DINOv2 sizes from shapes; heads default to embed_dim / 64 as in every released DINOv2."""
    try:
        dim, _, patch, _ = sd["patch_embed.proj.weight"].shape
        tokens = sd["pos_embed"].shape[1] - 1
        grid = int(round(tokens ** 0.5))
        if any(k.startswith("register_tokens") for k in sd):
            raise CheckpointError(label, "a DINOv2 backbone without register tokens",
                                  "register tokens", "DINOv2-reg backbones are not used by PPD.")
        heads = num_heads or max(1, dim // 64)
        if dim % heads or grid * grid != tokens:
            raise ValueError(f"{dim} channels / {heads} heads, {tokens} position tokens")
        return ViTConfig(embed_dim=dim, depth=_count_blocks(sd), num_heads=heads, patch_size=patch,
                         mlp_hidden=sd["blocks.0.mlp.fc1.weight"].shape[0], pos_grid=grid)
    except (KeyError, ValueError) as e:
        raise CheckpointError(label, "a DINOv2 ViT backbone", f"inconsistent or missing tensors ({e})",
                              "The file is incomplete or from another model; download it again.")


def evenly_spaced_layers(depth: int, count: int) -> list[int]:
    """MoGe's layer choice when no config says otherwise: count blocks ending at the last ([5,11,17,23] for 24, 4)."""
    return [(i + 1) * depth // count - 1 for i in range(count)]


def encoder_part(ckpt: Checkpoint, num_heads: int | None = None) -> tuple[SemanticEncoder, dict[str, Tensor]]:
    """Find the semantic encoder in a checkpoint; return an unloaded module (meta device) and its tensors."""
    prefixes = _prefix_of(ckpt.tensors, VIT_ANCHOR)
    if len(prefixes) != 1:
        found = describe(ckpt.tensors) if not prefixes else f"{len(prefixes)} ViT backbones ({', '.join(prefixes)})"
        raise CheckpointError(ckpt.label, "a semantic encoder (depth_anything_v2_vitl.pth or MoGe-2 model.pt)",
                              found, "Pick the semantic-encoder file for the encoder input. " + DOWNLOAD_HINT)
    vit_prefix = prefixes[0]
    head = vit_prefix[: -len("backbone.")] if vit_prefix.endswith("backbone.") else None
    if head is not None and head + "output_projections.0.weight" in ckpt.tensors:
        sd = _subdict(ckpt.tensors, head)
        cfg = vit_config(_subdict(sd, "backbone."), num_heads, ckpt.label)
        n_proj = len({k.split(".")[1] for k in sd if k.startswith("output_projections.")})
        layers = evenly_spaced_layers(cfg.depth, n_proj)
        enc_cfg = (ckpt.metadata.get("model_config") or {}).get("encoder") or {}
        if enc_cfg.get("intermediate_layers") is not None:
            layers = enc_cfg["intermediate_layers"]
            if isinstance(layers, int):                       # MoGe also accepts "the last n blocks"
                layers = list(range(cfg.depth - layers, cfg.depth))
            if len(layers) != n_proj or max(layers) >= cfg.depth:
                raise CheckpointError(ckpt.label, f"{n_proj} intermediate layers below {cfg.depth}",
                                      f"model_config intermediate_layers {layers}", "The file is inconsistent.")
        dim_out = sd["output_projections.0.weight"].shape[0]
        with torch.device("meta"):
            module = MoGe2Encoder(cfg, layers, dim_out)
        return module, sd
    sd = {"pretrained." + k: v for k, v in _subdict(ckpt.tensors, vit_prefix).items()}
    cfg = vit_config(_subdict(sd, "pretrained."), num_heads, ckpt.label)
    with torch.device("meta"):
        module = DepthAnythingV2Encoder(cfg)
    return module, sd


# --- strict loading ----------------------------------------------------------------------------
def load_strict(module: nn.Module, sd: Mapping[str, Tensor], label: str, what: str,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load every tensor of the part we build (nothing missing, nothing extra, shapes equal); then move."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{n} {name}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                 for name, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if (n := len(items))]
        raise CheckpointError(label, what, "; ".join(parts),
                              "The file is incomplete or belongs to another model version; download it again.")
    if sd and next(iter(sd.values())).device.type == "meta":
        cast = {k: v.to(dtype=dtype) if v.is_floating_point() else v for k, v in sd.items()}
    else:
        cast = {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
                for k, v in sd.items()}
    module.load_state_dict(cast, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def build_dit(sd: Mapping[str, Tensor], label: str = "<state dict>", device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> PPDDiT:
    """A PPD DiT with the architecture read from `sd`, loaded strictly."""
    cfg = dit_config(sd, label)
    with torch.device("meta"):
        module = PPDDiT(cfg)
    return load_strict(module, sd, label, "a complete PPD DiT", device, dtype)
