"""Long videos on the tiny Wan backbone through the engine (``animate_wan``): cost and peak memory. Prints
its figures.

    .venv/bin/python benchmarks/bench_wan.py [--frames 125] [--long-frames 500] [--steps 4] [--size 128x128]
        [--methods phased,direct,freenoise,gen-l-video] [--heap plain,no-trim,mmap-threshold,tensors]
        [--repeats 1]

The Wan 2.1 image-to-video layout with RANDOM tiny weights (diffusers' test sizes; the costs and the memory
are real, the pictures are not), saved in diffusers' folder layout and loaded as ``--model`` would load it;
81-frame clips (21 latent frames), CPU, one torch thread (BENCH_THREADS). For each method, each variant and
each length, ``--repeats`` times, in a fresh process: the frames produced, the latent frames, denoiser and
transformer calls, the time and the peak rise of resident memory while the video is sampled and decoded.
The rise is measured from what is alive after a warm-up run (which allocates the one-off buffers; its freed
memory is handed back before the baseline is read) to the process's resident high-water mark (VmHWM, reset
at the baseline; a 5 ms poll of the resident set where it cannot be reset, which also says when the peak
fell). Target: 500 frames <= 1.3x the memory of 125 frames, printed per run and for the largest 500-frame
run against the smallest 125-frame one.

``--heap`` (a comma list; each is run for every method): ``plain`` (the default) is a plain process, as a
user runs it: the streaming loop sets glibc's mmap threshold for the run
(``engines.long_video.steady_heap``). ``no-trim`` leaves the allocator alone (glibc's dynamic threshold; the
cause, and the baseline of the time cost, printed as ``time plain / no-trim``). ``mmap-threshold`` leaves
it alone in the loop but runs under ``MALLOC_MMAP_THRESHOLD_=65536`` (every block of 64 KiB and more in its
own mapping, for the whole process). ``tensors`` measures no resident memory but the peak of the CPU tensors
alive (torch's profiler's allocation events), and what is still alive at the end, in a plain process.
"""

from __future__ import annotations

import argparse
import gc
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


def _vm_hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_peak() -> bool:
    """Reset the process's resident high-water mark (VmHWM) to its current size (Linux >= 4.0); False if
    this system cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _vm_hwm_bytes()
    except OSError:
        return False
    return True


def child(folder: Path, method: str, frames: int, steps: int, size: tuple[int, int], heap: str) -> None:
    """One run in this fresh process; prints a JSON line."""
    import stillmotion.engines.long_video as long_video
    from stillmotion.engines.wan import animate_wan
    from stillmotion.evaluation.long_bench import live_tensor_bytes
    from stillmotion.inputs.scene import Scene

    if heap in ("no-trim", "mmap-threshold"):  # the streaming loop leaves the allocator alone
        long_video.HEAP_MMAP_THRESHOLD = 0
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
    # The baseline is what is alive after the warm-up, in every variant: what the warm-up freed is handed
    # back first (else a variant that keeps freed memory resident starts high and its run refills that
    # first, which hides its rise).
    gc.collect()
    libc = long_video._glibc()
    if libc is not None:
        libc.malloc_trim(0)
    trace: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:  # when the peak falls (VmHWM, exact, says only how high)
        while not stop.is_set():
            trace.append((time.perf_counter(), _rss_bytes()))
            time.sleep(0.005)

    start_rss = _rss_bytes()
    exact = _reset_peak()
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t0 = time.perf_counter()
    it, stats = animate_wan(scene, None, frames=frames, **kw)
    count = sum(1 for _ in it)
    elapsed = time.perf_counter() - t0
    stop.set()
    poller.join()
    trace.append((time.perf_counter(), _rss_bytes()))
    t_peak, polled = max(trace, key=lambda tr: tr[1])
    peak = (max(_vm_hwm_bytes(), polled) if exact else polled) - start_rss
    print(json.dumps({"method": method, "frames": count, "latent_frames": stats["latent_frames"],
                      "unet_calls": stats["unet_calls"], "transformer_calls": stats["transformer_calls"],
                      "time_s": elapsed, "peak_mem_mib": peak / 2**20, "exact": exact,
                      "peak_at": (t_peak - t0) / max(elapsed, 1e-9)}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=125)
    ap.add_argument("--long-frames", type=int, default=500)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", default="128x128", help="WxH, multiples of 16")
    ap.add_argument("--methods", default="phased,direct,freenoise,gen-l-video")
    ap.add_argument("--heap", default="plain", help=f"comma list of {', '.join(HEAPS)} (module docstring)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of every variant and length")
    ap.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    w, h = (int(v) for v in args.size.lower().split("x"))
    heaps = args.heap.split(",")
    for heap in heaps:
        if heap not in HEAPS:
            ap.error(f"--heap must be a comma list of {', '.join(HEAPS)}, got {heap!r}")
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.child is not None:
        folder, method, frames, heap = args.child
        child(Path(folder), method, int(frames), args.steps, (w, h), heap)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp))
        for method in args.methods.split(","):
            run_method(folder, method, heaps, args)


def run_method(folder: Path, method: str, heaps: list[str], args: argparse.Namespace) -> None:
    """Every heap variant and both lengths of one method, ``--repeats`` times, each run in a fresh process
    (the variants interleaved, so a change in the machine's load falls on all of them); per run and then
    over the runs: the 500 / 125 ratio and the time against ``no-trim``."""
    lengths = (args.frames, args.long_frames)
    rows: dict[str, list[dict[int, dict]]] = {heap: [] for heap in heaps}
    for rep in range(args.repeats):
        for heap in heaps:
            pair = {}
            for n in lengths:
                cmd = [sys.executable, __file__, "--child", str(folder), method, str(n), heap, "--steps",
                       str(args.steps), "--size", args.size]  # fmt: skip
                env = dict(os.environ)
                if heap == "mmap-threshold":
                    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
                pair[n] = r = json.loads(out.strip().splitlines()[-1])
                what = (f"{r['time_s']:.1f} s, peak memory rise {r['peak_mem_mib']:.1f} MiB "
                        f"({'VmHWM' if r['exact'] else 'polled'}, at {100 * r['peak_at']:.0f}% of the run)"
                        if heap != "tensors" else f"peak of live tensors {r['peak_mem_mib']:.2f} MiB, "
                        f"{r['end_mib']:.2f} MiB alive at the end")  # fmt: skip
                print(f"{method}, {heap} heap, run {rep + 1}, {n} frames: {r['frames']} frames out "
                      f"({r['latent_frames']} latent), {r['unet_calls']} denoiser calls, "
                      f"{r['transformer_calls']} transformer calls, {what}", flush=True)  # fmt: skip
            rows[heap].append(pair)
            a, b = (pair[n]["peak_mem_mib"] for n in lengths)
            print(f"{method}, {heap} heap, run {rep + 1}: peak memory {lengths[1]} / {lengths[0]} frames: "
                  f"{b / max(a, 1e-9):.2f}x", flush=True)  # fmt: skip
        if "no-trim" in heaps:
            base = sum(r["time_s"] for r in rows["no-trim"][-1].values())
            for heap in heaps:
                if heap not in ("no-trim", "tensors"):
                    t = sum(r["time_s"] for r in rows[heap][-1].values())
                    print(f"{method}, run {rep + 1}: time {heap} / no-trim: {t / base:.2f}x (both lengths)",
                          flush=True)  # fmt: skip
    for heap in heaps:
        short = [p[lengths[0]]["peak_mem_mib"] for p in rows[heap]]
        long = [p[lengths[1]]["peak_mem_mib"] for p in rows[heap]]
        ratios = [b / max(a, 1e-9) for a, b in zip(short, long, strict=True)]
        worst = max(long) / max(min(short), 1e-9)  # the largest long run against the smallest short one
        fmt = " / ".join
        print(f"{method}, {heap} heap, {len(ratios)} runs: peak memory {lengths[0]} frames "
              f"{fmt(f'{v:.1f}' for v in short)} MiB, {lengths[1]} frames {fmt(f'{v:.1f}' for v in long)} "
              f"MiB; {lengths[1]} / {lengths[0]} per run {fmt(f'{v:.2f}x' for v in ratios)} "
              f"(largest {max(ratios):.2f}x), largest {lengths[1]} / smallest {lengths[0]} {worst:.2f}x "
              f"(target <= 1.3x: {'met' if worst <= 1.3 else 'NOT met'})", flush=True)  # fmt: skip
    if "no-trim" in heaps and args.repeats > 1:
        for heap in heaps:
            if heap not in ("no-trim", "tensors"):
                each = [sum(r["time_s"] for r in a.values()) / sum(r["time_s"] for r in b.values())
                        for a, b in zip(rows[heap], rows["no-trim"], strict=True)]  # fmt: skip
                print(f"{method}: time {heap} / no-trim per run {' / '.join(f'{v:.2f}x' for v in each)}, "
                      f"all runs {sum(each) / len(each):.2f}x on average", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
