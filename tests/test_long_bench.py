"""bench-long: metrics, table and an end-to-end run on the tiny random backbone."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from stillmotion.cli.bench_long_cmd import parse_size
from stillmotion.errors import UserInputError
from stillmotion.evaluation.long_bench import (
    PeakMemory,
    StreamMetrics,
    add_speedups,
    along_arrow_speed,
    markdown_table,
    seams_of,
    steps_after_joins,
)


def test_stream_metrics_match_evaluation_definitions():
    from stillmotion.evaluation.motion_metrics import join_smoothness, still_region_drift

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (30, 16, 20, 3), dtype=np.uint8)
    frames[10] = 0  # a seam
    still = np.zeros((16, 20), bool)
    still[:4] = True
    m = StreamMetrics(frames[0], still, clip_len=10)
    for f in frames:
        m.add(f)
    assert len(m.diffs) == len(m.consistency) == 29
    # one-step seams: exactly the evaluation's definition
    assert m.join_smoothness([range(10, 11), range(20, 21)]) == pytest.approx(
        join_smoothness(frames, [10, 20]), rel=1e-6
    )
    drift = still_region_drift(frames, frames[0], still)
    first, last = m.drift_first_last()
    assert first == pytest.approx(drift[:10].mean()) and last == pytest.approx(drift[-10:].mean())
    assert math.isnan(m.join_smoothness([]))


def test_a_cross_fade_is_judged_by_its_largest_step():
    # a jump of 40 grey levels as a cut, and spread over 4 steps as a dissolve of unequal steps
    steady = np.stack([np.full((8, 8, 3), 100 + (t % 2), np.uint8) for t in range(30)])
    cut, fade = steady.copy(), steady.copy()
    cut[15:] += 40
    # steps 5, 9, 17, 9 with the one-level flicker
    for j, add in zip(range(13, 30), [4, 14, 30, *[40] * 14], strict=True):
        fade[j] += add

    def ratio(frames, seams):
        m = StreamMetrics(frames[0], None, clip_len=10)
        for f in frames:
            m.add(f)
        return m.join_smoothness(seams)
    assert ratio(cut, [range(15, 16)]) == pytest.approx(41.0)
    # the dissolve is judged by its largest step, not by its first
    assert ratio(fade, [range(13, 17)]) == pytest.approx(17.0)


def test_seams_come_from_the_samplers_joins():
    # the engine records [first frame, steps] of every LatentChunk.join; the metric reads them as ranges
    assert [list(r) for r in seams_of({"seams": [[22, 4], [43, 4]]})] == [[22, 23, 24, 25], [43, 44, 45, 46]]
    assert seams_of({}) == []


def test_steps_after_joins_line_up_later_segments_with_segment_one():
    # 4-frame segments sharing one frame: joins at frames 4 and 7 (steps 3 -> 4 and 6 -> 7)
    per_step = [1.0, 2.0, 3.0, 0.5, 1.0, 1.5, 0.7, 1.4, 2.1, 9.0]
    first, later, joins = steps_after_joins(per_step, [range(4, 5), range(7, 8)], 3)
    assert first == [1.0, 2.0, 3.0]
    assert later == pytest.approx([0.6, 1.2, 1.8])  # (0.5, 1, 1.5) and (0.7, 1.4, 2.1) averaged
    assert joins == 2
    # a join too close to the end for all its steps is left out
    _, later, joins = steps_after_joins(per_step, [range(4, 5), range(9, 10)], 3)
    assert later == pytest.approx([0.5, 1.0, 1.5]) and joins == 1
    assert steps_after_joins(per_step, [], 3) == ([1.0, 2.0, 3.0], [], 0)


def test_along_arrow_speed_and_thirds():
    flow = np.zeros((20, 30, 2), np.float32)
    flow[..., 0] = 2.0  # everything moves 2 px/frame to the right
    right = np.array([[10.0, 10.0, 1.0, 0.0]])
    left = np.array([[10.0, 10.0, -1.0, 0.0]])
    assert along_arrow_speed(flow, right) == pytest.approx(2.0)
    assert along_arrow_speed(flow, left) == pytest.approx(-2.0)  # against the arrow: backwards
    m = StreamMetrics(np.zeros((4, 4, 3), np.uint8), None, clip_len=4)
    m.along = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.2, 0.2, -0.1]
    thirds, slowest = m.along_thirds()
    assert thirds == pytest.approx([1.0, 0.5, 0.1]) and slowest == -0.1


def test_table_and_speedups():
    def row(method, time_s, calls, evals, mem, join, drift_last, cons):
        return {"method": method, "time_s": time_s, "unet_calls": calls, "frame_evaluations": evals,
                "peak_mem_mib": mem, "join_smoothness": join, "drift_first": 0.5, "drift_last": drift_last,
                "consistency": cons}  # fmt: skip

    rows = [
        row("phased", 10.0, 50, 2300, 12.5, 1.1, 0.6, 0.9),
        row("direct", 27.0, 125, 6250, 12.0, 2.0, 0.9, 0.8),
        row("freenoise", 26.0, 25, 6250, 40.0, math.nan, 0.9, 0.8),
    ]
    add_speedups(rows)
    assert [r["speedup"] for r in rows] == [1.0, 2.7, 2.6]
    md = markdown_table(rows, "title")
    assert "| direct | 27.00 | 2.70x | 125 | 6250 |" in md and "n/a" in md


def test_peak_memory_sees_an_allocation():
    with PeakMemory("cpu") as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        block += 1
    del block
    assert mem.peak_mib > 40


def test_parse_size():
    assert parse_size("32x16") == (32, 16) and parse_size(None) is None
    with pytest.raises(UserInputError, match="--size"):
        parse_size("32by16")


@pytest.mark.slow
def test_bench_long_end_to_end_tiny(tmp_path):
    pytest.importorskip("diffusers")
    from stillmotion.cli import main

    out = tmp_path / "bench"
    image = "src/stillmotion/assets/examples/waterfall.jpg"
    with pytest.raises(SystemExit) as exit_:
        main([
            "bench-long", image, "--arrow", "300,200,300,260", "--frames", "9", "--steps", "2",
            "--size", "24x16", "--clip-frames", "4", "--gamma", "0.5", "--methods", "phased,direct",
            "--model", "tiny-random", "-o", str(out),
        ])  # fmt: skip
    assert exit_.value.code == 0
    report = json.loads((out / "report.json").read_text())
    assert "UNTRAINED" in report["backbone"]
    by = {r["method"]: r for r in report["methods"]}
    # 9 frames, clips of 4, T = 2, M = 1: phased 4*2 + (4 + 3) * 1 = 15 frames (x2 guidance);
    # direct clips [0,4) [3,7) [6,9): (4 + 4 + 3) * 2 = 22 (x2)
    assert by["phased"]["frame_evaluations"] == 2 * 15 and by["direct"]["frame_evaluations"] == 2 * 22
    assert all(r["frames"] == 9 for r in by.values())
    assert (out / "phased.mp4").stat().st_size > 0 and (out / "consistency.png").stat().st_size > 0
    with open(out / "table.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["phased", "direct"]


def test_join_motion_sees_a_stall_that_lowers_the_frame_difference():
    # a textured strip moving 1 px per frame; at frame 12 the motion stops for one step (frame repeated)
    rng = np.random.default_rng(1)
    texture = np.repeat(np.repeat(rng.integers(0, 255, (8, 40, 3)), 4, 0), 4, 1).astype(np.uint8)
    still = np.zeros((32, 64), bool)
    still[:, :8] = True

    def video(stall: bool):
        frames, x = [], 0
        for t in range(24):
            x += 0 if (stall and t == 12) else 1
            frame = np.full((32, 64, 3), 90, np.uint8)
            frame[:, 8:] = texture[:, x : x + 56]
            frames.append(frame)
        return frames

    seams = [range(12, 13)]
    got = {}
    for stall in (False, True):
        m = StreamMetrics(video(stall)[0], still, clip_len=8)
        for f in video(stall):
            m.add(f)
        assert len(m.speeds) == 23 and np.median(m.speeds) == pytest.approx(1.0, abs=0.2)
        got[stall] = (m.join_smoothness(seams), m.join_motion(seams))
    assert got[False][1] == pytest.approx(1.0, abs=0.2)  # motion goes on through the join
    assert got[True][1] < 0.2 and got[True][0] < 0.2  # a stall: both low; only join motion says it is bad
    m = StreamMetrics(video(False)[0], None, clip_len=8)
    m.add(video(False)[0])
    m.add(video(False)[1])
    assert m.speeds == [] and math.isnan(m.join_motion(seams))
