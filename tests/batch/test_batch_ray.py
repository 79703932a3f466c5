"""`predict --ray` on a local Ray (2 model workers on this machine's CPUs), one Ray session for the module.

Ray is optional: these tests skip when it is not installed, except under CI=true, which installs the
`distributed` extra and where a missing Ray is a failure."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from batch_data import AREA, STEPS, bad_files, counts, make_tree, output_files, predict
from comfyui_ppd.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        msg = 'ray is not installed (pip install "comfyui-ppd[distributed]")'
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; under CI=true the Ray tests are required")
        pytest.skip(msg)
    from comfyui_ppd.batch.distributed import start_ray
    support = str(Path(__file__).resolve().parents[1] / "support")        # the workers import tests/support/faults
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (support, old) if p)
    started = start_ray(None, workers=2, gpu=False)                # 2 model copies + 1 CPU for decode/write
    yield ray
    if started:
        ray.shutdown()
    if old is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def sequential(models, tmp_path_factory):
    """A nested tree of 32 mixed-size images plus 2 bad files, and the sequential run's outputs."""
    root = tmp_path_factory.mktemp("raytree")
    make_tree(root / "in", 32)
    bad_files(root / "in" / "bad")
    assert predict(models, root / "in", "--out", root / "seq") == 1              # the 2 bad files fail
    return root, output_files(root / "seq")


def test_ray_run_gives_the_sequential_files_and_resumes_without_work(ray_session, models, sequential, tmp_path,
                                                                     capsys):
    root, want = sequential
    capsys.readouterr()
    assert predict(models, root / "in", "--out", tmp_path / "ray", "--ray", "--ray-workers", "2") == 1
    text = capsys.readouterr().out
    assert counts(text) == {"total": 34, "done": 32, "skipped": 0, "failed": 2, "samples": 32}
    assert "corrupt.jpg" in text and "empty.png" in text
    got = output_files(tmp_path / "ray")
    assert got.keys() == want.keys() and len(got) == 96
    for name in got:                       # same numbers and byte-equal PNGs
        if name.endswith(".npy"):
            assert np.array_equal(np.load(tmp_path / "ray" / name), np.load(root / "seq" / name)), name
        assert got[name] == want[name], name
    assert predict(models, root / "in", "--out", tmp_path / "ray", "--ray") == 1
    assert counts(capsys.readouterr().out) == {"total": 34, "done": 0, "skipped": 32, "failed": 2, "samples": 0}


def test_a_killed_model_worker_loses_nothing(ray_session, models, sequential, tmp_path, monkeypatch, capsys):
    from comfyui_ppd.batch import distributed
    from faults import DyingModelActor
    root, want = sequential
    monkeypatch.setattr(distributed, "ModelActor", DyingModelActor)  # the worker that gets s1/t1/img13 exits
    assert predict(models, root / "in", "--out", tmp_path / "ray", "--ray", "--ray-workers", "2") == 1
    assert (tmp_path / "ray.killed").exists()                        # the fault fired: one worker died
    assert counts(capsys.readouterr().out)["done"] == 32
    got = output_files(tmp_path / "ray")
    assert got == want                                               # every output present and correct
    assert not [p for p in (tmp_path / "ray").rglob(".*")]           # no temp files left behind


def sequential_then_ray(tmp_path, common, capsys) -> str:
    """`predict in/` to seq/ (one torch thread, as a one-CPU Ray task runs: another thread count may change float
    sums in the last bit), then with --ray to ray/; returns the --ray run's output."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "seq"), *map(str, common)]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "ray"), "--ray", "--ray-workers", "1",
                 *map(str, common)]) == 0
    return capsys.readouterr().out


def test_ray_runs_the_images_on_actors_and_each_video_as_one_task(ray_session, models, tmp_path, capsys):
    """Under --ray the images go to the Ray model actors and each video to one streaming Ray task; the files equal
    the sequential run's."""
    pytest.importorskip("av", reason="PyAV (pip install av) is needed to write the test video")
    import shutil

    from scenes import write_example_clip
    from tiny_ppvd import write_tiny_ppvd
    folder = tmp_path / "models"
    shutil.copytree(models["dit"].parent, folder)
    write_tiny_ppvd(folder)
    make_tree(tmp_path / "in", 4)
    write_example_clip(str(tmp_path / "in" / "s0" / "pan.mp4"), frames=3, height=32, width=48)
    common = ("--models-dir", folder, "--area", AREA, "--steps", STEPS, "--no-progress", "--process-size", "32x32")
    text = sequential_then_ray(tmp_path, common, capsys)
    assert counts(text)["done"] == 5 and "videos: the video model (ppvd.pth + pi3.safetensors)" in text
    got, want = output_files(tmp_path / "ray"), output_files(tmp_path / "seq")
    assert "s0/pan_depth.npz" in got and got.keys() == want.keys()
    assert all(got[k] == want[k] for k in got)                                 # byte-equal, the preview too


def test_a_video_through_the_image_model_per_frame_streams_to_the_sequential_files(ray_session, models, tmp_path,
                                                                                   capsys):
    """No video model: under --ray the video's frames stream out of one decode task (batch.distributed.decode) to
    the frame files and manifest of the sequential run."""
    pytest.importorskip("av", reason="PyAV (pip install av) is needed to write the test video")
    from scenes import write_example_clip
    (tmp_path / "in").mkdir()
    write_example_clip(str(tmp_path / "in" / "pan.mp4"), frames=6, height=32, width=48)
    common = ("--models-dir", models["dit"].parent, "--area", AREA, "--steps", STEPS, "--no-progress")
    text = sequential_then_ray(tmp_path, common, capsys)
    assert counts(text) == {"total": 1, "done": 1, "skipped": 0, "failed": 0, "samples": 6}
    got, want = output_files(tmp_path / "ray"), output_files(tmp_path / "seq")
    assert "pan/frames.json" in got and "pan/frame_000005_depth.npy" in got and got == want
