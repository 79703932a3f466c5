"""`predict clip.mp4` streams: a run interrupted mid-clip (Ctrl-C, injected here through the progress callback)
resumes from its last finished window to the files of an uninterrupted run; with --ray each video is one
streaming task giving the same files."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from comfyui_ppd import cli

av = pytest.importorskip("av", reason="video decoding needs PyAV")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run here uses one torch thread, as a one-CPU Ray task does: the files are compared bit for bit, and
    another thread count may change float sums in the last bit."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clips(example_clip):
    example_clip("stream/short.mp4", 7)
    return example_clip("stream/pan.mp4", 33).parent                     # pan: 3 windows


def predict(models, *args) -> int:
    return cli.main(["predict", *map(str, args), "--models-dir", str(models), "--process-size", "48x32",
                     "--steps", "1", "--no-progress"])


def outputs(out):
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    data = {}
    for name in files:
        if name.endswith(".png"):
            data[name] = np.asarray(Image.open(out / name))
        elif name.endswith(".npz"):
            data[name] = np.load(out / name)["depth"]
        elif name.endswith(".mp4"):
            with av.open(str(out / name)) as c:
                data[name] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    return files, data


def same(a, b):
    files_a, data_a = outputs(a)
    files_b, data_b = outputs(b)
    assert files_a == files_b
    assert all(np.array_equal(data_a[k], data_b[k]) for k in data_a)


@pytest.fixture(scope="module")
def uninterrupted(ppvd_models, clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    assert predict(ppvd_models, clips, "--out", out) == 0
    return out


def test_interrupted_clip_resumes_from_its_last_window(ppvd_models, clips, uninterrupted, tmp_path, monkeypatch,
                                                       capsys):
    real = cli.ConsoleProgress

    class CtrlC(real):
        def __call__(self, done, total, final=False):
            if "pan.mp4" in self.label and done == 3:             # in pan.mp4's third window (1 step each)
                raise KeyboardInterrupt
            super().__call__(done, total, final)

    monkeypatch.setattr(cli, "ConsoleProgress", CtrlC)
    out = tmp_path / "out"
    assert predict(ppvd_models, clips, "--out", out) == 130
    assert (out / "pan_depth.resume.safetensors").is_file() and not (out / "pan_depth.npz").exists()
    monkeypatch.setattr(cli, "ConsoleProgress", real)
    seen = []

    class Count(real):
        def __call__(self, done, total, final=False):
            seen.append((self.label, done))

    monkeypatch.setattr(cli, "ConsoleProgress", Count)
    assert predict(ppvd_models, clips, "--out", out) == 0
    assert [d for label, d in seen if "pan.mp4" in label] == [3]          # only the window not done
    assert "2 done, 0 skipped" in capsys.readouterr().out            # short.mp4 came after pan.mp4
    same(out, uninterrupted)


@pytest.mark.slow
def test_ray_runs_each_video_as_one_streaming_task(ppvd_models, clips, uninterrupted, tmp_path):
    pytest.importorskip("ray", reason='--ray needs Ray (pip install "comfyui-ppd[distributed]")')
    out = tmp_path / "ray"
    assert predict(ppvd_models, clips, "--out", out, "--ray", "--ray-workers", "2", "--device", "cpu") == 0
    same(out, uninterrupted)


def test_flicker_streamed_from_disk_equals_the_whole_clip_figures(ppvd_models, clips, tmp_path):
    """--flicker reads the raw depth back frame by frame; its figures equal measure_flicker on the whole clip."""
    import json

    import torch

    from comfyui_ppd.families.ppvd.steps import flicker_report, flicker_text
    out = tmp_path / "out"
    assert predict(ppvd_models, clips / "pan.mp4", "--out", out, "--flicker") == 0
    whole = flicker_report(torch.from_numpy(np.load(out / "pan_depth.npz")["depth"]))
    assert whole is not None and len(whole.change) == 32                     # 2 chunks of pairs
    assert json.loads((out / "pan_flicker.json").read_text()) == json.loads(json.dumps(
        {"summary": whole.summary, **whole.as_dict()}))
    assert (out / "pan_flicker.txt").read_text() == "\n\n".join(flicker_text(whole)) + "\n"
