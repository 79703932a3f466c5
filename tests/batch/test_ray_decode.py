"""The decode step of `predict --ray` (batch.distributed.decode) streams an item's samples: a video's frames
leave one by one as they are loaded, never collected into one list (Ray itself is not needed here)."""
from __future__ import annotations

import torch

from comfyui_ppd.batch.distributed import decode
from comfyui_ppd.errors import InputError

ROW = {"index": 0, "path": "/in/clip.mp4", "stem": "clip", "kind": "video"}


class Frames:
    """A processor whose `load` yields `n` (1,3,4,6) frames, counting how many it has made; fails at `fail`."""

    def __init__(self, n: int, fail: int | None = None) -> None:
        self.n, self.fail, self.made = n, fail, 0

    def load(self, item):
        for t in range(self.n):
            if t == self.fail:
                raise InputError(f"decoding {item.path} stopped at frame {t}")
            self.made += 1
            yield t, (4, 6), {"image": torch.full((1, 3, 4, 6), float(t)), "input_size": (8, 12)}


def test_a_video_leaves_frame_by_frame_and_its_last_frame_carries_the_count():
    source = Frames(40)
    rows = decode(ROW, source)
    seen = []
    for row in rows:
        seen.append(row)
        assert source.made <= len(seen) + 1                   # at most one frame held back (it may be the last)
    assert [r["tag"] for r in seen] == list(range(40)) and source.made == 40
    assert [r["count"] for r in seen] == [0] * 39 + [40]
    assert seen[7]["image"] == torch.full((1, 3, 4, 6), 7.0).numpy().tobytes() and seen[7]["in_size"] == [8, 12]
    assert all(r["error"] == "" and r["stem"] == "clip" for r in seen)


def test_a_decoder_failure_keeps_the_frames_before_it_and_ends_with_an_error_row():
    rows = list(decode(ROW, Frames(40, fail=5)))
    assert [r["tag"] for r in rows] == [0, 1, 2, 3, 4, -1] and all(r["count"] == 0 for r in rows)
    assert "stopped at frame 5" in rows[-1]["error"] and rows[-1]["image"] == b""
    one = list(decode({**ROW, "kind": "image"}, Frames(1)))
    assert len(one) == 1 and one[0]["count"] == 1 and one[0]["tag"] == 0
