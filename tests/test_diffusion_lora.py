"""Static-camera LoRA: temporal layers only; load, scale, unload, fuse; saved beside the pipeline."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

from stillmotion.diffusion import lora  # noqa: E402
from stillmotion.diffusion.pipeline import StillMotionPipeline  # noqa: E402
from stillmotion.diffusion.tiny import tiny_components, tiny_unet  # noqa: E402
from stillmotion.errors import MissingWeightsError  # noqa: E402
from tolerances import MODEL_ATOL  # noqa: E402


def unet_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 3, 8, 8, 8, generator=g)
    emb = torch.randn(1, 1, 32, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02]])
    return sample, torch.tensor(0.5), emb, ids


def run(unet) -> torch.Tensor:
    sample, t, emb, ids = unet_inputs()
    with torch.no_grad():
        return unet(sample, t, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)[0]


def randomise_lora(unet, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora.lora_parameters(unet):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_lora_only_in_temporal_layers_and_rank_16():
    unet = tiny_unet(0).eval()
    stock_keys = set(unet.state_dict())
    params = lora.add_static_camera_lora(unet)
    names = [n for n, p in unet.named_parameters() if "lora_" in n]
    assert names and len(names) == len(params)
    assert all(".temporal_transformer_blocks." in n for n in names)
    # every attention projection of every temporal block has one, nothing else does
    wrapped = {n.split(".lora_")[0] for n in names}
    temporal_projections = {
        n
        for n in stock_keys
        if ".temporal_transformer_blocks." in n
        and any(f".attn{i}.{p}.weight" in n for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0"))
    }
    assert {w + ".weight" for w in wrapped} == temporal_projections
    assert all(16 in p.shape for p in params)


def test_scale_unload_fuse():
    unet = tiny_unet(0).eval()
    stock_state = {k: v.clone() for k, v in unet.state_dict().items()}
    base = run(unet)
    lora.add_static_camera_lora(unet)
    assert torch.allclose(run(unet), base, atol=1e-5)  # fresh LoRA: B = 0 (peft reorders float ops)
    randomise_lora(unet)
    with_lora = run(unet)
    assert (with_lora - base).abs().max() > 1e-4
    lora.set_lora_scale(unet, 0.0)
    assert torch.allclose(run(unet), base, atol=1e-6)
    lora.set_lora_scale(unet, 0.5)
    half = run(unet)
    assert (half - base).abs().max() > 1e-5 and (half - with_lora).abs().max() > 1e-5
    lora.set_lora_scale(unet, 1.0)

    lora.unload_lora(unet)
    assert not lora.has_lora(unet)
    assert set(unet.state_dict()) == set(stock_state)
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in stock_state.items())
    assert torch.equal(run(unet), base)

    lora.add_static_camera_lora(unet)
    randomise_lora(unet)
    unfused = run(unet)
    lora.fuse_lora(unet)
    assert not lora.has_lora(unet)
    assert set(unet.state_dict()) == set(stock_state)
    assert torch.allclose(run(unet), unfused, atol=1e-5)


def test_pipeline_saves_and_loads_lora(tmp_path):
    pipe = StillMotionPipeline(**tiny_components(0))
    base = run(pipe.unet)
    lora.add_static_camera_lora(pipe.unet)
    randomise_lora(pipe.unet)
    with_lora = run(pipe.unet)
    pipe.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "static_camera_lora" / lora.WEIGHTS_NAME).is_file()

    # A reloaded model is new tensors: equal weights, float32 results equal within MODEL_ATOL only.
    loaded = StillMotionPipeline.from_pretrained(tmp_path / "m")
    assert torch.allclose(run(loaded.unet), with_lora, atol=MODEL_ATOL)
    loaded.set_lora_scale(0.0)
    assert torch.allclose(run(loaded.unet), base, atol=MODEL_ATOL)
    loaded.unload_lora()
    assert torch.allclose(run(loaded.unet), base, atol=MODEL_ATOL)
    assert torch.equal(run(loaded.unet), run(loaded.unet))  # the same objects again: bit-exact

    plain = StillMotionPipeline.from_pretrained(tmp_path / "m", load_lora=False)
    assert not lora.has_lora(plain.unet) and torch.allclose(run(plain.unet), base, atol=MODEL_ATOL)
    plain.load_static_camera_lora(tmp_path / "m" / "static_camera_lora", scale=1.0)
    plain.fuse_lora()
    assert not lora.has_lora(plain.unet)
    assert torch.allclose(run(plain.unet), with_lora, atol=2 * MODEL_ATOL)  # reloaded and fused


def test_lora_for_another_unet_is_a_clear_error(tmp_path):
    unet = tiny_unet(0)
    lora.add_static_camera_lora(unet, rank=4)
    lora.save_lora(unet, tmp_path / "l")
    other = tiny_unet(0, latent_channels=4)
    lora.add_static_camera_lora(other, rank=16)
    with pytest.raises(MissingWeightsError, match="static_camera_lora"):
        lora.load_lora(other, tmp_path / "l")
    with pytest.raises(MissingWeightsError, match="static_camera_lora"):
        lora.load_lora(tiny_unet(0), tmp_path / "nothing-here")
