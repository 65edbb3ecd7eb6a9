"""Long videos hold nothing per frame: the tensors alive at the peak of a long video are those of a short
one (the tiny Wan), and the streaming loop's heap trim gives freed memory back to the system (glibc), so
the resident set follows what is alive (bench_wan.py measures the resident peak itself, in fresh
processes, for every method)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from stillmotion.engines.long_video import _glibc, release_free_heap, stream_long_video
from stillmotion.evaluation.long_bench import live_tensor_bytes
from stillmotion.sampling.long import LongOptions

pytest.importorskip("diffusers")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wan():
    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    with torch.random.fork_rng(devices=[]):
        return WanBackbone(**tiny_wan_components("wan2.1"))


# phased and direct hold one window (gen-l-video and freenoise hold every latent frame by design: one step
# over the whole video); a decoded frame kept per frame would add 3 KiB each, 500 KiB at this length
@pytest.mark.parametrize("method", ["phased", "direct"])
def test_wan_long_video_holds_no_more_at_twice_the_length(wan, method):
    image = (np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)

    def peak(frames: int) -> tuple[int, int]:
        prepared = wan.prepare(image, num_frames=frames, width=16, height=16, max_sequence_length=16,
                               prompt="water flows", guidance_scale=4.0)  # fmt: skip
        options = LongOptions(method=method, gamma=0.5)  # phased: one of the two steps redone

        def run() -> None:
            count = sum(f.shape[1] for f, _ in stream_long_video(wan, prepared, options, steps=2, seed=0))
            assert count == frames

        return live_tensor_bytes(run)

    peak(90)  # warm-up: one-off buffers
    # 42 and 84 latent frames: 2 and 4 whole clips for direct; phased's later segments full-length in both
    (short, short_end), (long, long_end) = peak(165), peak(333)
    assert short_end <= 1024 and long_end <= 1024  # nothing kept after the video
    assert long <= 1.05 * short, (method, short, long)  # within 5%: 35 KiB here


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm") or _glibc() is None, reason="glibc on Linux")
def test_release_free_heap_returns_freed_blocks_below_a_live_one():
    blocks, pins = [], []
    for _ in range(48):  # 512 KiB blocks (in the heap), each followed by a small live one
        blocks.append(torch.ones(1 << 17))
        pins.append(torch.ones(16))
    del blocks
    before = _rss()
    release_free_heap()
    assert before - _rss() >= 16 << 20  # most of the 24 MiB freed, resident until now
