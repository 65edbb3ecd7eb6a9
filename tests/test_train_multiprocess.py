"""Two CPU processes under ``accelerate launch`` train the same step as one process with the doubled
batch: DDP averages the gradients and every sample draws its noise from its own seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from stillmotion.training.config import load_config
from stillmotion.training.prepare import PrepareSettings, prepare_synthetic
from stillmotion.training.runlog import read_csv_log

COMMON = ["progress=false", "workers=0", "save_pipeline=false", "holdout_clips=0", "device=cpu",
          "max_steps=2",
          "lr=1e-3"]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    import skimage.data

    photos = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()).save(photos / f"{name}.png")
    cache = tmp_path_factory.mktemp("cache")
    prepare_synthetic(photos, cache, PrepareSettings(frames=8, size=(32, 32)), clips_per_photo=2, seed=0)
    return cache


def test_two_cpu_processes_match_one_process_with_twice_the_batch(tiny_cache, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate's launcher is not installed")
    two, one = tmp_path / "two", tmp_path / "one"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "stillmotion.cli", "train", "diffusion", "configs/diffusion_tiny.yaml",
           f"data={tiny_cache}", f"output_dir={two}", "batch_size=1", *COMMON]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout

    from stillmotion.training.diffusion import DiffusionConfig, train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(DiffusionConfig, "configs/diffusion_tiny.yaml",
                          [f"data={tiny_cache}", f"output_dir={one}", "batch_size=2", *COMMON]))
    finally:
        torch.set_num_threads(before)

    ckpt_two, ckpt_one = two / "checkpoints" / "step-00000002", one / "checkpoints" / "step-00000002"
    assert (ckpt_two / "rng.1.safetensors").is_file()  # both processes' RNG states are kept
    loss_two = [float(r["loss"]) for r in read_csv_log(two / "train_log.csv")]
    loss_one = [float(r["loss"]) for r in read_csv_log(one / "train_log.csv")]
    assert loss_two == pytest.approx(loss_one, rel=1e-5)
    for name in ("unet", "motion_encoder", "motion_adapter"):
        a = load_file(str(ckpt_two / f"model.{name}.safetensors"))
        b = load_file(str(ckpt_one / f"model.{name}.safetensors"))
        # Summation order differs between the all-reduce and one batch; an un-synchronised rank
        # would be off by about one AdamW step (lr = 1e-3).
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 2e-4, name
