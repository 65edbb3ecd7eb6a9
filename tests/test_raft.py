"""RAFT in plain PyTorch, torchvision's weight layout (no real weights here: random ones in that layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stillmotion.errors import MissingWeightsError, UserInputError
from stillmotion.motion.raft import (
    RAFT,
    RAFT_LARGE,
    RAFT_SMALL,
    CorrelationPyramid,
    RAFTFlow,
    _convex_upsample,
    detect_variant,
    load_raft,
)

# torchvision's published parameter counts (Raft_Small_Weights / Raft_Large_Weights meta "num_params").
TORCHVISION_PARAMS = {"small": 990_162, "large": 5_257_536}

# Key names as torchvision.models.optical_flow.raft_* name them (Conv2dNormActivation = [conv, norm, relu]).
TORCHVISION_KEYS = {
    "small": [
        "feature_encoder.convnormrelu.0.weight",
        "feature_encoder.layer1.0.convnormrelu3.0.bias",
        "feature_encoder.layer2.0.downsample.0.weight",
        "context_encoder.layer3.1.convnormrelu2.0.weight",
        "context_encoder.conv.weight",
        "update_block.motion_encoder.convcorr1.0.weight",
        "update_block.motion_encoder.convflow1.0.weight",
        "update_block.motion_encoder.conv.0.weight",
        "update_block.recurrent_block.convgru1.convq.weight",
        "update_block.flow_head.conv2.bias",
    ],
    "large": [
        "feature_encoder.layer1.0.convnormrelu1.0.weight",
        "feature_encoder.layer3.0.downsample.0.bias",
        "context_encoder.convnormrelu.1.running_var",
        "context_encoder.layer2.0.convnormrelu1.1.weight",
        "context_encoder.layer2.0.downsample.1.num_batches_tracked",
        "update_block.motion_encoder.convcorr2.0.weight",
        "update_block.recurrent_block.convgru2.convz.weight",
        "mask_predictor.convrelu.0.weight",
        "mask_predictor.conv.bias",
    ],
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Tiny inputs: one thread is faster, and immune to OpenMP spin-waits when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_model(config, seed=0) -> RAFT:
    torch.manual_seed(seed)
    model = RAFT(config)
    # Non-trivial batch-norm statistics so that a load that skipped them would show.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("variant, config", [("small", RAFT_SMALL), ("large", RAFT_LARGE)])
def test_architecture_matches_torchvision(variant, config):
    model = RAFT(config)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[variant]
    keys = set(model.state_dict())
    for key in TORCHVISION_KEYS[variant]:
        assert key in keys, key
    assert detect_variant(model.state_dict()) == variant
    if variant == "small":
        assert not any(k.startswith("mask_predictor") for k in keys)
        assert "update_block.motion_encoder.convcorr2.0.weight" not in keys  # one corr layer only


def test_saved_state_dict_loads_and_runs(tmp_path):
    model = _random_model(RAFT_SMALL)
    path = tmp_path / "raft_small.pth"
    torch.save(model.state_dict(), path)
    loaded = load_raft(path, device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)
    b = np.roll(a, 2, axis=1)
    flow = RAFTFlow(path, device="cpu", iterations=3)(a, b)
    assert flow.shape == (60, 90, 2) and flow.dtype == np.float32 and np.isfinite(flow).all()
    # Same numbers as the model in memory: loading lost nothing.
    again = RAFTFlow(model, iterations=3)(a, b)
    np.testing.assert_allclose(flow, again, atol=1e-5)


def test_large_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    model = _random_model(RAFT_LARGE, seed=1)
    path = tmp_path / "raft_large.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    frame = np.zeros((40, 56, 3), np.uint8)
    flow = RAFTFlow(path, device="cpu", iterations=1)(frame, frame)
    assert flow.shape == (40, 56, 2) and np.isfinite(flow).all()


def test_through_flow_estimator(tmp_path):
    from stillmotion.motion.flow import estimate_flow

    path = tmp_path / "w.pth"
    torch.save(_random_model(RAFT_SMALL).state_dict(), path)
    frame = np.full((32, 48, 3), 100, np.uint8)
    flow = estimate_flow(frame, frame, "raft", weights=path, iterations=2)
    assert flow.shape == (32, 48, 2)


def test_weight_file_errors(tmp_path):
    absent = tmp_path / "absent.pth"
    with pytest.raises(MissingWeightsError, match=f"RAFT weights file {absent} does not exist"):
        load_raft(absent)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(MissingWeightsError, match=f"cannot read RAFT weights {corrupt}"):
        load_raft(corrupt)
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(3)}, foreign)
    with pytest.raises(MissingWeightsError, match=f"{foreign} is not a torchvision RAFT state dict"):
        load_raft(foreign)
    state = _random_model(RAFT_SMALL).state_dict()
    del state["update_block.flow_head.conv2.bias"]
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    expected = r"partial.pth do not match torchvision raft_small: 1 missing"
    with pytest.raises(MissingWeightsError, match=expected):
        load_raft(partial)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": object.__new__(RAFT)}, pickled)  # arbitrary objects are never unpickled
    with pytest.raises(MissingWeightsError, match="cannot read RAFT weights"):
        load_raft(pickled)
    with pytest.raises(UserInputError, match="unknown RAFT variant"):
        torch.save(_random_model(RAFT_SMALL).state_dict(), tmp_path / "ok.pth")
        load_raft(tmp_path / "ok.pth", variant="medium")


def test_correlation_lookup_order():
    """The window's first axis steps x, the second y: the order torchvision's trained weights expect."""
    torch.manual_seed(0)
    fmap1 = torch.randn(1, 16, 16, 16)
    fmap2 = torch.roll(fmap1, shifts=1, dims=3)  # content moves one pixel right (+x)
    pyramid = CorrelationPyramid(fmap1, fmap2, levels=1, radius=2)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    corr = pyramid.lookup(torch.stack([xs, ys])[None])  # (1, 25, 16, 16)
    best = corr[0, :, 8, 8].argmax().item()
    ix, iy = divmod(best, 5)
    assert (ix - 2, iy - 2) == (1, 0)


def test_convex_upsampling_of_constant_flow():
    flow = torch.zeros(1, 2, 3, 4)
    flow[:, 0] = 1.5
    flow[:, 1] = -0.5
    up = _convex_upsample(flow, torch.randn(1, 8 * 8 * 9, 3, 4))
    assert up.shape == (1, 2, 24, 32)
    # Interior pixels are convex combinations of equal vectors: the flow, scaled to full size.
    assert torch.allclose(up[:, :, 8:16, 8:24], torch.tensor([12.0, -4.0]).view(1, 2, 1, 1), atol=1e-5)
