"""The benchmark: a tiny smoke run writes every JSON field; the FLOP formula counts what the code runs."""
from __future__ import annotations

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from comfyui_ppd import bench
from comfyui_ppd.bench import image as bench_image
from comfyui_ppd.families.ppd import flops
from comfyui_ppd.families.ppd.dit import DiTConfig
from comfyui_ppd.nn.dinov2 import ViTConfig
from comfyui_ppd.sampling import sampling_timesteps

PARTS = set(bench_image.PARTS)


def test_tiny_run_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["image", "--model", "tiny", "--size", "64x48", "--steps", "3", "--repeats", "2", "--warmup", "0",
            "--device", "cpu", "--json", str(out)]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    assert (res["width"], res["height"], res["batch"], res["precision"]) == (64, 48, 1, "fp32")
    assert res["evaluations"] == len(sampling_timesteps(3))
    assert set(res["parts"]) == PARTS
    for name, part in res["parts"].items():
        assert part["seconds"] > 0 and len(part["samples"]) == 2, name
        assert part["flop"] > 0 and part["tflops"] > 0 and part["matmul_tflops"] > 0, name
        # no upper bound: on a loaded machine the same-run matmul roofline can be timed slower than the part
        assert part["roofline_fraction"] > 0, name
        assert part["peak_bytes"] is None or part["peak_bytes"] > 0
    p = res["parts"]
    assert p["e2e"]["flop"] == p["encoder"]["flop"] + p["condition"]["flop"] + res["evaluations"] * p["step"]["flop"]
    assert p["flat"]["flop"] > p["step"]["flop"]
    assert set(res["cascade"]) == {"flat_over_cascade_time", "time_saving", "flop_saving"}
    assert res["weight_bytes"] > 0 and res["activation_estimate_bytes"] > 0
    table = capsys.readouterr().out
    assert "DiT step, no cascade" in table and "%roof" in table


def test_parts_can_be_chosen():
    assert bench.main(["image", "--model", "tiny", "--size", "32x32", "--parts", "step", "--repeats", "1",
                       "--device", "cpu"]) == 0


@pytest.mark.parametrize("argv", [["--size", "100x48"], ["--size", "64"], ["--size", "0x16"], ["--depth", "3"],
                                  ["--parts", "step,decoder"], ["--repeats", "0"], ["--steps", "0"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["image", "--model", "tiny", *argv])
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


def test_flop_formula_counts_every_matmul():
    """The analytic count equals torch's FLOP counter (attention through the math kernel, which it counts)."""
    dit_cfg = DiTConfig(hidden_size=64, depth=4, num_heads=4, mlp_hidden=96, semantic_dim=48)
    vit_cfg = ViTConfig(embed_dim=64, depth=3, num_heads=2, mlp_hidden=80)
    dit, enc = bench_image.random_models(dit_cfg, vit_cfg, torch.device("cpu"), torch.float32)
    h, w, b = 48, 96, 2
    image, latent = torch.rand(b, 3, h, w), torch.randn(b, 1, h, w)
    counted = {}
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        semantics = torch.randn(b, (h // 16) * (w // 16), 48)
        cond = dit.condition(image, semantics)
        calls = {"encoder": lambda: enc(image), "condition": lambda: dit.condition(image, semantics),
                 "step": lambda: dit.forward_condition(latent, cond, torch.tensor(7)),
                 "flat": lambda: dit.forward_condition(latent, cond, torch.tensor(7), cascade=False)}
        for name, fn in calls.items():
            with FlopCounterMode(display=False) as counter:
                fn()
            counted[name] = counter.get_total_flops()
    assert counted == {"encoder": flops.encoder_work(vit_cfg, h, w, b).flop,
                       "condition": flops.condition_work(dit_cfg, h, w, b).flop,
                       "step": flops.dit_step_work(dit_cfg, h, w, b).flop,
                       "flat": flops.dit_step_work(dit_cfg, h, w, b, cascade=False).flop}


def test_full_size_counts_match_the_published_figures():
    """The issue: ~12.8 TFLOP per DiT step and ~2.8 TFLOP encoder at 1024x768 (54 for 4 steps);
    one official DiT forward at 512x384 (our step plus the per-image condition) is 1,719 GFLOP."""
    dit_cfg, vit_cfg = bench_image.SIZES["full"]
    step = flops.dit_step_work(dit_cfg, 768, 1024).flop
    encoder = flops.encoder_work(vit_cfg, 768, 1024).flop
    assert step / 1e12 == pytest.approx(12.8, rel=0.01)
    assert encoder / 1e12 == pytest.approx(2.8, rel=0.01)
    assert (encoder + 4 * step) / 1e12 == pytest.approx(54, rel=0.01)
    official = flops.dit_step_work(dit_cfg, 384, 512).flop + flops.condition_work(dit_cfg, 384, 512).flop
    assert official / 1e9 == pytest.approx(1719, abs=1)


def test_compile_option_reports_whether_blocks_were_compiled(tmp_path, monkeypatch):
    """Wiring only (inductor itself is exercised in test_fastpath): an identity 'compiler' counts as compiled."""
    from comfyui_ppd import runtime
    monkeypatch.setattr(runtime.torch, "compile", lambda fn, **kwargs: fn)
    out = tmp_path / "bench.json"
    assert bench.main(["image", "--model", "tiny", "--size", "32x32", "--parts", "step", "--repeats", "1",
                       "--device", "cpu", "--compile", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["compile"] == "default" and res["compiled"] is True


def test_video_bench_times_the_parts_and_calculates_full_size(tmp_path, capsys):
    """`bench video`: tiny random PPVD on the CPU; the full-size figures come from the formula (the same one
    tests/parity/test_ppvd_parity.py checks against torch's FLOP counter at full size)."""
    from comfyui_ppd.families.ppvd.flops import window_flop
    out = tmp_path / "video.json"
    assert bench.main(["video", "--model", "tiny", "--size", "32x64", "--frames", "17", "--steps", "1",
                       "--warmup", "0", "--device", "cpu", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert (res["height"], res["width"], res["frames"], res["windows"]) == (64, 32, 17, 2)   # WxH
    assert set(res["parts"]) == {"pi3", "step", "clip"} and all(p["seconds"] > 0 for p in res["parts"].values())
    clip = res["parts"]["clip"]
    assert clip["flop"] == 2 * (res["parts"]["pi3"]["flop"] + res["evaluations"] * res["parts"]["step"]["flop"])
    assert clip["seconds_per_frame"] == pytest.approx(clip["seconds"] / 17)
    full = res["full_size"]
    assert (full["dit_parameters"], full["pi3_parameters"]) == (561_754_944, 757_923_840)
    from comfyui_ppd.bench.video import SIZES
    assert full["window_flop"] == window_flop(*SIZES["full"], 64, 32, 1)
    assert "full size by calculation" in capsys.readouterr().out


def test_throughput_bench_times_the_sequential_runner(capsys):
    """`bench throughput` without Ray (`--ray` with no counts): tiny random models, two images, one round."""
    assert bench.main(["throughput", "--size", "tiny", "--images", "2", "--short", "1", "--rounds", "1",
                       "--area", "1024", "--steps", "1", "--ray"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["images_per_s"]) == {"sequential", "sequential, batch 1"}
    assert all(v > 0 for v in res["images_per_s"].values())
    assert res["cpu_side_s_per_1024x768_image"]["load"] > 0 and res["cpu_side_s_per_1024x768_image"]["write"] > 0


def test_bench_needs_a_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--model", "tiny"])
    assert e.value.code == 2 and "image,video,throughput" in capsys.readouterr().err
