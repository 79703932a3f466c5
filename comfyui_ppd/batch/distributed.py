"""`predict --ray`: the batch job as a Ray Data pipeline (paths -> decode -> model actors -> write).

- decode: Ray tasks run the processor's `load` (image decode + resize; a video gives one row per frame, streamed
  as decoded, one task per video holding a block of frames at most);
- model: an actor pool (`map_batches`), one model copy per GPU (num_gpus=1) or per CPU worker;
  a batch may mix processing sizes, the actor runs each size separately (results do not depend on batching);
- write: Ray tasks run the processor's `write` (atomic files, existing ones kept unless --overwrite).
Ray Data streams with back-pressure; an actor that dies is restarted and its batch redone, tasks are retried,
and atomic writes mean a killed writer never leaves a partial file. The driver only collects the summary.

Every worker needs the models: give --models-dir a path that exists on every node (a shared disk, or the
same folder copied to each node). Ray is optional (pip install "comfyui-ppd[distributed]") and imported
only here, never by the ComfyUI nodes.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from ..errors import InputError, PPDError, error_message
from .inputs import Item
from .runner import FatalError, Summary, Tracker, split_done


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError('--ray needs Ray Data: pip install "comfyui-ppd[distributed]" (or pip install "ray[data]")'
                         ) from None
    return ray


def _item(row: dict) -> Item:
    return Item(int(row["index"]), Path(row["path"]), PurePosixPath(row["stem"]), row["kind"])


def decode(row: dict, processor: Any) -> Iterator[dict]:
    """One input -> one row per sample (image bytes, processing size), yielded as each is loaded: a video streams
    frame by frame (Ray Data ships them in blocks of at most its target block size), it is never held whole. The
    last sample's `count` says how many there are; a bad file gives an error row (after the frames before it)."""
    item, last = _item(row), None
    try:
        for tag, _key, payload in processor.load(item):
            if last is not None:
                yield last
            x = payload["image"].numpy()
            last = {**row, "tag": tag, "image": x.tobytes(), "shape": list(x.shape),
                    "in_size": list(payload["input_size"]), "error": "", "count": 0}
    except Exception as e:                                  # noqa: BLE001 - reported in the summary
        if last is not None:
            yield last
        yield {**row, "tag": -1, "image": b"", "shape": [0, 0, 0, 0], "in_size": [0, 0],
               "error": error_message(e), "count": 0}
        return
    if last is not None:                                    # (a video without frames raised above)
        yield {**last, "count": int(last["tag"]) + 1}


def _payload(row: dict) -> dict:
    image = torch.from_numpy(np.frombuffer(row["image"], dtype=np.float32).reshape(row["shape"]).copy())
    return {"image": image, "input_size": tuple(int(s) for s in row["in_size"])}


class ModelActor:
    """One model copy; `__call__` runs a batch of sample rows grouped by processing size."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.processor.check()                              # load the model once, before the first batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        depth: list[bytes] = [b""] * len(rows)
        errors = [str(r["error"]) for r in rows]
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(rows):
            if not errors[i]:
                groups.setdefault(tuple(int(s) for s in r["shape"]), []).append(i)
        for idx in groups.values():
            try:
                results = self.processor.infer([_payload(rows[i]) for i in idx])
            except Exception as e:                          # noqa: BLE001 - the batch's items fail, not the job
                for i in idx:
                    errors[i] = error_message(e)
                continue
            for i, d in zip(idx, results):
                depth[i] = d.numpy().astype(np.float32).tobytes()
        return {**{k: list(v) for k, v in batch.items()}, "depth": depth, "error": errors}


def write(row: dict, processor: Any) -> dict:
    """Write one sample's files; returns the row's bookkeeping (error, kept files) without the arrays."""
    out = {k: row[k] for k in ("index", "path", "stem", "kind", "tag", "count")}
    out.update(error=str(row["error"]), kept=0)
    if not out["error"]:
        h, w = (int(s) for s in row["shape"][-2:])
        depth = torch.from_numpy(np.frombuffer(row["depth"], dtype=np.float32).reshape(1, h, w).copy())
        try:
            out["kept"] = processor.write(_item(row), int(row["tag"]), _payload(row), depth)
        except Exception as e:                              # noqa: BLE001 - reported in the summary
            out["error"] = error_message(e)
    return out


def _cause(error: BaseException) -> str:
    """The user-facing message inside a Ray error (a PPDError raised in a worker), else its first line."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, PPDError):
            return str(seen).splitlines()[-1] if "Traceback" in str(seen) else str(seen)
        seen = getattr(seen, "cause", None) or seen.__cause__
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def start_ray(address: str | None, workers: int | None, gpu: bool) -> bool:
    """Connect to `address` or start a quiet local Ray; returns whether this call started it."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env={"py_modules": [sys.modules[__package__.rsplit(".", 1)[0]]]})
        return True
    # Local workers import this package from the driver's checkout.
    root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    cpus = max(os.cpu_count() or 1, (workers or 1) + 1)                # +1: decode and write tasks
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=os.environ.get("PPD_RAY_LOGS") == "1")          # PPD_RAY_LOGS=1: show worker output
    return True


def run_ray(items: list[Item], processor: Any, *, address: str | None = None, workers: int | None = None,
            batch_size: int = 4, overwrite: bool = False, gpu: bool = False,
            progress: Any = None) -> Summary:
    """The same job as `run_sequential`, on Ray; `gpu` asks for one GPU per model copy when the cluster has GPUs."""
    ray = _ray()
    start = time.perf_counter()
    summary = Summary(total=len(items))
    todo, summary.skipped = split_done(items, processor, overwrite)
    if not todo:                                           # everything is there: no need to start Ray
        summary.seconds = time.perf_counter() - start
        return summary
    started = start_ray(address, workers, gpu)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0)) if gpu else 0
        processor.device = "cuda" if gpus else "cpu"
        cpus = int(ray.cluster_resources().get("CPU", 2))
        # CPU model copies take one CPU each and must leave one for the decode and write tasks.
        n = workers or gpus or max(1, cpus - 1)
        if not gpus and n > cpus - 1:
            raise InputError(f"--ray-workers {n} needs {n + 1} CPUs in the Ray cluster (one per model copy plus one "
                             f"for decoding and writing); it has {cpus}.")
        tracker = Tracker(processor, summary, progress)
        for item in todo:
            tracker.start(item)
        try:
            _execute(ray, todo, processor, tracker, n, gpus > 0, batch_size)
        except Exception as e:                              # e.g. no worker could load the model: exit 2
            raise FatalError(f"the Ray job stopped: {_cause(e)}") from e
        for index in list(tracker.items):                  # nothing came back for it (should not happen)
            tracker.fail(tracker.items[index], "no result came back from the Ray job")
    finally:
        if started:
            ray.shutdown()
    summary.seconds = time.perf_counter() - start
    return summary


def _execute(ray, todo: list[Item], processor: Any, tracker: Tracker, workers: int, gpu: bool,
             batch_size: int) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    # Absolute paths: workers may run in another folder (or on another node with the same shared paths).
    rows = [{"index": it.index, "path": str(it.path.resolve()), "stem": str(it.stem), "kind": it.kind} for it in todo]
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 8 * workers))
    ds = ds.flat_map(decode, fn_kwargs={"processor": processor}, num_cpus=0.5)
    ds = ds.map_batches(ModelActor, fn_constructor_kwargs={"processor": processor},
                        batch_size=batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers),
                        num_gpus=1 if gpu else 0, num_cpus=1 if not gpu else 0.5)
    ds = ds.map(write, fn_kwargs={"processor": processor}, num_cpus=0.5)
    items = {it.index: it for it in todo}
    for row in ds.iter_rows():
        item = items[int(row["index"])]
        if row["error"]:
            tracker.fail(item, row["error"])
            continue
        tracker.wrote(item, int(row["kept"]))
        if int(row["count"]):
            tracker.loaded_all(item, int(row["count"]))
