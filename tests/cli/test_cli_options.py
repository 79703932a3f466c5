"""The batch processor's typed options (batch.ppd.PredictOptions) are the `predict` flags, built in one place."""
from __future__ import annotations

import dataclasses

from comfyui_ppd import cli
from comfyui_ppd.batch.ppd import PredictOptions


def test_options_are_the_predict_flags_with_the_same_defaults(tmp_path):
    args = cli.build_parser().parse_args(["predict", "photo.png", "--out", str(tmp_path)])
    options = cli.predict_options(args)
    assert options.out == tmp_path
    for field in dataclasses.fields(PredictOptions):
        if field.name != "out":
            assert getattr(options, field.name) == getattr(args, field.name) == field.default, field.name


def test_every_flag_reaches_the_options(tmp_path):
    argv = ["predict", "photo.png", "--out", str(tmp_path), "--steps", "7", "--seed", "3", "--area", "4096",
            "--precision", "fp16", "--batch-size", "2", "--overwrite", "--pointcloud", "--normals", "--fov", "45",
            "--near", "2", "--far", "9", "--outlier-filter", "off"]
    options = cli.predict_options(cli.build_parser().parse_args(argv))
    assert options == PredictOptions(out=tmp_path, steps=7, seed=3, area=4096, precision="fp16", batch_size=2,
                                     overwrite=True, pointcloud=True, normals=True, fov=45.0, near=2.0, far=9.0,
                                     outlier_filter="off")
