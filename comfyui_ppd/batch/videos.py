"""`predict --ray` for video files with the video model: one Ray task per video, each streaming its clip
(families/ppvd/clip.py: one window of frames in memory, resumable), many videos at once across the workers.

Each worker process loads the video model once and keeps it for the next video it gets. Ray is optional and
imported only here and in distributed.py, never by the ComfyUI nodes.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from .distributed import _ray, start_ray
from .inputs import Item

_PIPES: dict[tuple, Any] = {}             # per worker process: the loaded video model, by its files and options


def predict_one(path: str, out_dir: str, stem: str, model: dict[str, Any], options: dict[str, Any]) -> dict:
    """A Ray task: one video through the video model into out_dir; returns what predict_video_file returns
    (without the paths) or {"error": message}."""
    from .. import runtime
    from ..errors import error_message
    from ..families.ppvd import clip, steps
    try:
        key = tuple(sorted((k, str(v)) for k, v in model.items()))
        if key not in _PIPES:
            device = runtime.pick_device(model["device"])
            _PIPES[key] = steps.load_video_pipeline(model["dit"], model["encoder"],
                                                    runtime.precision(model["precision"], device), device=device,
                                                    process_size=model["process_size"])
        done = clip.predict_video_file(_PIPES[key], Path(path), Path(out_dir), stem=stem, **options)
    except Exception as e:                      # noqa: BLE001 - a bad video fails its item, reported by the driver
        return {"error": error_message(e)}
    return {k: v for k, v in done.items() if k != "paths"}


def run_videos(items: list[Item], out: Path, model: dict[str, Any], options: dict[str, Any], *,
               address: str | None, workers: int | None, gpu: bool) -> Iterator[tuple[Item, dict]]:
    """(item, result) as each video's task finishes; at most `workers` videos (default: one per GPU, else one per
    CPU) run at once."""
    ray = _ray()
    started = start_ray(address, workers, gpu)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0)) if gpu else 0
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = workers or gpus or cpus
        if not gpus and n > cpus:
            raise InputError(f"--ray-workers {n} needs {n} CPUs in the Ray cluster (one per video); it has {cpus}.")
        task: Any = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1,
                                    max_retries=1)(predict_one)
        model = {**model, "device": "cuda" if gpus else "cpu"}
        pending: dict[Any, Item] = {}
        queue = list(items)
        while queue or pending:
            while queue and len(pending) < n:          # each worker streams one video: memory of n windows
                item = queue.pop(0)
                ref = task.remote(str(item.path.resolve()), str((out / item.stem.parent).resolve()),
                                  item.stem.name, model, options)
                pending[ref] = item
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()
