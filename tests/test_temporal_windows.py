"""FreeNoise's window-fused temporal attention on a tiny diffusers spatio-temporal UNet."""

from __future__ import annotations

import pytest
import torch

from stillmotion.diffusion.temporal_windows import triangular_weights, window_fused_temporal_attention

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = diffusers.UNetSpatioTemporalConditionModel(
        sample_size=8,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64),
        addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=96,
        layers_per_block=1,
        cross_attention_dim=32,
        num_attention_heads=8,
    ).eval()
    # a freshly built UNet's learned time mixer ignores nothing, but make the temporal path clearly matter
    for m in model.modules():
        if hasattr(m, "time_mixer"):
            m.time_mixer.mix_factor.data.fill_(-2.0)
    return model


def call(unet, frames: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, frames, 8, 8, 8, generator=g)
    ctx = torch.randn(1, 1, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor(10.0), ctx, added_time_ids=torch.tensor([[6.0, 127.0, 0.02]])).sample


def test_identity_when_frames_fit_one_window(unet):
    ref = call(unet, 6)
    with window_fused_temporal_attention(unet, window=6, stride=2) as patched:
        assert patched > 0
        same = call(unet, 6)
    assert torch.equal(ref, same)
    with window_fused_temporal_attention(unet, window=16, stride=4):
        assert torch.equal(call(unet, 6), ref)


def test_windows_change_long_inputs_and_unpatch(unet):
    ref = call(unet, 12)
    with window_fused_temporal_attention(unet, window=6, stride=2):
        fused = call(unet, 12)
    assert fused.shape == ref.shape and torch.isfinite(fused).all()
    assert not torch.allclose(fused, ref, atol=1e-5)
    # the patch is gone afterwards: the module behaves as before
    assert torch.equal(call(unet, 12), ref)
    assert all("forward" not in vars(m) for m in unet.modules())


def test_window_fusion_is_local_in_time(unet):
    # one spatio-temporal transformer (no temporal convolutions around it): with windows of 4 every 4
    # frames, frames 0-3 never attend to frames 8-11, so changing those leaves frame 0 alone
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

    block = next(m for m in unet.modules() if isinstance(m, TransformerSpatioTemporalModel))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(12, block.in_channels, 4, 4, generator=g)
    y = x.clone()
    y[8:] = torch.randn(4, block.in_channels, 4, 4, generator=g)
    ctx = torch.randn(12, 1, 32, generator=g)
    only_video = torch.zeros(1, 12)

    def run(z):
        return block(z, encoder_hidden_states=ctx, image_only_indicator=only_video, return_dict=False)[0]

    with torch.no_grad():
        full_x, full_y = run(x), run(y)
        with window_fused_temporal_attention(block, window=4, stride=4):
            win_x, win_y = run(x), run(y)
    assert not torch.allclose(full_x[0], full_y[0], atol=1e-6)  # full attention sees the change
    assert torch.allclose(win_x[0], win_y[0], atol=1e-6)
    assert not torch.allclose(win_x[8], win_y[8], atol=1e-6)


def test_triangular_weights():
    assert triangular_weights(6).tolist() == [1, 2, 3, 3, 2, 1]
    assert triangular_weights(5).tolist() == [1, 2, 3, 2, 1]


def _block_inputs(block, frames: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, block.in_channels, 4, 4, generator=g)
    ctx = torch.randn(1, 1, 32, generator=g).expand(frames, 1, 32)  # SVD: one image embedding for all
    return x, ctx


def _run_block(block, x, ctx):
    only_video = torch.zeros(1, x.shape[0])
    return block(x, encoder_hidden_states=ctx, image_only_indicator=only_video, return_dict=False)[0]


def _spatio_temporal(unet):
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

    return next(m for m in unet.modules() if isinstance(m, TransformerSpatioTemporalModel))


def test_disjoint_windows_are_stock_clips_with_positions_restarted(unet):
    # windows of 4 every 4 frames over 8: each half is exactly the stock block on those 4 frames alone
    # (positions 0..3 in both), since only the temporal attention and its input projection are windowed
    block = _spatio_temporal(unet)
    x, ctx = _block_inputs(block, 8, 3)
    with torch.no_grad():
        halves = torch.cat([_run_block(block, x[:4], ctx[:4]), _run_block(block, x[4:], ctx[4:])])
        with window_fused_temporal_attention(block, window=4, stride=4):
            fused = _run_block(block, x, ctx)
    assert torch.allclose(fused, halves, atol=1e-5)


def test_feed_forward_and_cross_attention_run_once_per_frame(unet):
    block = _spatio_temporal(unet)
    temporal = block.temporal_transformer_blocks[0]
    rows = {"ff_in": 0, "ff": 0, "attn2": 0}

    def counter(name):
        def hook(module, args, kwargs):
            rows[name] += args[0].shape[0] * args[0].shape[1]  # [tokens, frames, C]: token-frames seen

        return hook

    handles = [getattr(temporal, n).register_forward_pre_hook(counter(n), with_kwargs=True) for n in rows]
    x, ctx = _block_inputs(block, 12, 4)
    try:
        with torch.no_grad(), window_fused_temporal_attention(block, window=4, stride=2):
            _run_block(block, x, ctx)
    finally:
        for h in handles:
            h.remove()
    token_frames = 12 * 16  # 12 frames of 4x4 tokens
    assert rows["ff"] == rows["attn2"] == token_frames
    assert rows["ff_in"] == 5 * 4 * 16  # windows at 0, 2, 4, 6, 8 of 4 frames each


def test_frame_chunks_change_nothing_but_rounding(unet):
    ref_in = call(unet, 12)
    with window_fused_temporal_attention(unet, window=6, stride=2):
        whole = call(unet, 12)
    with window_fused_temporal_attention(unet, window=6, stride=2, chunk_frames=3) as patched:
        assert patched > 0
        chunked = call(unet, 12)
    assert torch.allclose(chunked, whole, atol=1e-5)
    assert torch.equal(call(unet, 12), ref_in)
    assert all("forward" not in vars(m) for m in unet.modules())
