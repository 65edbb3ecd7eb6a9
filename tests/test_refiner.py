"""FlowRefiner (the paper's T): shapes at any size, mask, scale equivariance, save/load, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import Arrow
from stillmotion.motion.dense import dense_flow_from_arrows
from stillmotion.motion.refiner import FlowRefiner, PatchDiscriminator
from tolerances import MODEL_ATOL


def tiny(**kw) -> FlowRefiner:
    torch.manual_seed(0)
    cfg = dict(sample_size=32, num_downs=5, base_channels=8, max_channels=32)
    cfg.update(kw)
    return FlowRefiner(**cfg)


def trained_looking(model: FlowRefiner) -> FlowRefiner:
    """Give the zero-initialised last layer weights, as training would, so outputs differ from inputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.up[-1].parameters():
            p.normal_(0.0, 0.05)
    return model.eval()


def arrow_field(h: int, w: int, mask: np.ndarray | None = None) -> np.ndarray:
    arrows = [
        Arrow(((w * 0.3, h * 0.4), (w * 0.6, h * 0.5))),
        Arrow(((w * 0.7, h * 0.7), (w * 0.7, h * 0.2))),
    ]
    return dense_flow_from_arrows(arrows, w, h, mask=mask)


@pytest.mark.parametrize("size", [(32, 32), (17, 45), (120, 64), (5, 3), (300, 200)])
def test_refine_any_size_returns_field_of_that_size(size):
    h, w = size
    model = trained_looking(tiny())
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = model.refine(arrow_field(h, w), image, None)
    assert out.shape == (h, w, 2) and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and np.any(out)


def test_untrained_refiner_is_identity_at_working_size():
    # The last layer starts at zero: the residual is 0, so T passes the dense field through unchanged.
    model = tiny()
    field = arrow_field(32, 32)
    np.testing.assert_allclose(model.refine(field), field, rtol=1e-6, atol=1e-9)  # x / peak * peak rounding


def test_zero_outside_mask_and_mask_changes_nothing_inside_the_contract():
    h, w = 48, 80
    mask = np.zeros((h, w), bool)
    mask[5:40, 10:70] = True
    model = trained_looking(tiny())
    out = model.refine(arrow_field(h, w, mask), None, mask)
    assert np.all(out[~mask] == 0.0)
    assert np.abs(out[mask]).max() > 0


def test_refine_is_scale_equivariant_with_peak_normalisation():
    model = trained_looking(tiny())
    field = arrow_field(40, 56)
    a = model.refine(field)
    b = model.refine(field * 3.5)
    np.testing.assert_allclose(b, 3.5 * a, rtol=1e-4, atol=1e-5)


def test_zero_field_gives_zero_and_bad_inputs_are_user_errors():
    model = tiny()
    assert not np.any(model.refine(np.zeros((10, 12, 2), np.float32)))
    with pytest.raises(UserInputError, match="field must have shape"):
        model.refine(np.zeros((10, 12), np.float32))
    with pytest.raises(UserInputError, match="image shape"):
        model.refine(np.ones((10, 12, 2), np.float32), np.zeros((10, 11, 3), np.uint8))
    with pytest.raises(UserInputError, match="mask shape"):
        model.refine(np.ones((10, 12, 2), np.float32), None, np.ones((12, 10), bool))
    with pytest.raises(UserInputError, match="non-finite"):
        model.refine(np.full((4, 4, 2), np.nan, np.float32))
    with pytest.raises(UserInputError, match="divisible"):
        FlowRefiner(sample_size=48, num_downs=5)


def test_save_load_round_trip_is_identical(tmp_path):
    model = trained_looking(tiny(use_image=True, use_mask=True, norm="batch"))
    model.save_pretrained(tmp_path / "refiner")
    assert (tmp_path / "refiner" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = FlowRefiner.from_pretrained(tmp_path / "refiner")
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in model.config.items() if not k.startswith("_")
    }
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    field, image = arrow_field(50, 70), np.full((50, 70, 3), 90, np.uint8)
    mask = np.ones((50, 70), bool)
    # new tensors, same weights: float32 within MODEL_ATOL (px here), not bit-exact (tests/tolerances.py)
    np.testing.assert_allclose(model.refine(field, image, mask), loaded.refine(field, image, mask),
                               rtol=0, atol=MODEL_ATOL)


def test_refine_follows_model_dtype_and_restores_training_mode():
    model = trained_looking(tiny()).to(torch.float64).train()
    out = model.refine(arrow_field(20, 30))
    assert out.dtype == np.float32 and out.shape == (20, 30, 2)
    assert model.training  # refine runs in eval mode (no dropout) and puts the mode back


def test_patch_discriminator_outputs_a_patch_map():
    disc = PatchDiscriminator(in_channels=8, base_channels=8, num_layers=3)
    logits = disc(torch.zeros(2, 6, 64, 64), torch.zeros(2, 2, 64, 64))
    assert logits.shape == (2, 1, 6, 6)  # pix2pix's 70x70 PatchGAN gives 6x6 patches on 64 px
