"""The diffusion trainer on a tiny model: the held-out loss falls, the right weights train, the output
loads as a pipeline, and a killed run resumed from its checkpoint equals the unbroken run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from stillmotion.training.checkpoint import latest_checkpoint
from stillmotion.training.config import load_config
from stillmotion.training.prepare import PrepareSettings, prepare_synthetic
from stillmotion.training.runlog import CsvLog, read_csv_log

TINY = ["progress=false", "workers=0", "save_pipeline=false", "eval_every=0"]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """12 synthetic clips (3 real photos x 4 random arrow fields), 8 frames of 32x32."""
    import skimage.data

    photos = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(skimage.data, name)()).save(photos / f"{name}.png")
    cache = tmp_path_factory.mktemp("cache")
    prepare_synthetic(photos, cache, PrepareSettings(frames=8, size=(32, 32)), clips_per_photo=4, seed=0)
    return cache


def _config(cache, out, *overrides):
    from stillmotion.training.diffusion import DiffusionConfig

    return load_config(DiffusionConfig, "configs/diffusion_tiny.yaml",
                       [f"data={cache}", f"output_dir={out}", *TINY, *overrides])


def _eval_losses(out):
    return {int(r["step"]): float(r["eval_loss"]) for r in read_csv_log(out / "eval_log.csv")}


def test_diffusion_training_lowers_held_out_loss_and_freezes_spatial_layers(
    tiny_cache, tmp_path, one_torch_thread
):
    from stillmotion.diffusion.pipeline import StillMotionPipeline
    from stillmotion.training.diffusion import SPATIAL, build_pipeline, train

    cfg = _config(tiny_cache, tmp_path, "max_steps=16", "lr=3e-3", "holdout_clips=4", "save_pipeline=true")
    train(cfg)

    losses = _eval_losses(tmp_path)
    assert sorted(losses) == [0, 16]
    # Fixed held-out clips, fixed sigmas and noise: the fall is the model's, not the sampling's.
    assert losses[16] < 0.9 * losses[0], losses
    rows = read_csv_log(tmp_path / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 17))
    assert all(np.isfinite(float(r["loss"])) and 0 <= float(r["data_wait"]) <= 1 for r in rows)

    # The exported pipeline loads; spatial layers kept their initial weights, the rest moved.
    start = build_pipeline(cfg)
    trained = StillMotionPipeline.from_pretrained(tmp_path / "model")
    before, after = dict(start.unet.named_parameters()), dict(trained.unet.named_parameters())
    spatial = [n for n in before if SPATIAL.search(n)]
    moved = [n for n in before if not torch.equal(before[n], after[n])]
    assert spatial and not set(spatial) & set(moved)
    assert any("temporal_transformer_blocks" in n for n in moved)
    assert any("temporal_res_block" in n for n in moved)
    strength0 = start.motion_adapter.strength_proj.weight
    strength1 = trained.motion_adapter.strength_proj.weight
    assert not torch.equal(strength0, strength1)
    enc0, enc1 = start.motion_encoder.state_dict(), trained.motion_encoder.state_dict()
    assert any(not torch.equal(enc0[k], enc1[k]) for k in enc0)


def test_killed_run_resumes_exactly(tiny_cache, tmp_path, one_torch_thread, monkeypatch):
    from stillmotion.training.diffusion import train

    full, broken = tmp_path / "full", tmp_path / "broken"
    # Warm-up + cosine decay: the rate is a function of the step, so the resumed run repeats it too.
    common = ["max_steps=6", "checkpoint_every=3", "keep_checkpoints=0", "warmup_steps=2", "lr_decay=cosine"]
    train(_config(tiny_cache, full, *common))

    # Kill the second run after step 5 is logged: steps 4-5 ran past the checkpoint at step 3.
    real_write = CsvLog.write

    def write_then_die(self, **row):
        real_write(self, **row)
        if self.path.name == "train_log.csv" and row["step"] == 5:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(CsvLog, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tiny_cache, broken, *common))
    monkeypatch.setattr(CsvLog, "write", real_write)
    assert latest_checkpoint(broken).name == "step-00000003"
    assert [r["step"] for r in read_csv_log(broken / "train_log.csv")] == ["1", "2", "3", "4", "5"]

    # Resume (with a data-loader worker this time: the data must not depend on it).
    train(_config(tiny_cache, broken, *common, "workers=1"), resume=True)

    rows_full = read_csv_log(full / "train_log.csv")
    rows_resumed = read_csv_log(broken / "train_log.csv")
    assert [r["step"] for r in rows_resumed] == [str(s) for s in range(1, 7)]
    assert [r["loss"] for r in rows_resumed] == [r["loss"] for r in rows_full]
    for name in ("unet", "motion_encoder", "motion_adapter"):
        a = load_file(str(latest_checkpoint(full) / f"model.{name}.safetensors"))
        b = load_file(str(latest_checkpoint(broken) / f"model.{name}.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    oa = load_file(str(latest_checkpoint(full) / "optimizer.adamw.safetensors"))
    ob = load_file(str(latest_checkpoint(broken) / "optimizer.adamw.safetensors"))
    assert all(torch.equal(oa[k], ob[k]) for k in oa)


def test_cosine_decay_warms_up_then_falls_to_min_lr(tiny_cache, tmp_path):
    from stillmotion.training.diffusion import learning_rate

    cfg = _config(tiny_cache, tmp_path, "lr=1e-3", "min_lr=1e-4", "warmup_steps=10", "max_steps=110",
                  "lr_decay=cosine")
    rates = [learning_rate(cfg, step) for step in range(110)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert rates[10] == pytest.approx(1e-3)
    assert rates[60] == pytest.approx(0.5 * (1e-3 + 1e-4))  # half-way through the decay
    assert all(a >= b for a, b in zip(rates[10:-1], rates[11:], strict=True))
    assert rates[-1] == pytest.approx(1e-4, rel=1e-2)
    constant = _config(tiny_cache, tmp_path, "lr=1e-3", "max_steps=110")
    assert {learning_rate(constant, s) for s in (0, 50, 109)} == {1e-3}
    from stillmotion.errors import UserInputError

    with pytest.raises(UserInputError, match="min_lr"):
        _config(tiny_cache, tmp_path, "lr=1e-3", "min_lr=1e-2")


def test_fresh_run_refuses_an_output_dir_with_checkpoints(tiny_cache, tmp_path, one_torch_thread):
    from stillmotion.errors import UserInputError
    from stillmotion.training.diffusion import train

    train(_config(tiny_cache, tmp_path, "max_steps=1"))
    with pytest.raises(UserInputError, match="--resume"):
        train(_config(tiny_cache, tmp_path, "max_steps=2"))


def test_config_errors_name_the_key(tiny_cache, tmp_path):
    from stillmotion.errors import UserInputError

    with pytest.raises(UserInputError, match="unet_trainable"):
        _config(tiny_cache, tmp_path, "unet_trainable=spatial")
    with pytest.raises(UserInputError, match="flip"):
        _config(tiny_cache, tmp_path, "use_latents=true")
    with pytest.raises(UserInputError, match="unknown key"):
        _config(tiny_cache, tmp_path, "learning_rate=1")


def test_block_gradient_checkpointing_gives_the_same_gradients(tiny_cache, tmp_path, one_torch_thread):
    """Checkpointing (on by default on CUDA) recomputes blocks in backward with the motion hooks."""
    from stillmotion.training.dataset import ClipDataset, fixed_batch
    from stillmotion.training.diffusion import (
        MotionUNet,
        build_pipeline,
        diffusion_loss,
        enable_block_checkpointing,
        make_trainable,
    )

    cfg = _config(tiny_cache, tmp_path, "drop_motion=0", "drop_strength=0")
    batch = fixed_batch(ClipDataset(tiny_cache, num_frames=6, flip=False), 2)
    grads = []
    for checkpointed in (False, True):
        pipe = build_pipeline(cfg)
        params = make_trainable(pipe, cfg)
        with torch.no_grad():  # non-zero motion attention, so its gradient path is exercised
            for i, p in enumerate(pipe.motion_adapter.parameters()):
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
        if checkpointed:
            enable_block_checkpointing(pipe.unet)
        model = MotionUNet(pipe.unet, pipe.motion_encoder, pipe.motion_adapter)
        loss = diffusion_loss(model, pipe, batch, cfg, 0)
        loss.backward()
        pipe.motion_adapter.clear_conditioning()
        grads.append([p.grad.clone() for p in params])
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(*grads, strict=True))
    assert any(g.abs().sum() > 0 for g in grads[1][-20:])
