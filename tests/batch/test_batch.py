"""Batch `predict` on one machine: input expansion, mirrored outputs, batching = one-by-one, resume, bad files."""
from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from batch_data import AREA, STEPS, bad_files, counts, make_tree, output_files, predict
from comfyui_ppd import runtime
from comfyui_ppd.batch.inputs import expand_inputs, resolve_collisions
from comfyui_ppd.cli import main
from comfyui_ppd.errors import InputError
from comfyui_ppd.families.ppd import steps as ppd_steps
from comfyui_ppd.io.images import load_image


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- inputs


def test_folder_is_walked_recursively_in_sorted_order_mirroring_the_tree(tmp_path):
    for rel in ["b/z.png", "a/y.JPG", "a/sub/x.webp", "c.tiff", ".hidden/h.png", "a/.dot.png"]:
        _touch(tmp_path / "in" / rel)
    (tmp_path / "in" / "notes.md").write_text("not an image")
    items = expand_inputs([str(tmp_path / "in")])
    assert [str(i.stem) for i in items] == ["a/sub/x", "a/y", "b/z", "c"]
    assert [i.index for i in items] == [0, 1, 2, 3] and {i.kind for i in items} == {"image"}


def test_files_patterns_and_list_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for rel in ["data/a/1.png", "data/b/2.jpg", "data/b/3.png", "single.png"]:
        _touch(tmp_path / rel)
    assert [str(i.stem) for i in expand_inputs(["single.png"])] == ["single"]      # a file: its bare name
    assert [str(i.stem) for i in expand_inputs(["data/**/*.png"])] == ["a/1", "b/3"]  # below the pattern's base
    (tmp_path / "data" / "list.txt").write_text("# comment\nb/2.jpg\n\na\n")
    by_at = expand_inputs(["@data/list.txt"])
    assert [str(i.stem) for i in by_at] == ["b/2", "1"]
    assert [i.path for i in expand_inputs(["data/list.txt"])] == [i.path for i in by_at]   # .txt reads as a list
    assert len(expand_inputs(["data", "data/a/1.png"])) == 3                    # the same file only once


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        expand_inputs([str(tmp_path / "nope.jpg")])
    with pytest.raises(InputError, match="matched no image"):
        expand_inputs([str(tmp_path / "*.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image or video files found"):
        expand_inputs([str(tmp_path / "empty")])


def test_output_folder_inside_the_input_is_not_read(tmp_path):
    _touch(tmp_path / "in" / "a.png")
    _touch(tmp_path / "in" / "out" / "a_depth16.png")
    assert [str(i.stem) for i in expand_inputs([str(tmp_path / "in")], exclude=tmp_path / "in" / "out")] == ["a"]


def test_name_collisions_get_distinct_stems():
    stems = resolve_collisions([(PurePosixPath("d/x"), ".jpg"), (PurePosixPath("d/x"), ".png"),
                                (PurePosixPath("d/X"), ".bmp"), (PurePosixPath("d/y"), ".png"),
                                (PurePosixPath("e/x"), ".jpg"), (PurePosixPath("d/x.jpg"), ".png")])
    assert [str(s) for s in stems] == ["d/x.jpg", "d/x.png", "d/X.bmp", "d/y", "e/x", "d/x.jpg_2"]
    keys = [str(s).casefold() for s in stems]
    assert len(set(keys)) == len(keys)                 # unique even on case-insensitive disks


def test_colliding_names_do_not_overwrite_each_other(models, tmp_path, capsys):
    rng = np.random.default_rng(3)
    (tmp_path / "in").mkdir()
    for ext in ("jpg", "png"):
        Image.fromarray((rng.random((40, 60, 3)) * 255).astype("uint8")).save(tmp_path / "in" / f"x.{ext}")
    assert predict(models, tmp_path / "in", "--out", tmp_path / "out") == 0
    a, b = (np.load(tmp_path / "out" / f"x.{e}_depth.npy") for e in ("jpg", "png"))
    assert not np.array_equal(a, b)                    # two different images, two sets of files
    for ext, got in (("jpg", a), ("png", b)):          # each equals that image run on its own
        assert predict(models, tmp_path / "in" / f"x.{ext}", "--out", tmp_path / ext) == 0
        assert np.array_equal(got, np.load(tmp_path / ext / "x_depth.npy"))


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    return root, make_tree(root / "in", 32)


def test_batched_prefetched_run_equals_one_by_one(models, tree, tmp_path, capsys):
    root, images = tree
    assert predict(models, root / "in", "--out", tmp_path / "batched", "--batch-size", "8", "--workers", "3") == 0
    assert counts(capsys.readouterr().out) == {"total": 32, "done": 32, "skipped": 0, "failed": 0, "samples": 32}
    assert predict(models, root / "in", "--out", tmp_path / "single", "--batch-size", "1", "--workers", "1") == 0
    batched, single = output_files(tmp_path / "batched"), output_files(tmp_path / "single")
    assert len(batched) == 3 * 32 and batched.keys() == single.keys()
    assert "s1/t1/img01_depth16.png" in batched and "s0/img00_depth.npy" in batched   # mirrored tree
    assert all(batched[k] == single[k] for k in batched)                               # byte-equal files
    # One-by-one through the pipeline itself (the old per-image CLI path) gives the same raw depth.
    pipe = ppd_steps.load_pipeline(models["dit"], models["da2"], runtime.precision("auto", "cpu"), area=AREA)
    for path in images[:3]:
        depth = ppd_steps.predict_depth(pipe, load_image(path), steps=STEPS, seed=0).depth[0, 0]
        rel = path.relative_to(root / "in").with_suffix("").as_posix()
        assert np.array_equal(np.load(tmp_path / "batched" / f"{rel}_depth.npy"), depth.numpy())


def test_resume_does_no_work_and_redoes_only_what_is_missing(models, tree, tmp_path, capsys):
    root, _ = tree
    out = tmp_path / "out"
    assert predict(models, root / "in", "--out", out) == 0
    capsys.readouterr()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert predict(models, root / "in", "--out", out) == 0
    assert counts(capsys.readouterr().out) == {"total": 32, "done": 0, "skipped": 32, "failed": 0, "samples": 0}
    (out / "s2" / "t0" / "img02_depth_color.png").unlink()             # as if interrupted mid-item
    assert predict(models, root / "in", "--out", out) == 0
    text = capsys.readouterr().out
    assert counts(text) == {"total": 32, "done": 1, "skipped": 31, "failed": 0, "samples": 1}
    assert "2 existing output file(s) were kept" in text                   # the item's other two files
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.name != "img02_depth_color.png")
    assert (out / "s2" / "t0" / "img02_depth_color.png").is_file()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]      # no temp files left


def test_bad_files_are_reported_and_the_rest_is_done(models, tmp_path, capsys):
    make_tree(tmp_path / "in", 4)
    corrupt, empty = bad_files(tmp_path / "in" / "bad")
    assert predict(models, tmp_path / "in", "--out", tmp_path / "out") == 1
    text = capsys.readouterr().out
    assert counts(text) == {"total": 6, "done": 4, "skipped": 0, "failed": 2, "samples": 4}
    failed = text.split("failed:")[1]
    assert str(corrupt) in failed and str(empty) in failed
    assert "damaged or incomplete" in failed and "is empty (0 bytes)" in failed
    assert len(output_files(tmp_path / "out")) == 4 * 3 and not (tmp_path / "out" / "bad").exists()


def test_a_model_that_cannot_load_stops_the_run(models, tmp_path, capsys):
    make_tree(tmp_path / "in", 2)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "ppd.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "m" / "depth_anything_v2_vitl.pth").write_bytes(models["da2"].read_bytes())
    code = main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "m"),
                 "--no-progress"])
    assert code == 2 and "ppd.pth" in capsys.readouterr().err
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- videos


def _write_video(path: Path, frames: int = 3) -> None:
    av = pytest.importorskip("av", reason="PyAV (pip install av) is needed to write the test video")
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray((rng.random((48, 64, 3)) * 255).astype("uint8"), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_video_runs_the_image_model_per_frame(models, tmp_path, capsys):
    (tmp_path / "in" / "a").mkdir(parents=True)
    _write_video(tmp_path / "in" / "a" / "clip.mp4")
    assert predict(models, tmp_path / "in", "--out", tmp_path / "out") == 0
    files = output_files(tmp_path / "out")
    assert sorted(files) == sorted(["a/clip/frames.json"] + [f"a/clip/frame_{i:06d}{s}" for i in range(3)
                                   for s in ("_depth.npy", "_depth16.png", "_depth_color.png")])
    import av
    with av.open(str(tmp_path / "in" / "a" / "clip.mp4")) as c:          # frame 1 = that frame as an image
        frame = next(f for i, f in enumerate(c.decode(video=0)) if i == 1).to_ndarray(format="rgb24")
    Image.fromarray(frame).save(tmp_path / "frame1.png")
    assert predict(models, tmp_path / "frame1.png", "--out", tmp_path / "single") == 0
    assert np.array_equal(np.load(tmp_path / "out" / "a" / "clip" / "frame_000001_depth.npy"),
                          np.load(tmp_path / "single" / "frame1_depth.npy"))
    capsys.readouterr()
    assert predict(models, tmp_path / "in", "--out", tmp_path / "out") == 0     # a finished video is skipped
    assert counts(capsys.readouterr().out)["skipped"] == 1


def test_video_without_pyav_names_the_install(models, tmp_path, capsys, monkeypatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clip.mp4").write_bytes(b"\0" * 100)
    _touch(tmp_path / "in" / "still.png")
    monkeypatch.setitem(sys.modules, "av", None)                          # import av -> ImportError
    assert predict(models, tmp_path / "in", "--out", tmp_path / "out") == 1
    text = capsys.readouterr().out
    assert "pip install av" in text and counts(text)["done"] == 1


# --------------------------------------------------------------------------- Ray is optional


def test_ray_missing_names_the_extra(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)                          # import ray -> ImportError
    _touch(tmp_path / "a.png")
    assert predict(models, tmp_path / "a.png", "--out", tmp_path / "o", "--ray") == 2
    assert 'pip install "comfyui-ppd[distributed]"' in capsys.readouterr().err


def test_metric_and_normals_are_refused_with_ray(models, tmp_path, capsys):
    _touch(tmp_path / "a.png")
    assert predict(models, tmp_path / "a.png", "--out", tmp_path / "o", "--ray", "--pointcloud", "--metric") == 2
    assert "drop --ray" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_resumed_metric_run_loads_no_model(models, tmp_path, capsys, monkeypatch):
    """Everything present: nothing is loaded (a broken loader would fail the run) and nothing is rewritten."""
    from comfyui_ppd import loaders
    _touch(tmp_path / "a.png")
    args = ("--out", tmp_path / "o", "--pointcloud", "--metric", "--normals")
    assert predict(models, tmp_path / "a.png", *args) == 0
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["a_depth.npy", "a_depth16.png", "a_depth_color.png", "a_normals.png", "a_points.ply"]

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(ppd_steps, "load_pipeline", no_load)
    monkeypatch.setattr(loaders, "load_geometry_model", no_load)
    capsys.readouterr()
    assert predict(models, tmp_path / "a.png", *args) == 0
    assert counts(capsys.readouterr().out) == {"total": 1, "done": 0, "skipped": 1, "failed": 0, "samples": 0}


def test_the_engine_and_the_nodes_do_not_import_ray():
    import subprocess
    code = ("import sys; sys.path.insert(0, 'tests/support'); from plumbing import load_pack; load_pack(); "
            "import comfyui_ppd.cli, comfyui_ppd.batch.runner, comfyui_ppd.batch.ppd, comfyui_ppd.batch.inputs; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
