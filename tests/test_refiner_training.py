"""Training T: pairs from real motion fields, loss falls on held-out pairs, exact resume after a kill."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stillmotion.motion.refiner import FlowRefiner
from stillmotion.training import refiner as trainer
from stillmotion.training.refiner_data import (
    PairConfig,
    RefinerPairs,
    fields_from_flows,
    fixed_pairs,
    load_stylecinegan,
    sample_arrows,
)
from stillmotion.training.runlog import read_csv_log

TRAIN_IDS = ["0000008", "0000023", "0000658", "0002231"]
TINY = [
    "sample_size=32",
    "num_downs=5",
    "base_channels=8",
    "max_channels=32",
    "disc_channels=8",
    "disc_layers=2",
    "batch_size=8",
    "eval_pairs=0",
    "num_workers=0",
]


def tiny_overrides(shared_data, out, **kw) -> list[str]:
    ids = "[" + ",".join(f'"{i}"' for i in TRAIN_IDS) + "]"  # quoted: YAML reads 0000023 as a number
    args = TINY + [f"stylecinegan_dir={shared_data / 'images' / 'stylecinegan'}", f"stylecinegan_ids={ids}"]
    args.append(f"output_dir={out}")
    return args + [f"{k}={v}" for k, v in kw.items()]


def test_arrows_sit_on_fast_points_and_carry_the_field_times_24_steps():
    h, w = 60, 80
    field = np.zeros((h, w, 2), np.float32)
    field[20:40, 30:60] = (1.5, -0.5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        arrows = sample_arrows(field, None, rng, min_arrows=1, max_arrows=8)
        assert 1 <= len(arrows) <= 8
        for a in arrows:
            x, y = a.start
            assert 30 <= x < 60 and 20 <= y < 40
            np.testing.assert_allclose(np.subtract(a.end, a.start), (1.5 * 24, -0.5 * 24), rtol=1e-6)


def test_video_fields_are_clip_means_with_a_moving_mask():
    flows = [np.zeros((48, 48, 2), np.float32) for _ in range(30)]
    for k, f in enumerate(flows):
        f[10:20, 10:20] = (k % 3, 1.0)
    fields = fields_from_flows(flows, [None] * 30, "video/x", clip_frames=25, stride=5)
    assert [f.name for f in fields] == ["video/x@0", "video/x@5"]
    np.testing.assert_allclose(fields[0].field[15, 15], (np.mean([k % 3 for k in range(24)]), 1.0), rtol=1e-6)
    assert fields[0].mask[15, 15] and not fields[0].mask[40, 40]


def test_pairs_are_deterministic_and_well_formed(shared_data):
    samples = load_stylecinegan(shared_data / "images" / "stylecinegan", ids=TRAIN_IDS[:2])
    data = RefinerPairs(samples, PairConfig(size=32), seed=3)
    a, b = data[7], data[7]
    for k in a:
        assert torch.equal(a[k], b[k])
    assert a["input"].shape == a["target"].shape == (2, 32, 32)
    assert a["image"].shape == (3, 32, 32) and a["mask"].shape == (1, 32, 32)
    assert a["input"].abs().sum() > 0 and a["target"].abs().sum() > 0
    # where the mask says still, input and target are both still
    still = a["mask"][0] == 0
    assert torch.all(a["input"][:, still] == 0) and torch.all(a["target"][:, still] == 0)


def test_training_lowers_error_on_held_out_real_field_pairs(shared_data, tmp_path):
    # Held-out pairs: arrows and full-frame views of the training photos that training never drew
    # (another seed, no augmentation). Generalisation to unseen photos is measured by the benchmark.
    samples = load_stylecinegan(shared_data / "images" / "stylecinegan", ids=TRAIN_IDS)
    held = fixed_pairs(samples, PairConfig(size=32), 32, seed=999)
    args = tiny_overrides(
        shared_data, tmp_path / "run", max_steps=80, lr=1e-3, batch_size=16, base_channels=16
    )
    out = trainer.main(None, args + ["max_channels=64", "torch_threads=1"], progress=False)
    refiner = FlowRefiner.from_pretrained(out / "refiner")
    start = FlowRefiner.from_config(refiner.config)  # untrained T = the raw dense field (identity)
    before = trainer.evaluate(start, held, torch.device("cpu"))
    after = trainer.evaluate(refiner, held, torch.device("cpu"))
    assert before["refined_epe"] == pytest.approx(before["dense_epe"], rel=1e-5)
    assert after["refined_epe"] < 0.95 * before["refined_epe"], (before, after)
    rows = read_csv_log(out / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 81))


class _Killed(RuntimeError):
    pass


def test_resume_after_kill_matches_unbroken_run(shared_data, tmp_path, monkeypatch):
    common = dict(max_steps=6, checkpoint_every=3, lr=1e-3, gan_loss="lsgan", dropout=0.5, torch_threads=1)
    unbroken = trainer.main(None, tiny_overrides(shared_data, tmp_path / "a", **common), progress=False)

    class KillingTimer(trainer.StepTimer):  # the process dies inside step 5 (after the step-3 checkpoint)
        ended = 0

        def end_step(self, *args, **kwargs):
            if KillingTimer.ended == 4:
                raise _Killed("simulated kill")
            KillingTimer.ended += 1
            return super().end_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "StepTimer", KillingTimer)
    with pytest.raises(_Killed):
        trainer.main(None, tiny_overrides(shared_data, tmp_path / "b", **common), progress=False)
    monkeypatch.setattr(trainer, "StepTimer", KillingTimer.__mro__[1])
    resumed = trainer.main(
        None, tiny_overrides(shared_data, tmp_path / "b", **common), resume=True, progress=False
    )

    a, b = unbroken / "checkpoints" / "step-00000006", resumed / "checkpoints" / "step-00000006"
    for name in ("model.refiner", "model.disc", "optimizer.refiner", "optimizer.disc"):
        ta, tb = load_file(str(a / f"{name}.safetensors")), load_file(str(b / f"{name}.safetensors"))
        assert ta.keys() == tb.keys() and len(ta) > 0
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}:{k} differs after resume"
    la, lb = read_csv_log(unbroken / "train_log.csv"), read_csv_log(resumed / "train_log.csv")
    cols = ("step", "loss", "loss_d", "gan", "l1", "epe")
    assert [[r[c] for c in cols] for r in la] == [[r[c] for c in cols] for r in lb]
    fa = load_file(str(unbroken / "refiner" / "diffusion_pytorch_model.safetensors"))
    fb = load_file(str(resumed / "refiner" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(fa[k], fb[k]) for k in fa)


def test_fields_from_a_prepared_cache(shared_data, tmp_path):
    import shutil

    from stillmotion.training.prepare import PrepareSettings, prepare_videos
    from stillmotion.training.refiner_data import read_prepared_cache

    src = tmp_path / "videos"
    src.mkdir()
    shutil.copytree(shared_data / "videos" / "two_stream_flames", src / "flames")
    prepare_videos(src, tmp_path / "cache", PrepareSettings(frames=12, size=(64, 64)))
    fields = read_prepared_cache(tmp_path / "cache", clip_frames=25)
    assert len(fields) == 1 and fields[0].source == "prepared/flames"
    f = fields[0]
    assert f.field.shape == (64, 64, 2) and f.image.shape == (64, 64, 3) and f.mask.any()
    assert np.hypot(f.field[..., 0], f.field[..., 1])[f.mask].mean() > 0.1  # flames move
