"""`accelerate launch` splits the videos across two CPU processes; the merged results equal one process's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stillmotion.evaluation.runner import EvalOptions, run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_the_videos_and_merge(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("STILLMOTION_WEIGHTS", str(tmp_path / "no_weights"))
    videos = shared_data / "videos"
    common = ["--frames", "5", "--size", "48", "--limit", "3", "--methods", "warp"]
    script = Path(sys.executable).parent / "stillmotion"
    if not script.exists():
        pytest.skip(f"console script {script} not installed")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "STILLMOTION_WEIGHTS": str(tmp_path / "no_weights"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    # Without CUDA the torchrun-style launcher (--multi_gpu) starts CPU processes that join a gloo group;
    # accelerate's own --cpu multi-process mode needs MPI.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           str(script), "eval", str(videos), "-o", str(tmp_path / "two"), *common]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["processes"] == 2
    assert {r["process"] for r in two["videos"]} == {0, 1}  # both processes scored videos
    assert not list(tmp_path.glob(".two*"))  # staging folder removed

    run(EvalOptions([videos], tmp_path / "one", frames=[5], size=48, limit=3, methods=["warp"]))
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert one["processes"] == 1

    def key(r):
        return (r["video"], r["protocol"], r["method"])

    rows1 = {key(r): r for r in one["videos"]}
    rows2 = {key(r): r for r in two["videos"]}
    assert set(rows1) == set(rows2) and len(rows1) == 6
    for k, r in rows1.items():
        for m in ("psnr", "ssim", "warp_error", "epe", "cosine", "drift", "adjacent_ssim"):
            a, b = r.get(m), rows2[k].get(m)
            assert (a is None and b is None) or a == pytest.approx(b, rel=1e-6, abs=1e-9), (k, m)
    for f in ("table.md", "results.csv", "index.html", "plots/frames_5.png"):
        assert (tmp_path / "two" / f).is_file()
    for r in two["videos"]:
        assert (tmp_path / "two" / "media" / r["media"]).is_file()
