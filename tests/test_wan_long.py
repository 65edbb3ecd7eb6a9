"""Long videos on the tiny Wan backbone: every long-video method gives exactly the video frames asked
for (latent frames are not video frames), with the denoiser and transformer calls the cost formulas say,
with Euler and with UniPC (the released checkpoints' scheduler); FreeNoise's window-fused attention on Wan's
full attention is what it claims to be."""

from __future__ import annotations

import numpy as np
import pytest
import torch

SIZE = 16
STEPS = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone():
    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    with torch.random.fork_rng(devices=[]):
        return WanBackbone(**tiny_wan_components("wan2.1"))


def _image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)


def _condition_on(backbone, prepared):
    den = prepared.denoiser

    def condition_on(last: torch.Tensor, index: int) -> dict:
        frames = next(backbone.decode(prepared, last[:, None], 1))
        pixels = torch.from_numpy(frames[:, 0]).permute(0, 3, 1, 2) * 2 - 1
        return {
            "image": den.encode_condition_image(pixels),
            "image_embeds": den.encode_condition_embeds(pixels),
        }

    return condition_on


@pytest.fixture(scope="module")
def backbone_unipc():
    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    with torch.random.fork_rng(devices=[]):
        return WanBackbone(**tiny_wan_components("wan2.1", scheduler="unipc"))


@pytest.mark.parametrize("frames", [1, 80, 81, 82, 125, 200])
@pytest.mark.parametrize("method", ["phased", "direct", "freenoise", "gen-l-video"])
def test_every_method_gives_the_frames_asked_for_at_the_formulas_cost(backbone, method, frames):
    _frames_and_cost(backbone, method, frames)


@pytest.mark.parametrize("frames", [1, 80, 81, 82, 125, 200])
@pytest.mark.parametrize("method", ["phased", "direct", "freenoise", "gen-l-video"])
def test_every_method_on_unipc_gives_the_frames_at_the_formulas_cost(backbone_unipc, method, frames):
    den = _frames_and_cost(backbone_unipc, method, frames)
    assert den.solver.name == "unipc"


def _frames_and_cost(backbone, method, frames):
    from stillmotion.diffusion.wan import latent_frames
    from stillmotion.sampling.frame_noise import FrameNoise
    from stillmotion.sampling.long import LongOptions, expected_cost, sample_long

    prepared = backbone.prepare(_image(), num_frames=frames, width=SIZE, height=SIZE, max_sequence_length=16,
                                prompt="water flows", guidance_scale=4.0)  # fmt: skip
    den = prepared.denoiser
    n = latent_frames(frames)
    assert den.num_frames == n and den.clip_frames == 21
    options = LongOptions(method=method, gamma=0.6)  # phased: M = ceil(0.6 * 3) = 2, one step redone
    sigmas = den.set_schedule(STEPS)
    noise = FrameNoise(n, den.latent_shape(1)[2:], seed=0, batch=1)
    chunks = sample_long(
        options, den, noise, sigmas, clip_len=den.clip_frames, generator=torch.Generator().manual_seed(0),
        condition_on=_condition_on(backbone, prepared),
    )  # fmt: skip
    stream = backbone.stream_decoder(prepared)
    got, starts = 0, []
    # freenoise: the sampler window-fuses the attention through the denoiser's hook
    for chunk in chunks:
        starts.append(chunk.start)
        got += stream.push(chunk.latents).shape[1]
    latent_total = stream.index
    assert latent_total == n  # every latent frame once, in order
    assert starts == sorted(starts)
    assert got == frames  # the video frames asked for, exactly
    cost = expected_cost(options, n, den.clip_frames, STEPS)
    assert den.unet_calls == cost.denoiser_calls
    assert den.transformer_calls == 2 * cost.denoiser_calls  # guidance: conditional + negative prompt
    assert den.frame_evaluations == 2 * cost.frame_passes
    return den


def test_windowed_attention_is_block_attention_without_overlap_and_a_no_op_within_a_window():
    """With stride = window the fused windows are exactly attention restricted to each window (RoPE is
    relative, so restarting positions in a window changes nothing within it); with at most one window of
    frames the transformer is untouched, bit for bit."""
    from stillmotion.diffusion.wan import windowed_self_attention
    from stillmotion.diffusion.wan_tiny import _transformer

    tr = _transformer(0, 36, 16, image_dim=None)
    g = torch.Generator().manual_seed(0)
    frames, window = 8, 4
    hidden = torch.randn(1, 36, frames, 4, 4, generator=g)
    text = torch.randn(1, 16, 32, generator=g)
    t = torch.tensor([500.0])

    def run():
        with torch.no_grad():
            return tr(hidden_states=hidden, timestep=t, encoder_hidden_states=text, return_dict=False)[0]

    plain = run()
    with windowed_self_attention([tr], window=frames, stride=2) as wrapped:
        assert wrapped == len(tr.blocks)
        assert torch.equal(run(), plain)
    with windowed_self_attention([tr], window=window, stride=window):
        fused = run()
    assert not torch.allclose(fused, plain, atol=1e-3)

    tokens = frames * 4  # 2 x 2 patches per latent frame
    block = torch.arange(tokens) // (tokens // (frames // window))
    allowed = block[:, None] == block[None, :]
    originals = [b.attn1.processor for b in tr.blocks]

    class Masked:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, attn, hs, ehs=None, mask=None, rope=None):
            return self.inner(attn, hs, ehs, allowed if ehs is None else mask, rope)

    try:
        for b in tr.blocks:
            b.attn1.processor = Masked(b.attn1.processor)
        masked = run()
    finally:
        for b, p in zip(tr.blocks, originals, strict=True):
            b.attn1.processor = p
    assert torch.allclose(fused, masked, atol=1e-5)
    assert torch.equal(run(), plain)  # everything restored
