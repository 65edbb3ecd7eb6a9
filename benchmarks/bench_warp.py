"""Warp engine speed and memory: the fast numba path against a plain PyTorch splat, in one run.

    .venv/bin/python benchmarks/bench_warp.py                 # speed (125 frames) + memory (125 vs 500)
    .venv/bin/python benchmarks/bench_warp.py --quick         # smaller, for a smoke run
    .venv/bin/python benchmarks/bench_warp.py --hd --skip-speed --skip-memory   # 1080p and 4K only

Speed: 125 frames at 512x512 of a seamless loop (two branches per frame), with a smooth field that
moves *every* pixel (the worst case; real masks move fewer). Each configuration runs ``--repeats``
times, interleaved, and the best run is reported. Printed for each: wall-clock render seconds and
frames/s, CPU seconds on the critical path (per-thread CPU clocks: the wall time the run would take
on an idle machine; the shared machine's wall clock also counts other programs' turns on the
cores), and the ratios to the plain PyTorch implementation
(:mod:`stillmotion.engines.warp.reference`: whole-array Euler steps, Jacobians, sampling and blend,
forward-reading branch stored for all frames). The splatting engine of ``--baseline`` (an earlier
revision, loaded by ``git show``) runs in the same interleaved rounds. Timing covers frame
generation only (no encoding); the JIT compilation is done before timing and reported on its own.

Memory: separate processes render a 125-frame and a 500-frame loop at 512x512 and stream them into
an .mp4 with the project's writer (the real path of ``stillmotion animate``), reporting peak RSS
and the tracemalloc peak of Python/NumPy allocations; the ratios 500/125 should be <= 1.2.

HD (``--hd``): the real path of ``stillmotion animate`` at export sizes, each in its own process:
render + stream to .mp4 with the project's writer (its x264 preset for the size), for the
1920x1080 waterfall (the shared cinemagraphy3d photo upscaled from 1280x720, its five arrows and
mask; 125-frame loop), the same without a mask (a smooth field moving every pixel), 500 frames of
the masked loop (memory against 125), and 3840x2160 (the photo upscaled again, masked, 125 frames);
the masked 1080p loop also with the renderer of ``--hd-before`` (an earlier revision), for a
same-run comparison.
Printed: wall seconds, process CPU seconds (all threads: renderer and encoder), the encoder's
share, peak RSS while rendering and encoding (VmHWM reset once the kernels are loaded), and the
engine's own figures. Also the x264 presets' CPU time on the same 1080p frames.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SIZE = 512


def reset_peak_rss() -> bool:
    """Reset Linux's peak resident counter (VmHWM) so that what follows reads its own peak; False where
    the kernel offers no reset."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def scene(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like texture and a smooth swirling field moving every pixel (0.6-2.2 px/frame)."""
    import cv2

    rng = np.random.default_rng(0)
    noise = rng.random((size // 8, size // 8, 3)).astype(np.float32)
    image = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    image += rng.random((size, size, 3)).astype(np.float32) * 0.25
    image = np.clip(image / image.max() * 255, 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size * 2 * np.pi
    field = np.stack([1.4 + 0.8 * np.sin(2 * yy), 0.8 * np.cos(3 * xx)], -1).astype(np.float32)
    return image, field


def critical_path(warp) -> tuple[float, float]:
    """Render all frames of ``warp``; return (wall seconds, critical-path CPU seconds).

    The critical path is the main thread's CPU time with each two-thread phase counted as the longer
    of its two jobs (per-thread CPU clocks): what the wall time would be on an idle machine. On this
    shared machine wall time also counts the time other programs held the cores.
    """
    parallel = {"max": 0.0, "main": 0.0}
    plain = warp._both

    def timed(fn, args):
        start = time.thread_time()
        result = fn(*args)
        return result, time.thread_time() - start

    def both(first, second):
        if warp._pool is None:
            return plain(first, second)
        future = warp._pool.submit(timed, *first)
        b, tb = timed(*second)
        a, ta = future.result()
        parallel["max"] += max(ta, tb)
        parallel["main"] += tb
        return a, b

    warp._both = both
    wall, cpu = time.perf_counter(), time.thread_time()
    count = sum(1 for _ in warp.frames())
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    assert count == warp.n_frames
    return wall, cpu - parallel["main"] + parallel["max"]


def speed(frames: int, repeats: int, size: int, baseline: str | None = None) -> dict:
    import torch

    from stillmotion.engines.warp import EulerianWarp
    from stillmotion.engines.warp.reference import reference_frames

    image, field = scene(size)
    start = time.perf_counter()
    list(EulerianWarp(image[:32, :32], field[:32, :32], frames=3).frames())  # compile / load the JIT cache
    jit_seconds = time.perf_counter() - start

    def fast(threads: int):
        return lambda: critical_path(EulerianWarp(image, field, frames=frames, loop=True, threads=threads))

    def naive():
        wall, cpu = time.perf_counter(), time.process_time()
        count = sum(1 for _ in reference_frames(EulerianWarp(image, field, frames=frames, loop=True)))
        assert count == frames
        return time.perf_counter() - wall, time.process_time() - cpu

    # PyTorch runs single-threaded here: with its 2 OpenMP threads on this shared machine, spinning
    # workers made it 10-20x slower under load, which would flatter the comparison.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    configs = {"naive PyTorch, 1 thread": naive, "fast, 1 thread": fast(1), "fast, 2 threads": fast(2)}
    if baseline:  # the splatting engine of an earlier revision, under the same load, interleaved
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench_warp_quality import load_baseline

        old = load_baseline(baseline)
        list(old(image[:32, :32], field[:32, :32], frames=3).frames())
        configs[f"splatting engine {baseline}, 2 threads"] = lambda: critical_path(
            old(image, field, frames=frames, loop=True, threads=2)
        )
    wall = {name: float("inf") for name in configs}
    cpu = {name: float("inf") for name in configs}
    for _ in range(repeats):
        for name, run in configs.items():
            w, c = run()
            wall[name], cpu[name] = min(wall[name], w), min(cpu[name], c)
    torch.set_num_threads(torch_threads)
    base_wall, base_cpu = wall["naive PyTorch, 1 thread"], cpu["naive PyTorch, 1 thread"]
    rows = [
        {"config": name, "wall_s": round(wall[name], 3), "wall_fps": round(frames / wall[name], 1),
         "cpu_s": round(cpu[name], 3), "cpu_fps": round(frames / cpu[name], 1),
         "speedup_wall": round(base_wall / wall[name], 2), "speedup_cpu": round(base_cpu / cpu[name], 2)}
        for name in configs
    ]  # fmt: skip
    return {"frames": frames, "size": size, "jit_seconds": round(jit_seconds, 2), "rows": rows}


def memory_child(frames: int, size: int, trace: bool) -> None:
    """Render a loop and stream it into an mp4; print peak memory as JSON (runs in its own process)."""
    import tracemalloc

    from stillmotion.engines.warp import EulerianWarp
    from stillmotion.io.video_writer import open_video_writer

    image, field = scene(size)
    list(EulerianWarp(image[:32, :32], field[:32, :32], frames=3).frames())  # JIT before measuring
    if trace:
        tracemalloc.start()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The process peak so far comes from imports and the JIT; reset Linux's peak counter (VmHWM)
    # so that the render's own peak can be read afterwards.
    hwm_reset = reset_peak_rss()
    with tempfile.TemporaryDirectory() as tmp:
        with open_video_writer(os.path.join(tmp, "loop.mp4"), fps=30) as writer:
            for frame in EulerianWarp(image, field, frames=frames, loop=True).frames():
                writer.write(frame)
    peak_trace = tracemalloc.get_traced_memory()[1] if trace else 0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    render_peak = None
    if hwm_reset:
        with open("/proc/self/status") as fh:
            render_peak = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"frames": frames, "rss_mb": rss / 1024, "rss_before_mb": rss_before / 1024,
                      "render_rss_mb": render_peak, "tracemalloc_mb": peak_trace / 2**20}))  # fmt: skip


def memory(counts: list[int], size: int) -> list[dict]:
    out = []
    for n in counts:
        row = {"frames": n}
        for trace in (False, True):  # RSS without tracemalloc's overhead; then the traced peak
            args = [sys.executable, __file__, "--memory-child", str(n), "--size", str(size)]
            result = subprocess.run(args + (["--trace"] if trace else []), capture_output=True, text=True)
            if result.returncode:
                raise SystemExit(f"memory run for {n} frames failed:\n{result.stderr}")
            doc = json.loads(result.stdout.strip().splitlines()[-1])
            row.update({"tracemalloc_mb": doc["tracemalloc_mb"]} if trace else
                       {"rss_mb": doc["rss_mb"], "render_rss_mb": doc["render_rss_mb"]})  # fmt: skip
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------- HD
def hd_scene(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(image, field, mask) for ``kind``: "mask" (1080p waterfall), "nomask" (1080p, every pixel
    moving), "4k" (the waterfall at 3840x2160)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_warp_quality import hd_waterfall

    item = hd_waterfall(3840, 2160) if kind == "4k" else hd_waterfall()
    if item is None:
        raise SystemExit("the shared data (../shared/data/images/cinemagraphy3d) are needed for --hd")
    if kind != "nomask":
        return item["image"], item["field"], item["mask"]
    h, w = item["image"].shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / h * 2 * np.pi
    field = np.stack([2.0 + 1.0 * np.sin(2 * yy), 1.0 * np.cos(3 * xx)], -1).astype(np.float32)
    return item["image"], field, None


def hd_child(kind: str, frames: int, engine_rev: str | None = None) -> None:
    """Render a loop and stream it into an mp4; print figures as JSON (runs in its own process).
    ``engine_rev``: the renderer of that git revision instead of this one."""
    from stillmotion.io.video_writer import open_video_writer, x264_preset
    from stillmotion.motion.eulerian import EulerianWarp

    if engine_rev:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench_warp_quality import load_baseline

        EulerianWarp = load_baseline(engine_rev)  # noqa: N806
    image, field, mask = hd_scene(kind)
    # JIT (and, for an earlier revision, its first compilation) before measuring, with the mask
    list(EulerianWarp(image, field, frames=3, loop=True, mask=mask).frames())
    hwm_reset = reset_peak_rss()
    encode_cpu = 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    warp = EulerianWarp(image, field, frames=frames, loop=True, mask=mask)
    with tempfile.TemporaryDirectory() as tmp:
        with open_video_writer(os.path.join(tmp, "loop.mp4"), fps=30) as writer:
            for frame in warp.frames():
                start = time.thread_time()
                writer.write(frame)
                encode_cpu += time.thread_time() - start
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = None
    if hwm_reset:
        with open("/proc/self/status") as fh:
            peak = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    h, w = image.shape[:2]
    print(json.dumps({"kind": kind, "frames": frames, "size": f"{w}x{h}", "wall_s": wall, "cpu_s": cpu,
                      "encode_thread_cpu_s": encode_cpu, "peak_mb": peak, "preset": x264_preset(w, h),
                      "moving_fraction": float(1 - warp.keep.mean()), **warp.stats}))  # fmt: skip


def presets(frames: int = 30) -> list[tuple[str, float, float]]:
    """CPU seconds per frame and MB per frame of x264 presets on 1080p frames of the masked loop."""
    import av

    from stillmotion.motion.eulerian import EulerianWarp

    image, field, mask = hd_scene("mask")
    clip = list(EulerianWarp(image, field, frames=frames, loop=True, mask=mask).frames())
    out = []
    for preset in ("medium", "faster", "veryfast", "superfast"):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "p.mp4")
            cpu = time.process_time()
            container = av.open(path, "w")
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
            stream.options = {"crf": "18", "preset": preset}
            for frame in clip:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
            container.close()
            out.append((preset, (time.process_time() - cpu) / frames, os.path.getsize(path) / 2**20 / frames))
    return out


def hd(runs: list[tuple[str, int, str | None]]) -> None:
    print("\n## Export sizes: render + stream to .mp4 (125-frame loops unless said)\n")
    print("| input | frames | wall s | CPU s (all threads) | writer CPU s (main thread) | peak RSS MB | "
          "moving | node spacing | Euler steps/node | x264 preset |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    names = {"mask": "1920x1080 waterfall, mask", "nomask": "1920x1080, every pixel moving",
             "4k": "3840x2160 waterfall, mask"}  # fmt: skip
    rows = {}
    for kind, frames, rev in runs:
        args = [sys.executable, __file__, "--hd-child", kind, "--frames", str(frames)]
        result = subprocess.run(args + (["--hd-engine", rev] if rev else []), capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"HD run {kind} {frames} failed:\n{result.stderr}")
        r = json.loads(result.stdout.strip().splitlines()[-1])
        if not rev:
            rows[(kind, frames)] = r
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "n/a"
        name = names[kind] + (f" (renderer of {rev})" if rev else "")
        print(f"| {name} | {frames} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
              f"{r['encode_thread_cpu_s']:.2f} | "
              f"{peak} | {r['moving_fraction']:.0%} | {r['node_spacing']} | {r['euler_steps_per_pixel']} | "
              f"{r['preset']} |", flush=True)  # fmt: skip
    if ("mask", 125) in rows and ("mask", 500) in rows and rows[("mask", 125)]["peak_mb"]:
        ratio = rows[("mask", 500)]["peak_mb"] / rows[("mask", 125)]["peak_mb"]
        print(f"\npeak RSS, 500 / 125 frames (1080p, mask): {ratio:.3f}")
    print("(CPU s / 2 is what the wall time would be on two otherwise idle cores if both stayed busy)")
    print("\n## x264 presets on the same 1080p frames (CRF 18)\n")
    print("| preset | CPU s per frame | MB per frame |")
    print("| --- | ---: | ---: |")
    for preset, cpu, size in presets():
        print(f"| {preset} | {cpu:.3f} | {size:.3f} |")


def print_speed(result: dict, repeats: int) -> None:
    print(
        f"\n## Speed: {result['frames']} frames, {result['size']}x{result['size']}, seamless loop "
        f"(2 branches), every pixel moving; best of {repeats}; JIT load {result['jit_seconds']} s\n"
    )
    print(
        "| implementation | wall s | wall frames/s | CPU s (critical path) | CPU frames/s | speed-up wall | "
        "speed-up CPU |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in result["rows"]:
        print(
            f"| {r['config']} | {r['wall_s']} | {r['wall_fps']} | {r['cpu_s']} | {r['cpu_fps']} | "
            f"{r['speedup_wall']}x | {r['speedup_cpu']}x |"
        )
    print("\nCPU s: process CPU time for the naive version; for the fast one the main thread's CPU time")
    print("with each two-thread phase counted once, as its longer job (= wall time on an idle machine).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-frames", default="125,500")
    parser.add_argument("--quick", action="store_true", help="64 frames at 256x256, one repeat")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--baseline", default="25cc021", help="git revision to time alongside, or 'none'")
    parser.add_argument("--hd", action="store_true", help="1080p and 4K render + encode (shared data)")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hd-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hd-engine", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--hd-before", default="06feea4",
        help="with --hd: also the 1080p masked loop with the renderer of this git revision ('none': not)",
    )  # fmt: skip
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.size, args.trace)
        return
    if args.hd_child is not None:
        hd_child(args.hd_child, args.frames, args.hd_engine)
        return
    if args.quick:
        args.frames, args.size, args.repeats, args.memory_frames = 64, 256, 1, "64,256"

    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores; higher means other work is competing)")
    if not args.skip_speed:
        baseline = None if args.baseline == "none" else args.baseline
        print_speed(speed(args.frames, args.repeats, args.size, baseline), args.repeats)
    if not args.skip_memory:
        counts = [int(c) for c in args.memory_frames.split(",")]
        rows = memory(counts, args.size)
        print(f"\n## Peak memory, render + stream to .mp4, {args.size}x{args.size} loop\n")
        print("| frames | process peak RSS MB | peak RSS while rendering MB | tracemalloc peak MB |")
        print("| ---: | ---: | ---: | ---: |")
        for row in rows:
            render = f"{row['render_rss_mb']:.1f}" if row["render_rss_mb"] is not None else "n/a"
            print(f"| {row['frames']} | {row['rss_mb']:.1f} | {render} | {row['tracemalloc_mb']:.1f} |")
        first, last = rows[0], rows[-1]
        ratios = [f"process RSS {last['rss_mb'] / first['rss_mb']:.3f}"]
        if first["render_rss_mb"]:
            ratios.append(f"RSS while rendering {last['render_rss_mb'] / first['render_rss_mb']:.3f}")
        ratios.append(f"tracemalloc {last['tracemalloc_mb'] / first['tracemalloc_mb']:.3f}")
        print(f"\nratio {last['frames']}/{first['frames']} frames: " + ", ".join(ratios))
        print("(process peak: the whole run, imports and JIT included; while rendering: VmHWM, reset through")
        print(" /proc/self/clear_refs once the kernels are loaded, so it covers only rendering and encoding)")
    if args.hd:
        before = [] if args.hd_before == "none" else [("mask", 125, args.hd_before)]
        hd([("mask", 125, None), *before, ("nomask", 125, None), ("mask", 500, None), ("4k", 125, None)])
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
