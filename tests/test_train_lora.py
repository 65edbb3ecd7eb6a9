"""The static-camera LoRA trainer: static clips only, only LoRA weights (temporal layers) train, the
held-out loss falls, the adapter lands where the pipeline loads it, and resume is exact."""

from __future__ import annotations

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
    import skimage.data

    photos = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(skimage.data, name)()).save(photos / f"{name}.png")
    cache = tmp_path_factory.mktemp("cache")
    # 18 clips, 7 of them static-camera (a masked arrow field leaves the background still)
    prepare_synthetic(photos, cache, PrepareSettings(frames=8, size=(32, 32)), clips_per_photo=6, seed=0)
    return cache


def _config(cache, out, *overrides):
    from stillmotion.training.lora import LoraTrainConfig

    return load_config(LoraTrainConfig, "configs/lora_tiny.yaml",
                       [f"data={cache}", f"output_dir={out}", *TINY, *overrides])


def test_lora_trains_on_static_clips_only_and_lowers_held_out_loss(tiny_cache, tmp_path, one_torch_thread):
    from stillmotion.diffusion.lora import WEIGHTS_NAME, lora_parameters
    from stillmotion.training.dataset import ClipDataset
    from stillmotion.training.diffusion import build_pipeline
    from stillmotion.training.lora import main

    static = ClipDataset(tiny_cache, num_frames=6, static_only=True)
    everything = ClipDataset(tiny_cache, num_frames=6)
    assert 3 <= len(static) < len(everything)
    assert all(static.record(i)["static_camera"] for i in range(len(static)))

    main("configs/lora_tiny.yaml",
         [f"data={tiny_cache}", f"output_dir={tmp_path}", *TINY, "max_steps=16", "save_pipeline=true"], False)

    losses = {int(r["step"]): float(r["eval_loss"]) for r in read_csv_log(tmp_path / "eval_log.csv")}
    assert losses[16] < 0.95 * losses[0], losses  # measured: 0.480 -> 0.448

    # The adapter: rank 16, only in temporal transformer blocks, where the pipeline loads it.
    weights = load_file(str(tmp_path / "static_camera_lora" / WEIGHTS_NAME))
    assert weights and all("temporal_transformer_blocks" in k for k in weights)
    assert {v.shape[0] for k, v in weights.items() if "lora_A" in k} == {16}

    # Everything but the LoRA is untouched: the saved pipeline's base weights equal the start's.
    from stillmotion.diffusion.pipeline import StillMotionPipeline

    cfg = _config(tiny_cache, tmp_path)
    start = build_pipeline(cfg)
    trained = StillMotionPipeline.from_pretrained(tmp_path / "model")  # loads static_camera_lora/ too
    base = {k.replace(".base_layer", ""): v for k, v in trained.unet.state_dict().items() if "lora_" not in k}
    for k, v in start.unet.state_dict().items():
        assert torch.equal(v, base[k]), k
    for name in ("motion_encoder", "motion_adapter"):
        a, b = getattr(start, name).state_dict(), getattr(trained, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert lora_parameters(trained.unet) and any(p.abs().sum() > 0 for n, p in trained.unet.named_parameters()
                                                 if "lora_B" in n)


def test_lora_resume_is_exact(tiny_cache, tmp_path, one_torch_thread, monkeypatch):
    from stillmotion.training.diffusion import train
    from stillmotion.training.lora import export_lora, make_lora_trainable

    def run(out, resume=False):
        cfg = _config(tiny_cache, out, "max_steps=4", "checkpoint_every=2", "keep_checkpoints=0")
        train(cfg, resume, make_trainable=make_lora_trainable, export=export_lora, name="lora")

    run(tmp_path / "full")
    real_write = CsvLog.write

    def write_then_die(self, **row):
        real_write(self, **row)
        if self.path.name == "train_log.csv" and row["step"] == 3:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(CsvLog, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "broken")
    monkeypatch.setattr(CsvLog, "write", real_write)
    run(tmp_path / "broken", resume=True)

    a = load_file(str(latest_checkpoint(tmp_path / "full") / "model.unet.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "broken") / "model.unet.safetensors"))
    assert a.keys() == b.keys() and all("lora_" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    full = [r["loss"] for r in read_csv_log(tmp_path / "full" / "train_log.csv")]
    assert [r["loss"] for r in read_csv_log(tmp_path / "broken" / "train_log.csv")] == full
