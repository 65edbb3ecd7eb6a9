"""Long videos on the tiny Wan backbone through the engine (``animate_wan``): cost and peak memory. Prints
its figures.

    .venv/bin/python benchmarks/bench_wan.py [--frames 125] [--long-frames 500] [--steps 4] [--size 128x128]
        [--methods phased,direct,freenoise,gen-l-video]

The Wan 2.1 image-to-video layout with RANDOM tiny weights (diffusers' test sizes; the costs and the memory
are real, the pictures are not), saved in diffusers' folder layout and loaded as ``--model`` would load it;
81-frame clips (21 latent frames), CPU, one torch thread (BENCH_THREADS). For each method and each length,
in a fresh process: the frames produced, the latent frames, denoiser and transformer calls, the time and the
peak rise of resident memory while the video is sampled and decoded (after a warm-up run that allocates the
one-off buffers). Target: 500 frames <= 1.3x the memory of 125 frames.

The child processes run with ``MALLOC_MMAP_THRESHOLD_=65536``: glibc then gives blocks of 64 KiB and more
back to the system when they are freed, so the resident set follows the memory that is alive. With glibc's
default heap the freed blocks stay resident in a pattern that depends on the order of allocations, and the
peak rises with the number of segments although nothing is held (``--glibc-default`` measures that way).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_folder(root: Path) -> Path:
    from diffusers import WanImageToVideoPipeline

    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    folder = root / "Wan2.1-I2V-14B-480P-Diffusers"
    if not (folder / "model_index.json").is_file():
        WanImageToVideoPipeline(**tiny_wan_components("wan2.1")).save_pretrained(folder)
    return folder


def child(folder: Path, method: str, frames: int, steps: int, size: tuple[int, int]) -> None:
    """One run in this fresh process; prints a JSON line."""
    from stillmotion.engines.wan import animate_wan
    from stillmotion.inputs.scene import Scene

    rng = np.random.default_rng(0)
    scene = Scene(image=(rng.random((size[1], size[0], 3)) * 255).astype(np.uint8), arrows=[])
    kw = dict(model=folder, steps=steps, size=size, long_method=method, prompt="water flows", guidance=4.0)
    for _ in animate_wan(scene, None, frames=90, **{**kw, "steps": 1})[0]:  # warm-up
        pass
    trace: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            trace.append(_rss_bytes())
            time.sleep(0.005)

    start_rss = _rss_bytes()
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t0 = time.perf_counter()
    it, stats = animate_wan(scene, None, frames=frames, **kw)
    count = sum(1 for _ in it)
    elapsed = time.perf_counter() - t0
    stop.set()
    poller.join()
    peak = max(trace + [_rss_bytes()]) - start_rss
    print(json.dumps({"method": method, "frames": count, "latent_frames": stats["latent_frames"],
                      "unet_calls": stats["unet_calls"], "transformer_calls": stats["transformer_calls"],
                      "time_s": elapsed, "peak_mem_mib": peak / 2**20}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=125)
    ap.add_argument("--long-frames", type=int, default=500)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", default="128x128", help="WxH, multiples of 16")
    ap.add_argument("--methods", default="phased,direct,freenoise,gen-l-video")
    ap.add_argument("--glibc-default", action="store_true", help="children keep glibc's default heap")
    ap.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    w, h = (int(v) for v in args.size.lower().split("x"))
    if args.child is not None:
        folder, method, frames = args.child
        child(Path(folder), method, int(frames), args.steps, (w, h))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp))
        for method in args.methods.split(","):
            rows = {}
            for n in (args.frames, args.long_frames):
                cmd = [sys.executable, __file__, "--child", str(folder), method, str(n), "--steps",
                       str(args.steps), "--size", args.size]  # fmt: skip
                env = dict(os.environ)
                if not args.glibc_default:
                    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
                rows[n] = r = json.loads(out.strip().splitlines()[-1])
                print(f"{method}, {n} frames: {r['frames']} frames out ({r['latent_frames']} latent), "
                      f"{r['unet_calls']} denoiser calls, {r['transformer_calls']} transformer calls, "
                      f"{r['time_s']:.1f} s, peak memory rise {r['peak_mem_mib']:.1f} MiB")  # fmt: skip
            a, b = rows[args.frames]["peak_mem_mib"], rows[args.long_frames]["peak_mem_mib"]
            ratio = b / max(a, 1e-9)
            print(f"{method}: peak memory {args.long_frames} / {args.frames} frames: {ratio:.2f}x "
                  f"(target <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
