"""Long videos hold nothing per frame: the tensors alive at the peak of a long video are those of a short
one (the tiny Wan), and on the CPU the streaming loop runs under a fixed glibc mmap threshold, so large
blocks freed go back to the system at once and the resident set follows what is alive (bench_wan.py
measures the resident peak itself, in fresh processes, for every method)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


glibc_only = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm") or _glibc() is None, reason="glibc on Linux"
)


@glibc_only
def test_release_free_heap_returns_freed_blocks_below_a_live_one():
    blocks, pins = [], []
    for _ in range(48):  # 512 KiB blocks (in the heap), each followed by a small live one
        blocks.append(torch.ones(1 << 17))
        pins.append(torch.ones(16))
    del blocks
    before = _rss()
    release_free_heap()
    assert before - _rss() >= 16 << 20  # most of the 24 MiB freed, resident until now


# A fresh process (a test process's heap holds freed blocks, which serve later requests of any size), in
# glibc's state once a 32 MiB mapped block is freed (as the Wan decoder's 20 MiB buffers are): its mmap
# threshold raised to that size (every smaller block in the heap) and twice that kept free at its top.
# 24 MiB of 6 MiB blocks (above steady_heap's 4 MiB), each below a small live one, are freed; it prints the
# resident memory the frees gave back at once (no trim) and whether steady_heap took effect.
_CHILD = """
import ctypes, os, sys, torch
from stillmotion.engines.long_video import steady_heap
ctypes.CDLL(None).mallopt(-3, 32 << 20), ctypes.CDLL(None).mallopt(-1, 64 << 20)
took = steady_heap() if sys.argv[1] == "steady" else False
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
blocks, pins = [], []
for _ in range(4):
    blocks.append(torch.ones(3 << 19))
    pins.append(torch.ones(16))
before = rss()
del blocks
print(before - rss(), took)
"""


def _returned_by_free(mode: str, extra: dict | None = None) -> tuple[int, bool]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env.update(PYTHONPATH=src, OMP_NUM_THREADS="1", **(extra or {}))
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, env=env,
                         check=True).stdout.split()  # fmt: skip
    return int(out[0]), out[1] == "True"


@glibc_only
def test_steady_heap_gives_freed_large_blocks_back_at_once():
    held, _ = _returned_by_free("plain")
    assert held < 12 << 20  # glibc's own rule: in the heap, the freed blocks stay resident
    returned, took = _returned_by_free("steady")
    assert took and returned >= 20 << 20  # their own mappings: given back when freed


@glibc_only
def test_steady_heap_leaves_the_users_threshold():
    returned, took = _returned_by_free("steady", {"MALLOC_MMAP_THRESHOLD_": str(64 << 20)})
    assert not took and returned < 12 << 20


@glibc_only
def test_cpu_stream_sets_the_steady_heap(wan, monkeypatch):
    import stillmotion.engines.long_video as long_video

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setitem(long_video._steady, "set", False)  # as in a process where nothing set it yet
    image = (np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)
    prepared = wan.prepare(image, num_frames=90, width=16, height=16, max_sequence_length=16,
                           prompt="water flows", guidance_scale=4.0)  # fmt: skip
    stream = stream_long_video(wan, prepared, LongOptions(method="direct"), steps=1, seed=0)
    next(stream)
    assert long_video._steady["set"]
    stream.close()
