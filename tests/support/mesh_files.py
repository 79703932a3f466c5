"""Readers of the PLY and GLB files the pack writes, checking the layout while reading (for the tests)."""
from __future__ import annotations

import json
import struct

import torch


def read_ply(path):
    """(xyz, rgb) of a binary PLY point cloud, asserting its header and size."""
    data = path.read_bytes()
    head, body = data.split(b"end_header\n", 1)
    lines = head.decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    count = int(next(line for line in lines if line.startswith("element vertex")).split()[-1])
    props = [line.split()[1:] for line in lines if line.startswith("property")]
    assert props == [["float", "x"], ["float", "y"], ["float", "z"],
                     ["uchar", "red"], ["uchar", "green"], ["uchar", "blue"]]
    assert len(body) == 15 * count
    rows = list(struct.iter_unpack("<fffBBB", body))
    return torch.tensor([r[:3] for r in rows]), torch.tensor([r[3:] for r in rows])


def read_glb(path):
    """(glTF JSON, accessor arrays) of a GLB file, asserting its chunk layout and alignment."""
    data = path.read_bytes()
    magic, version, total = struct.unpack_from("<4sII", data)
    assert (magic, version, total) == (b"glTF", 2, len(data))
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    assert json_type == b"JSON" and json_len % 4 == 0
    text = data[20:20 + json_len]
    assert text == text.rstrip(b" ") + b" " * (len(text) - len(text.rstrip(b" ")))
    doc = json.loads(text)
    bin_len, bin_type = struct.unpack_from("<I4s", data, 20 + json_len)
    assert bin_type == b"BIN\x00" and bin_len % 4 == 0
    blob = data[28 + json_len:28 + json_len + bin_len]
    assert 28 + json_len + bin_len == len(data)
    assert doc["asset"]["version"] == "2.0" and doc["buffers"][0]["byteLength"] <= bin_len
    sizes = {5126: ("f", 4), 5125: ("I", 4)}
    arrays = []
    for acc in doc["accessors"]:
        view = doc["bufferViews"][acc["bufferView"]]
        fmt, size = sizes[acc["componentType"]]
        width = {"VEC3": 3, "SCALAR": 1}[acc["type"]]
        assert view["byteOffset"] % 4 == 0 and view["byteLength"] == acc["count"] * width * size
        assert view["byteOffset"] + view["byteLength"] <= doc["buffers"][0]["byteLength"]
        values = struct.unpack_from(f"<{acc['count'] * width}{fmt}", blob, view["byteOffset"])
        arrays.append(torch.tensor(values, dtype=torch.float64).view(acc["count"], width))
    return doc, arrays


def ply_vertex_count(path) -> int:
    """The vertex count a PLY header declares."""
    head = path.read_bytes().split(b"end_header\n", 1)[0].decode("ascii")
    return int(next(line for line in head.splitlines() if line.startswith("element vertex")).split()[-1])
