"""Long videos on the tiny Wan backbone through the engine (``animate_wan``): cost and peak memory. Prints
its figures.

    .venv/bin/python benchmarks/bench_wan.py [--frames 125] [--long-frames 500] [--steps 4] [--size 128x128]
        [--methods phased,direct,freenoise,gen-l-video] [--heap plain,no-trim,mmap-threshold]

The Wan 2.1 image-to-video layout with RANDOM tiny weights (diffusers' test sizes; the costs and the memory
are real, the pictures are not), saved in diffusers' folder layout and loaded as ``--model`` would load it;
81-frame clips (21 latent frames), CPU, one torch thread (BENCH_THREADS). For each method and each length,
in a fresh process: the frames produced, the latent frames, denoiser and transformer calls, the time and the
peak rise of resident memory while the video is sampled and decoded (after a warm-up run that allocates the
one-off buffers). Target: 500 frames <= 1.3x the memory of 125 frames.

``--heap`` (a comma list; each is run for every method): ``plain`` (the default) is a plain process, as a
user runs it; the streaming loop gives freed heap memory back after every denoiser call and decoded latent
frame (``engines.long_video.release_free_heap``). ``no-trim`` is the same with that call a no-op: glibc keeps
freed blocks resident and the peak rises with the video's length although the tensors alive do not (the
cause, and the cost of the fix: the time of ``plain`` against ``no-trim``, printed when both run).
``mmap-threshold`` runs without the trim under ``MALLOC_MMAP_THRESHOLD_=65536`` (every block of 64 KiB and
more in its own mapping, returned when freed: the resident set follows what is alive, at the cost of a page
fault per reuse). ``tensors`` measures no resident memory but the peak of the CPU tensors alive (torch's
profiler's allocation events), and what is still alive at the end, in a plain process.
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


HEAPS = ("plain", "no-trim", "mmap-threshold", "tensors")


def child(folder: Path, method: str, frames: int, steps: int, size: tuple[int, int], heap: str) -> None:
    """One run in this fresh process; prints a JSON line."""
    import stillmotion.engines.long_video as long_video
    from stillmotion.engines.wan import animate_wan
    from stillmotion.evaluation.long_bench import live_tensor_bytes
    from stillmotion.inputs.scene import Scene

    if heap in ("no-trim", "mmap-threshold"):  # the streaming loop's malloc_trim off
        long_video.release_free_heap = lambda: None

    rng = np.random.default_rng(0)
    scene = Scene(image=(rng.random((size[1], size[0], 3)) * 255).astype(np.uint8), arrows=[])
    kw = dict(model=folder, steps=steps, size=size, long_method=method, prompt="water flows", guidance=4.0)
    for _ in animate_wan(scene, None, frames=90, **{**kw, "steps": 1})[0]:  # warm-up
        pass
    if heap == "tensors":  # the tensors alive, not the resident set (the profiler's own buffers would count)
        it, stats = animate_wan(scene, None, frames=frames, **kw)
        peak, end = live_tensor_bytes(lambda: sum(1 for _ in it))
        print(json.dumps({"method": method, "frames": frames, "latent_frames": stats["latent_frames"],
                          "unet_calls": stats["unet_calls"], "transformer_calls": stats["transformer_calls"],
                          "time_s": 0.0, "peak_mem_mib": peak / 2**20, "end_mib": end / 2**20}))  # fmt: skip
        return
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
    ap.add_argument("--heap", default="plain", help=f"comma list of {', '.join(HEAPS)} (module docstring)")
    ap.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    w, h = (int(v) for v in args.size.lower().split("x"))
    heaps = args.heap.split(",")
    for heap in heaps:
        if heap not in HEAPS:
            ap.error(f"--heap must be a comma list of {', '.join(HEAPS)}, got {heap!r}")
    if args.child is not None:
        folder, method, frames, heap = args.child
        child(Path(folder), method, int(frames), args.steps, (w, h), heap)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp))
        for method in args.methods.split(","):
            times = {}
            for heap in heaps:
                rows = {}
                for n in (args.frames, args.long_frames):
                    cmd = [sys.executable, __file__, "--child", str(folder), method, str(n), heap, "--steps",
                           str(args.steps), "--size", args.size]  # fmt: skip
                    env = dict(os.environ)
                    if heap == "mmap-threshold":
                        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
                    rows[n] = r = json.loads(out.strip().splitlines()[-1])
                    what = (f"{r['time_s']:.1f} s, peak memory rise {r['peak_mem_mib']:.1f} MiB"
                            if heap != "tensors" else f"peak of live tensors {r['peak_mem_mib']:.2f} MiB, "
                            f"{r['end_mib']:.2f} MiB alive at the end")  # fmt: skip
                    print(f"{method}, {heap} heap, {n} frames: {r['frames']} frames out "
                          f"({r['latent_frames']} latent), {r['unet_calls']} denoiser calls, "
                          f"{r['transformer_calls']} transformer calls, {what}", flush=True)  # fmt: skip
                a, b = rows[args.frames]["peak_mem_mib"], rows[args.long_frames]["peak_mem_mib"]
                ratio = b / max(a, 1e-9)
                print(f"{method}, {heap} heap: peak memory {args.long_frames} / {args.frames} frames: "
                      f"{ratio:.2f}x (target <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})",
                      flush=True)  # fmt: skip
                times[heap] = sum(r["time_s"] for r in rows.values())
            if "plain" in times and "no-trim" in times:
                print(f"{method}: time with the heap trims / without: "
                      f"{times['plain'] / times['no-trim']:.2f}x (both lengths)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
