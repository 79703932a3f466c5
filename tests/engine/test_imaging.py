"""comfyui_ppd.imaging: sizes and resize against the official OpenCV fixtures, colormaps,
normalisation, writers (checked with independent readers) and image loading."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from comfyui_ppd import imaging
from comfyui_ppd.encoders.base import encoder_input_size
from comfyui_ppd.errors import InputError
from comfyui_ppd.io import files, images

# ----------------------------------------------------------------------------- sizes


@pytest.fixture(scope="module")
def preprocess_rows(parity):
    return json.loads((parity / "preprocess.json").read_text())["rows"]


def test_processing_size_matches_every_official_row(preprocess_rows):
    assert len(preprocess_rows) >= 10
    for row in preprocess_rows:
        h, w = row["input_hw"]
        assert imaging.processing_size(h, w) == tuple(row["output_hw"]), row
        assert imaging.processing_scale(h, w) == pytest.approx(row["scale"], rel=1e-12, abs=0)
        # The official filter choice: area exactly when the scalar scale is below 1.
        downscale = imaging.processing_scale(h, w) < 1
        assert downscale == (row["interpolation"] == "INTER_AREA"), row
        h, w = row["output_hw"]
        assert encoder_input_size(h // 16, w // 16, 14) == tuple(row["semantic_encoder_input_hw"])


def test_processing_size_rule_by_hand():
    # area 64*64 on a 100x100 image: scale 0.64 -> 64 -> 64; min side is one multiple.
    assert imaging.processing_size(100, 100, area=64 * 64) == (64, 64)
    assert imaging.processing_size(1, 5000, area=1024) == (16, 2256)  # 5000*sqrt(1024/5000)=2262.7
    assert imaging.processing_size(100, 100, area=70 * 70, multiple=14) == (70, 70)


def test_long_side_size():
    assert imaging.long_side_size(480, 640, 1024) == (768, 1024)
    assert imaging.long_side_size(1080, 1920, 1024) == (576, 1024)
    assert imaging.long_side_size(1000, 333, 512) == (512, 176)  # 170.5/16 = 10.66 -> 11
    assert imaging.long_side_size(10, 5000, 512) == (16, 512)  # never below one multiple
    assert imaging.long_side_size(480, 640, 1000, multiple=14) == (756, 994)
    assert imaging.long_side_size(24, 40, 40) == (32, 32)  # 1.5 -> 2 and 2.5 -> 2: half to even
    with pytest.raises(InputError):
        imaging.long_side_size(10, 10, 0)


def test_size_validation():
    for bad in ((0, 10), (10, -1), (2.5, 3)):
        with pytest.raises(InputError):
            imaging.processing_size(*bad)


# ----------------------------------------------------------------------------- resize vs OpenCV


def pattern(h: int, w: int) -> torch.Tensor:
    """The fixture's uint8 pattern (H,W,3), in the channel order OpenCV saw (BGR)."""
    y = torch.arange(h)[:, None, None]
    x = torch.arange(w)[None, :, None]
    c = torch.arange(3)[None, None, :]
    return (((7 * y + 13 * x + 71 * c + (x * y) % 29) * 5) % 256).to(torch.uint8)


@pytest.fixture(scope="module")
def crop_cases(parity):
    return json.loads((parity / "manifest.json").read_text())[
        "resize_keep_aspect_crops.safetensors"]["cases"]


CASES = ("in17x23", "in480x640", "in960x1280", "in1536x2048")


@pytest.mark.parametrize("case", CASES)
def test_resize_keep_aspect_matches_opencv_crops(case, crop_cases, load_fixture):
    """OpenCV's uint8 output must be a nearest integer of our float output (up to float32 noise).

    Measured max |ours*255 - OpenCV| per case (tl/centre/br): 17x23 cubic 0.500018, 480x640 cubic
    0.49998, 960x1280 area 0.48001, 1536x2048 area (exact 2x) 0.500005. After rounding our value,
    max error is 1 grey level: 1 of 6912 values for 17x23 (a near-tie OpenCV's own float maths
    rounds the other way), and 6-7% for the exact 2x case, where every sum of four pixels that is
    2 mod 4 is an exact tie: OpenCV's integer fast path rounds it up, our float32 value lands
    5e-6 below it. Cubic and fractional area otherwise match exactly. Our pipeline never
    quantises, so the float criterion is the meaningful one."""
    info, fx = crop_cases[case], load_fixture("resize_keep_aspect_crops")
    src = pattern(*info["input_hw"])
    if case == "in17x23":
        assert torch.equal(src, fx["in17x23.input"])
    image = src.permute(2, 0, 1)[None].float() / 255  # (1,3,H,W), channel order kept
    out = imaging.resize_keep_aspect(image)
    assert out.shape[-2:] == tuple(info["output_hw"]) and out.dtype == torch.float32
    for crop, (y0, x0) in info["crops_top_left_yx_48x48"].items():
        ref = fx[f"{case}.out_crop_{crop}"].permute(2, 0, 1).double()
        ours = out[0, :, y0:y0 + 48, x0:x0 + 48].double() * 255
        assert (ours - ref).abs().max() <= 0.5 + 2e-4, crop
        assert (torch.round(ours) - ref).abs().max() <= 1, crop


@pytest.mark.parametrize("case", CASES)
def test_tensor_crop_tl_is_our_rgb_float(case, crop_cases, load_fixture):
    """Official image2tensor = BGR->RGB, /255, CHW: ours stays float, so it is within half a grey
    level of the official uint8 result."""
    info, fx = crop_cases[case], load_fixture("resize_keep_aspect_crops")
    rgb = pattern(*info["input_hw"]).flip(-1).permute(2, 0, 1)[None].float() / 255
    ours = imaging.resize_keep_aspect(rgb)[:, :, :48, :48]
    ref = fx[f"{case}.tensor_crop_tl"]
    assert ours.shape == ref.shape == (1, 3, 48, 48)
    assert (ours - ref).abs().max() <= 0.5 / 255 + 1e-5


def test_area_is_exact_box_average_for_integer_factors():
    x = torch.rand(2, 3, 12, 18, generator=torch.Generator().manual_seed(0))
    for k in (2, 3):
        got = imaging.resize_to(x, (12 // k, 18 // k), downscale=True)
        # two ways of averaging k*k <= 9 values in [0,1): <= 9 float32 roundings of 6e-8 -> 5.4e-7; atol 1e-6
        assert torch.allclose(got, F.avg_pool2d(x, k), atol=1e-6, rtol=0)


def test_area_fractional_weights_by_hand():
    # 3 -> 2 pixels: cells [0,1.5] and [1.5,3]
    x = torch.tensor([[[[0.3, 0.6, 0.9]]]])
    got = imaging.resize_to(x, (1, 2), downscale=True)
    want = torch.tensor([(0.3 + 0.5 * 0.6) / 1.5, (0.5 * 0.6 + 0.9) / 1.5])
    # values < 1 from 2 products and a sum: ~2 float32 steps (6e-8) -> 1e-7
    assert torch.allclose(got.flatten(), want, atol=1e-7)


def test_cubic_is_clamped_and_identity_at_same_size():
    step = torch.zeros(1, 1, 4, 8)
    step[..., 4:] = 1.0
    up = imaging.resize_to(step, (8, 16), downscale=False)
    assert up.min() == 0 and up.max() == 1  # cubic overshoot clipped like the uint8 original
    x = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    # identity resize of values in [0,1): the cubic weights (1 and exact zeros) may still round once or twice:
    # ~1e-7; atol 1e-6
    assert torch.allclose(imaging.resize_to(x, (5, 7), downscale=False), x, atol=1e-6)
    assert torch.allclose(imaging.resize_to(x, (5, 7), downscale=True), x, atol=1e-6)


def test_filter_follows_scalar_scale():
    # 886x887 -> 880x880 shrinks both sides, but sqrt(area/(H*W)) > 1 so the official uses cubic.
    x = torch.rand(1, 1, 886, 887, generator=torch.Generator().manual_seed(2))
    got = imaging.resize_keep_aspect(x)
    assert torch.equal(got, imaging.resize_to(x, (880, 880), downscale=False))
    # a negative check: area vs cubic differ by > 0.1 on noise; 1e-3 only needs to be far below that
    assert not torch.allclose(got, imaging.resize_to(x, (880, 880), downscale=True), atol=1e-3)
    # long-side option: shrinking uses area
    y = torch.rand(1, 1, 40, 60, generator=torch.Generator().manual_seed(3))
    assert torch.equal(imaging.resize_keep_aspect(y, long_side=30),
                       imaging.resize_to(y, (16, 32), downscale=True))


def test_resize_keeps_dtype_and_batch():
    x = torch.rand(3, 3, 20, 30).half()
    out = imaging.resize_to(x, (10, 15), downscale=True)
    assert out.shape == (3, 3, 10, 15) and out.dtype == torch.float16


def test_resize_input_errors():
    with pytest.raises(InputError, match="float"):
        imaging.resize_to(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), (2, 2), downscale=True)
    with pytest.raises(InputError, match=r"\(B,C,H,W\)"):
        imaging.resize_to(torch.zeros(3, 4, 4), (2, 2), downscale=True)
    with pytest.raises(InputError):
        imaging.resize_to(torch.zeros(1, 3, 4, 4), (0, 2), downscale=True)
    with pytest.raises(InputError):
        imaging.resize_keep_aspect(np.zeros((1, 3, 4, 4), np.float32))


def test_resize_depth():
    ramp = torch.tensor([[[[0.0, 1.0]]]])
    got = imaging.resize_depth(ramp, (1, 4))
    assert torch.allclose(got.flatten(), torch.tensor([0.0, 0.25, 0.75, 1.0]))
    four = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    # pixel-centre nearest: output centres 1 and 3 fall in source pixels 1 and 3
    assert imaging.resize_depth(four, (1, 2), mode="nearest").flatten().tolist() == [2.0, 4.0]
    with pytest.raises(InputError, match="bilinear"):
        imaging.resize_depth(four, (1, 2), mode="cubic")
    with pytest.raises(InputError, match=r"\(B,1,H,W\)"):
        imaging.resize_depth(torch.zeros(1, 3, 4, 4), (2, 2))


# ----------------------------------------------------------------------------- colormaps


def hex_rgb(h: str) -> torch.Tensor:
    return torch.tensor([int(h[i:i + 2], 16) for i in (0, 2, 4)], dtype=torch.float32) / 255


def centres() -> torch.Tensor:
    return (torch.arange(256) + 0.5) / 255  # hits LUT entry i exactly under truncation


def test_colormap_shape_dtype_and_names():
    assert set(imaging.COLORMAPS) >= {"turbo", "viridis", "spectral", "gray"}
    v = torch.rand(2, 5, 7)
    for name in imaging.COLORMAPS:
        out = imaging.colormap(v, name)
        assert out.shape == (2, 5, 7, 3) and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1


def test_colormap_unknown_name_lists_valid_ones():
    with pytest.raises(InputError) as err:
        imaging.colormap(torch.rand(3), "jet")
    for name in imaging.COLORMAPS:
        assert name in str(err.value)
    with pytest.raises(InputError):
        imaging.colormap(torch.arange(3), "gray")


def test_colormap_truncates_like_official_uint8_cast():
    v = torch.tensor([0.0, 1 / 255 - 1e-4, 0.999, 1.0, -3.0, 7.0, float("nan")])
    grey = imaging.colormap(v, "gray")[:, 0] * 255
    # integer grey levels (0..255) scaled back by 255 in float32: step at 255 is 1.5e-5; 1e-4 ~ 7 steps
    assert torch.allclose(grey, torch.tensor([0.0, 0, 254, 255, 0, 255, 0]), atol=1e-4)


def test_spectral_is_colorbrewer_red_to_violet():
    lut = imaging.colormap(centres(), "spectral")
    # anchor colours are k/255 in float32 (step 6e-8): 1e-6 allows a few roundings; a wrong anchor differs by
    # >= 1/255
    assert torch.allclose(lut[0], hex_rgb("9e0142"), atol=1e-6)
    assert torch.allclose(lut[255], hex_rgb("5e4fa2"), atol=1e-6)
    assert torch.allclose(lut[127], hex_rgb("ffffbf"), atol=2 / 255)  # 0.498: next to the centre
    # anchor k sits at index 25.5*k: 51 -> anchor 2 exactly
    assert torch.allclose(lut[51], hex_rgb("f46d43"), atol=1e-6)


def test_viridis_matches_published_palette_and_luminance_rises():
    # viridis(11) as published by viridisLite / matplotlib
    published = "440154 482475 414487 355f8d 2a788e 21918c 22a884 44bf70 7ad151 bddf26 fde725"
    got = imaging.colormap(torch.tensor([k / 10 + 1e-6 for k in range(11)]), "viridis")
    for k, h in enumerate(published.split()):
        # the published 11-step viridis is rounded to bytes and our table is interpolated between other
        # anchors: 3 grey levels, not a float32 bound
        assert torch.allclose(got[k], hex_rgb(h), atol=3 / 255), k
    lut = imaging.colormap(centres(), "viridis")
    luma = lut @ torch.tensor([0.2126, 0.7152, 0.0722])
    assert (luma[1:] - luma[:-1] > 0).all()


def test_turbo_endpoints_and_middle():
    lut = imaging.colormap(centres(), "turbo")
    # Google's Turbo table: first (0.18995, 0.07176, 0.23217), last (0.47960, 0.01583, 0.01055)
    # the published Turbo table has 5 decimals and we store bytes: half a grey level
    assert torch.allclose(lut[0], torch.tensor([0.18995, 0.07176, 0.23217]), atol=0.5 / 255)
    assert torch.allclose(lut[255], torch.tensor([0.47960, 0.01583, 0.01055]), atol=0.5 / 255)
    assert lut[128, 1] > 0.95 and lut[128, 1] > lut[128, 0] > lut[128, 2]  # green-yellow centre


# ----------------------------------------------------------------------------- normalisation


def test_normalize_min_max_per_image_and_batch():
    d = torch.tensor([[[1.0, 2.0, 3.0]], [[10.0, 20.0, 30.0]]])  # (B=2,H=1,W=3)
    per = imaging.normalize_depth(d)
    assert torch.allclose(per, torch.tensor([[[0.0, 0.5, 1.0]], [[0.0, 0.5, 1.0]]]))
    whole = imaging.normalize_depth(d[:, None], per_image=False)  # (B,1,H,W)
    assert whole.shape == (2, 1, 1, 3)
    assert torch.allclose(whole.flatten(), (d.flatten() - 1) / 29)


def test_normalize_constant_and_non_finite():
    const = imaging.normalize_depth(torch.full((1, 1, 4, 4), 5.0))
    assert torch.equal(const, torch.zeros(1, 1, 4, 4))
    d = torch.tensor([[[0.0, float("nan"), 2.0, float("inf"), 4.0, -float("inf")]]])
    out = imaging.normalize_depth(d)
    assert torch.isfinite(out).all()
    assert out.flatten().tolist() == [0.0, 0.0, 0.5, 0.0, 1.0, 0.0]
    empty = imaging.normalize_depth(torch.full((1, 2, 2), float("nan")))
    assert torch.equal(empty, torch.zeros(1, 2, 2))


def test_normalize_quantiles_match_torch_quantile():
    d = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    out = imaging.normalize_depth(d, lo_q=0.02, hi_q=0.98)
    for b in range(2):
        lo, hi = torch.quantile(d[b].flatten(), torch.tensor([0.02, 0.98]))
        # (d - lo)/(hi - lo) of O(1) values: a subtraction and a division, ~2 float32 steps of 1.2e-7; atol
        # 1e-6
        assert torch.allclose(out[b], ((d[b] - lo) / (hi - lo)).clamp(0, 1), atol=1e-6)
    with pytest.raises(InputError):
        imaging.normalize_depth(d, lo_q=0.9, hi_q=0.1)
    with pytest.raises(InputError):
        imaging.normalize_depth(torch.zeros(4, 4))


# ----------------------------------------------------------------------------- writers


def test_atomic_write_leaves_nothing_when_writer_fails(tmp_path):
    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        files.atomic_write(tmp_path / "x.bin", boom)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_never_overwrites_unless_asked(tmp_path):
    target = tmp_path / "depth.png"
    target.write_bytes(b"original")
    with pytest.raises(InputError) as err:
        files.atomic_write(target, lambda f: f.write(b"new"))
    assert "depth.png" in str(err.value) and "overwrite" in str(err.value)
    assert target.read_bytes() == b"original"
    files.atomic_write(target, lambda f: f.write(b"new"), overwrite=True)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depth.png"]  # no temp files left


def png_ihdr(path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) read straight from the PNG bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    w, h, depth, color = struct.unpack(">IIBB", data[16:26])
    return w, h, depth, color


def test_write_png16(tmp_path):
    v = torch.tensor([[0.0, 1.0, 0.5], [1 / 65535, 0.25, 2.0]])
    path = images.write_png16(tmp_path / "d.png", v)
    assert png_ihdr(path) == (3, 2, 16, 0)
    back = np.asarray(Image.open(path)).astype(np.int64)
    assert back.tolist() == [[0, 65535, 32768], [1, 16384, 65535]]  # half-even .5 -> 32768
    with pytest.raises(InputError):
        images.write_png16(tmp_path / "e.png", torch.zeros(2, 2, 3))


def test_write_png8_rgb(tmp_path):
    rgb = np.random.default_rng(5).random((4, 5, 3)).astype(np.float32)
    path = images.write_png8_rgb(tmp_path / "c.png", rgb)
    assert png_ihdr(path) == (5, 4, 8, 2)
    assert np.array_equal(np.asarray(Image.open(path)), np.round(rgb * 255).astype(np.uint8))


def test_write_npy(tmp_path):
    d = torch.randn(3, 4, dtype=torch.float64)
    back = np.load(images.write_npy(tmp_path / "d.npy", d))
    assert back.dtype == np.float32 and np.array_equal(back, d.numpy().astype(np.float32))


def read_exr(path):
    """Minimal independent reader for uncompressed single-part scanline EXR files."""
    data = path.read_bytes()
    magic, version = struct.unpack_from("<ii", data, 0)
    pos, attrs = 8, {}
    while data[pos] != 0:
        end = data.index(b"\0", pos)
        name = data[pos:end].decode()
        tend = data.index(b"\0", end + 1)
        kind = data[end + 1:tend].decode()
        (size,) = struct.unpack_from("<i", data, tend + 1)
        attrs[name] = (kind, data[tend + 5:tend + 5 + size])
        pos = tend + 5 + size
    pos += 1
    chl, channels = attrs["channels"][1], []
    i = 0
    while chl[i] != 0:
        end = chl.index(b"\0", i)
        ptype, linear, r0, r1, r2, xs, ys = struct.unpack_from("<iBBBBii", chl, end + 1)
        channels.append((chl[i:end].decode(), ptype, linear, (r0, r1, r2), xs, ys))
        i = end + 1 + 16
    assert i == len(chl) - 1
    x0, y0, x1, y1 = struct.unpack("<4i", attrs["dataWindow"][1])
    h, w = y1 - y0 + 1, x1 - x0 + 1
    offsets = struct.unpack_from(f"<{h}Q", data, pos)
    rows, ends = [], []
    for row, off in enumerate(offsets):
        y, size = struct.unpack_from("<ii", data, off)
        assert y == y0 + row and size == 4 * w
        rows.append(np.frombuffer(data, dtype="<u4", count=w, offset=off + 8))
        ends.append(off + 8 + size)
    return magic, version, attrs, channels, pos, offsets, np.stack(rows), max(ends) == len(data)


def test_write_exr_parses_back_bit_exact(tmp_path):
    d = np.random.default_rng(6).normal(size=(5, 7)).astype(np.float32)
    d[0, 0], d[1, 1], d[2, 2] = np.inf, -0.0, 1e-40  # special values survive untouched
    path = images.write_exr(tmp_path / "d.exr", torch.from_numpy(d))
    magic, version, attrs, channels, table_at, offsets, bits, ends_at_eof = read_exr(path)
    assert magic == 20000630 and version == 2
    assert channels == [("Y", 2, 0, (0, 0, 0), 1, 1)]  # FLOAT, sampling 1x1
    assert attrs["compression"] == ("compression", b"\x00")
    assert attrs["lineOrder"] == ("lineOrder", b"\x00")
    box = ("box2i", struct.pack("<4i", 0, 0, 6, 4))
    assert attrs["dataWindow"] == box and attrs["displayWindow"] == box
    assert attrs["pixelAspectRatio"] == ("float", struct.pack("<f", 1.0))
    assert attrs["screenWindowCenter"] == ("v2f", struct.pack("<2f", 0, 0))
    assert attrs["screenWindowWidth"] == ("float", struct.pack("<f", 1.0))
    assert offsets[0] == table_at + 8 * 5 and list(offsets) == sorted(offsets) and ends_at_eof
    assert np.array_equal(bits, d.view("<u4"))
    with pytest.raises(InputError):
        images.write_exr(tmp_path / "e.exr", np.zeros((2, 2), np.int32))
    assert not (tmp_path / "e.exr").exists()


# ----------------------------------------------------------------------------- loading


def test_load_image_modes(tmp_path):
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    t = images.load_image(tmp_path / "rgb.png")
    assert t.shape == (1, 3, 6, 4) and t.dtype == torch.float32
    assert torch.equal(t[0].permute(1, 2, 0), torch.from_numpy(rgb).float() / 255)

    rgba = np.concatenate([rgb, np.zeros((6, 4, 1), np.uint8)], axis=2)  # alpha 0 is dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert torch.equal(images.load_image(tmp_path / "rgba.png"), t)

    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    g = images.load_image(tmp_path / "grey.png")[0]
    assert torch.equal(g[0], torch.from_numpy(grey).float() / 255) and torch.equal(g[0], g[2])

    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    assert images.load_image(tmp_path / "pal.png").shape == (1, 3, 6, 4)


def test_load_16bit_png_keeps_precision(tmp_path):
    vals = np.array([[0, 1000, 65535], [257, 30000, 12345]], dtype=np.uint16)
    Image.fromarray(vals).save(tmp_path / "g16.png")
    assert png_ihdr(tmp_path / "g16.png")[2] == 16
    t = images.load_image(tmp_path / "g16.png")
    assert t.shape == (1, 3, 2, 3)
    # v/65535 in float32 (< 1, step 6e-8): one or two roundings -> 1e-7; an 8-bit load would be off by >= 1e-4
    assert torch.allclose(t[0, 1], torch.from_numpy(vals.astype(np.float32)) / 65535, atol=1e-7)


def test_load_image_applies_exif_rotation(tmp_path):
    a = np.zeros((2, 3, 3), np.uint8)
    a[1, 0] = (255, 0, 0)  # bottom-left pixel is red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(a).save(tmp_path / "rot.png", exif=exif.tobytes())
    t = images.load_image(tmp_path / "rot.png")
    assert t.shape == (1, 3, 3, 2)
    assert t[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]  # bottom-left moved to top-left


def test_load_image_errors(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(InputError, match="nope.png"):
        images.load_image(missing)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="bad.png"):
        images.load_image(bad)
