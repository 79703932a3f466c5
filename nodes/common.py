"""What every PPD node shares: the V3 schema helper, the socket types, IMAGE/MASK conversions, progress and
Cancel, text and image previews, and the model folder lookup. Node modules import from here, never from
each other."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

from ..comfyui_ppd import catalogue, depth3d, inventory
from ..comfyui_ppd.errors import CheckpointError, InputError
from ..comfyui_ppd.family import SLOTS
from . import moge

log = logging.getLogger("comfyui_ppd")
CATEGORY = "PPD"

# ------------------------------------------------------------------ schema and sockets

# search_aliases arrived after ComfyUI 0.3.64; older cores build the schema without them.
HAS_ALIASES = "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}


def schema(node_id: str, display_name: str, description: str, aliases: list[str], **kwargs: Any) -> io.Schema:
    """An io.Schema in the pack's category, with search aliases where the core knows them."""
    if HAS_ALIASES:
        kwargs["search_aliases"] = aliases
    return io.Schema(node_id=node_id, display_name=display_name, category=CATEGORY, description=description,
                     **kwargs)


# The pack's own socket types (one class each; core types come from `io`).
PPDModel = io.Custom("PPD_MODEL")
PPDSemantics = io.Custom("PPD_SEMANTICS")
PPDDepth = io.Custom("PPD_DEPTH")
PPDPoints = io.Custom("PPD_POINTS")
GeometryModel = io.Custom("PPD_GEOMETRY_MODEL")
Geometry = io.Custom("PPD_GEOMETRY")
MoGeGeometry = io.Custom("MOGE_GEOMETRY")
VideoModel = io.Custom("PPD_VIDEO_MODEL")


def node_id(cls) -> str | None:
    """The node's id in the running prompt (None when called outside a prompt, e.g. from a script)."""
    hidden = getattr(cls, "hidden", None)
    return getattr(hidden, "unique_id", None)


def show_text(cls, text: str) -> str:
    """Show `text` on the node through core's progress text (the frontend draws it inside the node, once,
    replacing the previous text); logged at debug level when no server runs. Returns `text`."""
    target = node_id(cls)
    try:
        from server import PromptServer
        server = getattr(PromptServer, "instance", None)
    except ImportError:
        server = None
    if server is not None and target is not None:
        server.send_progress_text(text, target)
    else:
        log.debug("PPD: %s", text)
    return text


# ------------------------------------------------------------------ IMAGE / MASK conversions

def image_to_bchw(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B,H,W,C) -> (B,3,H,W); alpha is dropped and grey repeated, as LoadImage does."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise InputError(f"expected an IMAGE (batch, height, width, channels), got "
                         f"{getattr(image, 'shape', type(image).__name__)}.")
    channels = image.shape[-1]
    if channels == 4:
        log.warning("PPD: dropping the alpha channel of a 4-channel image.")
        image = image[..., :3]
    elif channels == 1:
        image = image.expand(*image.shape[:-1], 3)
    elif channels != 3:
        raise InputError(f"the image has {channels} channels; PPD needs RGB (3 channels). "
                         "Convert it with an image-to-RGB node first.")
    return image.movedim(-1, 1).float()


def to_image(bchw: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) -> a ComfyUI IMAGE (B,H,W,C) on ComfyUI's intermediate device."""
    return bchw.movedim(1, -1).to(mm.intermediate_device())


def to_mask_batch(mask, name: str) -> torch.Tensor | None:
    """A MASK as (B,H,W); a single (H,W) map becomes a batch of one."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise InputError(f"{name} must be a MASK (batch, height, width), got "
                         f"{getattr(mask, 'shape', type(mask).__name__)}.")
    return mask[None] if mask.ndim == 2 else mask


def color_batch(image) -> torch.Tensor | None:
    """An IMAGE as (B,H,W,3): alpha dropped, grey repeated (as the Semantic Encoder reads it)."""
    return None if image is None else image_to_bchw(image).movedim(1, -1)


def pick(batch: torch.Tensor | None, index: int, total: int, name: str) -> torch.Tensor | None:
    """Item `index` of a batch that has one entry for all images or one per depth image."""
    if batch is None:
        return None
    if batch.shape[0] not in (1, total):
        raise InputError(f"{name} has {batch.shape[0]} images but the depth has {total}: give one {name} "
                         "for the whole batch, or one per depth image.")
    return batch[0 if batch.shape[0] == 1 else index]


def per_image(index: int, total: int, work: Callable[[], Any]) -> Any:
    """Run `work()`, naming the image in a batch when it raises InputError."""
    try:
        return work()
    except InputError as e:
        if total == 1:
            raise
        raise InputError(f"image {index + 1} of {total}: {e}") from e


def logged_warnings(work: Callable[[], Any]) -> tuple[Any, list[str]]:
    """Run `work()`; engine warnings (e.g. a cloud over 10 M points) go to the ComfyUI log. -> (result, messages)"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = work()
    messages = [str(w.message) for w in caught]
    for message in messages:
        log.warning("PPD: %s", message)
    return result, messages


def check_depth(ppd_depth) -> None:
    if not isinstance(ppd_depth, dict) or "depth" not in ppd_depth:
        raise InputError("expected a PPD_DEPTH packet from PPD Depth Sampler or PPD Video Depth.")


def wxh(size) -> str:
    """(H, W) -> "W x H", the order ComfyUI shows sizes in."""
    return f"{int(size[1])} x {int(size[0])}"


def megabytes(path: str) -> str:
    """A file's size for the UI: "12.3 MB", or "45.6 kB" below 0.1 MB."""
    size = os.path.getsize(path)
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


# ------------------------------------------------------------------ progress and Cancel

def progress(total: int, node: str | None = None) -> Callable[[int, int], None]:
    """A callback(done, total) that drives ComfyUI's progress bar and honours Cancel between steps. The bar
    shows 0 of `total` at once, so a long first step never looks like a hang."""
    bar = comfy.utils.ProgressBar(total, node_id=node)
    bar.update_absolute(0, total)

    def callback(done: int, total_: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total_)

    return callback


@contextlib.contextmanager
def cancellable(*modules: torch.nn.Module):
    """Check Cancel before every transformer block of `modules` (a DiT step, or an encoder pass over a batch,
    can take seconds; a block is the smallest unit of work)."""
    blocks = [m for module in modules for name, m in module.named_modules()
              if re.fullmatch(r"(.+\.)?blocks\.\d+", name)]
    handles = [b.register_forward_pre_hook(lambda *_: mm.throw_exception_if_processing_interrupted())
               for b in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ------------------------------------------------------------------ previews

PREVIEW_SIDE = 1024     # previews are for the eye: at most this long side, fast PNG compression


def preview_size(height: int, width: int) -> tuple[int, int]:
    """(H, W) of a preview of an image of that size: the same, or scaled to PREVIEW_SIDE on its long side."""
    scale = min(1.0, PREVIEW_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def preview_images(images: torch.Tensor, prefix: str = "ppd_preview") -> list[dict]:
    """(B,H,W,3) [0,1] -> 8-bit PNGs in the temp folder, at most PREVIEW_SIDE long; the `images` UI entries."""
    temp = folder_paths.get_temp_directory()
    h, w = preview_size(*images.shape[1:3])
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        f"{prefix}_{uuid.uuid4().hex[:8]}", temp, w, h)
    out = []
    for i, image in enumerate(images):
        pixels = (image.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        img = Image.fromarray(np.ascontiguousarray(pixels))
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
        file = f"{name}_{counter + i:05}_.png"
        img.save(os.path.join(folder, file), compress_level=1)
        out.append({"filename": file, "subfolder": subfolder, "type": "temp"})
    return out


# ------------------------------------------------------------------ models/ppd

FOLDER = "ppd"
EXTENSIONS = {".pth", ".pt", ".safetensors"}
MISSING = " (missing: see README)"
# The file inputs of the pack's loaders, by node id: {input name: role}; one missing-file message names them all.
LOADER_FILES = {"PPD_LoadModel": {"dit_name": "dit", "encoder_name": "encoder"},
                "PPD_LoadGeometryModel": {"model_name": "geometry"},
                "PPD_LoadVideoModel": {"dit_name": "video_dit", "encoder_name": "video_encoder"}}


def register_model_folder() -> list[str]:
    """models/ppd in folder_paths, restricted to .pth/.pt/.safetensors; paths already set (by
    extra_model_paths.yaml, applied before packs load) are kept. Creates models/ppd when it is absent."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    known = folder_paths.folder_names_and_paths.get(FOLDER)
    paths = list(known[0]) if known else []
    if default not in paths:
        paths.append(default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))
    try:
        os.makedirs(default, exist_ok=True)
    except OSError as e:  # a read-only install still starts; the Load node names the folder when run
        log.warning("PPD: could not create %s (%s)", default, e)
    return list(paths)


def model_choices(role: str) -> list[str]:
    """Files in models/ppd this node loads in that role (told from their keys; files that cannot be read
    cheaply are listed in both), or one "<official name> (missing: see README)" entry when there is none."""
    files = []
    for name in folder_paths.get_filename_list(FOLDER):
        path = folder_paths.get_full_path(FOLDER, name)
        kind = inventory.file_kind(path) if path else inventory.FileKind(None)
        if inventory.fits(kind, role):
            files.append(name)
    return files or [catalogue.DEFAULT_NAMES[role] + MISSING]


def model_input(id: str, role: str, tooltip: str) -> io.Combo.Input:
    """A model-file dropdown for `role`, defaulting to the official file name when it is present."""
    files = model_choices(role)
    default = catalogue.DEFAULT_NAMES[role]
    return io.Combo.Input(id, options=files, default=default if default in files else files[0], tooltip=tooltip)


def validate_file_names(**names: Any) -> bool | str:
    """The loaders' validate_inputs: any non-empty name passes, so a missing file reaches `model_paths`,
    whose message names every missing file with its URL and target path (not core's "Value not in list")."""
    for input_name, name in names.items():
        if not isinstance(name, str) or not name:
            return f"{input_name}: expected a model file name, got {name!r}"
    return True


def target_folder() -> str:
    """Where missing files should go: models/ppd (the last registered path is the default one)."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths = folder_paths.get_folder_paths(FOLDER)
    return default if default in paths else paths[0]


def prompt_files(prompt: Any) -> list[tuple[str, str]]:
    """(role, file name) of every PPD loader in a prompt (API format), for naming all missing files at once."""
    found = []
    for entry in (prompt or {}).values() if isinstance(prompt, dict) else ():
        inputs = LOADER_FILES.get(entry.get("class_type")) if isinstance(entry, dict) else None
        for input_name, role in (inputs or {}).items():
            value = entry.get("inputs", {}).get(input_name)
            if isinstance(value, str) and value:
                found.append((role, value))
    return found


def model_paths(names: dict[str, str], prompt: Any = None) -> dict[str, str]:
    """{role: file name} -> {role: full path}. When any is missing, one error names every missing file of this
    node and of the prompt's other PPD loaders, each with its URL and the exact target path."""
    found, missing = {}, []
    for role, name in names.items():
        path = folder_paths.get_full_path(FOLDER, name.removesuffix(MISSING))
        if path:
            found[role] = path
        else:
            missing.append((role, name.removesuffix(MISSING)))
    if missing:
        others = [(r, n.removesuffix(MISSING)) for r, n in prompt_files(prompt)]
        missing += [(r, n) for r, n in others
                     if (r, n) not in missing and not folder_paths.get_full_path(FOLDER, n)]
        where = target_folder()
        lines = "\n".join(f"- {SLOTS[r]} {catalogue.how_to_get(n, where)}" for r, n in missing)
        listed = ", ".join(n for _, n in missing)
        raise CheckpointError(listed, f"model files in {where}", f"{len(missing)} missing",
                              f"Get every missing file:\n{lines}\nThen refresh the node (press R) and run again.")
    return found


class ModelBundle(torch.nn.Module):
    """A DiT and its semantic encoder as one module for ComfyUI's ModelPatcher (named in its log lines)."""

    def __init__(self, dit: torch.nn.Module, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.dit, self.encoder = dit, encoder


def patcher(module: torch.nn.Module) -> Any:
    """A ModelPatcher that moves `module` between ComfyUI's load (GPU) and offload devices."""
    return comfy.model_patcher.ModelPatcher(module, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device(), size=mm.module_size(module))


@dataclass
class LoadedModel:
    """The value of the pack's model sockets (PPD_MODEL, PPD_VIDEO_MODEL, PPD_GEOMETRY_MODEL): the engine object
    (a pipeline or MoGe-2), the ModelPatcher that moves its weights, and the file names it came from."""

    engine: Any
    patcher: Any
    names: tuple[str, ...]

    def load(self, activation_bytes: int) -> None:
        """Ask ComfyUI for room (weights + `activation_bytes`) and move the weights to the GPU."""
        mm.load_models_gpu([self.patcher], memory_required=activation_bytes, force_full_load=True)


def loaded(value: Any, socket: str, loader: str) -> LoadedModel:
    """`value` when it is a loaded model, else a clear error naming the loader to use."""
    if not isinstance(value, LoadedModel):
        raise InputError(f"{socket} must come from {loader}.")
    return value


# ------------------------------------------ depth, camera and range inputs (point cloud, metrics)

DEPTH_KINDS = {"disparity (near = larger)": "disparity", "depth (far = larger)": "depth",
               "PPD log-depth": "ppd"}


@dataclass
class DepthInput:
    """One depth batch, whatever socket it came from."""
    depth: torch.Tensor            # (B,h,w) in the units of `kind`
    kind: str                      # "ppd", "depth" or "disparity" (depth3d.KINDS)
    input_width: int               # width of the original image, the unit of focal_px
    colors: torch.Tensor | None   # (B,h,w,3) the PPD packet's resized image, or None


def read_depth(ppd_depth, depth_image, depth_map, depth_kind: str) -> DepthInput:
    """Exactly one of PPD_DEPTH, a depth IMAGE (first channel) or a depth MASK, as (B,h,w)."""
    given = [name for name, value in (("ppd_depth", ppd_depth), ("depth_image", depth_image),
                                      ("depth_map", depth_map)) if value is not None]
    if not given:
        raise InputError("no depth is connected: connect ppd_depth (from PPD Depth Sampler), or a depth map "
                         "from another node to depth_image (IMAGE) or depth_map (MASK).")
    if len(given) > 1:
        raise InputError(f"connect only one depth input, got {' and '.join(given)}: disconnect the others.")
    if ppd_depth is not None:
        check_depth(ppd_depth)
        d = ppd_depth["depth"]
        return DepthInput(d[:, 0], ppd_depth.get("kind", "ppd"), int(ppd_depth["input_size"][1]),
                          ppd_depth["image"].movedim(1, -1))
    if depth_kind not in DEPTH_KINDS:
        raise InputError(f"unknown depth kind {depth_kind!r}; choose one of {list(DEPTH_KINDS)}.")
    if depth_image is not None:
        if not isinstance(depth_image, torch.Tensor) or depth_image.ndim != 4:
            raise InputError(f"depth_image must be an IMAGE (batch, height, width, channels), got "
                             f"{getattr(depth_image, 'shape', type(depth_image).__name__)}.")
        if (depth_image[..., :3] - depth_image[..., :1]).abs().max() > 1 / 255:
            log.warning("PPD: the depth image's colour channels differ (a colour-mapped render?); using its "
                        "first channel. Connect a grey depth image, or the raw depth as a MASK.")
        d = depth_image[..., 0]
    else:
        d = to_mask_batch(depth_map, "depth_map")
    return DepthInput(d.float(), DEPTH_KINDS[depth_kind], int(d.shape[-1]), None)


def camera(height: int, width: int, input_width: int, fov_deg: float, focal_px: float,
           packet: dict | None = None, index: int = 0) -> torch.Tensor:
    """(3,3) intrinsics of the depth grid: focal_px (original-image pixels) > MoGe intrinsics > FOV."""
    if focal_px > 0:  # a field of view spans the whole width at any resolution
        return depth3d.camera_intrinsics(height, width, fov_deg=depth3d.fov_from_focal(focal_px, input_width))
    if packet is not None and packet.get("intrinsics") is not None:
        return moge.intrinsics(packet, height, width, index)
    return depth3d.camera_intrinsics(height, width, fov_deg=fov_deg)


def kind_input() -> io.Combo.Input:
    return io.Combo.Input(
        "depth_kind", options=list(DEPTH_KINDS), default="disparity (near = larger)",
        tooltip="What depth_image / depth_map holds: disparity or inverse depth (near = larger, e.g. "
                "ControlNet-style depth images; zero has no finite depth, so give a reference or a mask), depth "
                "(far = larger, e.g. metres), or PPD's normalised log-depth. Ignored for ppd_depth.")


def camera_inputs() -> list[io.Input]:
    return [
        io.Float.Input("fov_deg", default=60.0, min=1.0, max=179.0, step=0.1,
                       tooltip="Horizontal field of view in degrees (60 suits most photos; phone main cameras are "
                               "about 65-70). Used when focal_px is 0 and no MoGe intrinsics are connected."),
        io.Float.Input("focal_px", default=0.0, min=0.0, max=100000.0, step=0.1,
                       tooltip="Focal length in pixels of the original image (the one given to PPD Semantic "
                               "Encoder, or the depth map's own size). 0 = use fov_deg. When set it wins over "
                               "fov_deg and MoGe intrinsics."),
    ]


def range_inputs(note: str = "") -> list[io.Input]:
    return [
        io.Float.Input("near", default=1.0, min=0.001, max=10000.0, step=0.01,
                       tooltip="Metres at PPD's near end (log-depth 0, the 2% nearest pixels). Used for PPD "
                               "log-depth without a reference; other kinds are taken as they are." + note),
        io.Float.Input("far", default=10.0, min=0.01, max=100000.0, step=0.01,
                       tooltip="Metres at PPD's far end (log-depth 1, the 2% farthest pixels), e.g. 5 for a room, "
                               "50 for a street. Used for PPD log-depth without a reference." + note),
    ]


def depth_inputs() -> list[io.Input]:
    return [
        PPDDepth.Input("ppd_depth", optional=True,
                       tooltip="Depth from PPD Depth Sampler (used at its processing grid, no upsampling). Connect "
                               "this or depth_image or depth_map."),
        io.Image.Input("depth_image", optional=True,
                       tooltip="A depth map from another node as an IMAGE (first channel is read); set depth_kind "
                               "to say what it holds."),
        io.Mask.Input("depth_map", optional=True,
                      tooltip="A depth map from another node as a float MASK (e.g. metric depth in metres); set "
                              "depth_kind to say what it holds."),
    ]


def output(kind: Any, name: str, tooltip: str) -> io.Output:
    """An output socket shown as `name` on every core (0.3.64 shows the type when display_name is unset)."""
    return kind.Output(name, display_name=name, tooltip=tooltip)
