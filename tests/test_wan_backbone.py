"""The Wan backbone on tiny components built in-process: with no motion control and at most one clip, its
frames equal diffusers' WanImageToVideoPipeline for the same inputs and seed (Wan 2.1 with CLIP image
embeddings, Wan 2.2 A14B's two experts, Wan 2.2 TI2V-5B's layout), with either scheduler a Wan folder
ships (FlowMatchEuler, and UniPC as the released checkpoints do: the project's own UniPC sampler); folders
in diffusers' layout load and are recognised, their sampler the one their scheduler names; latent frames vs
video frames; the streaming decoder equals one decode."""

from __future__ import annotations

import json
import shutil
import types

import numpy as np
import pytest
import torch
from PIL import Image

from stillmotion.errors import MissingWeightsError
from stillmotion.sampling.base import sample_euler, sample_ode

SIZE = 32
TOL = 1e-4  # max abs difference on [0, 1] frames against diffusers' pipeline


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def reference_cleaning(monkeypatch):
    # diffusers' Wan prompt cleaning calls ftfy, which this environment lacks; give it ftfy's identity on
    # plain ASCII prompts so the reference pipeline runs its own tokenisation and encoding path.
    import diffusers.pipelines.wan.pipeline_wan_i2v as wan_i2v

    monkeypatch.setattr(wan_i2v, "ftfy", types.SimpleNamespace(fix_text=lambda s: s), raising=False)


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)


def _ours(backbone, image, frames, steps, seed, euler=False, **kw):
    prepared = backbone.prepare(image, num_frames=frames, width=SIZE, height=SIZE, max_sequence_length=16,
                                **kw)  # fmt: skip
    den = prepared.denoiser
    sigmas = den.set_schedule(steps)
    x = backbone.initial_latents(den, generator=torch.Generator().manual_seed(seed))
    x = (sample_euler if euler else sample_ode)(den, x, sigmas)  # sample_ode: the scheduler's own sampler
    return np.concatenate(list(backbone.decode(prepared, x, 2)), axis=1), den


def _reference(parts, image, frames, steps, seed, **kw):
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        image=Image.fromarray(image), height=SIZE, width=SIZE, num_frames=frames, num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed), max_sequence_length=16, output_type="np", **kw,
    ).frames  # fmt: skip


def _count_calls(module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("scheduler", ["euler", "unipc"])
@pytest.mark.parametrize("variant", ["wan2.1", "ti2v"])
def test_frames_equal_diffusers_pipeline(variant, scheduler, reference_cleaning):
    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    parts = tiny_wan_components(variant, scheduler=scheduler)
    image = _image()
    prompts = {"prompt": "water flows along the river", "negative_prompt": "blurry , static"}
    steps = 3 if scheduler == "euler" else 5  # UniPC: warm-up, second-order steps, the lower-order last
    theirs = _reference(parts, image, 9, steps, seed=7, guidance_scale=5.0, **prompts)
    backbone = WanBackbone(**parts)
    ours, den = _ours(backbone, image, 9, steps, seed=7, guidance_scale=5.0, **prompts)
    assert ours.shape == theirs.shape == (1, 9, SIZE, SIZE, 3)
    assert np.abs(ours - theirs).max() <= TOL
    assert den.solver.name == scheduler
    assert den.num_frames == 3  # (9 - 1) // 4 + 1 latent frames
    assert (den.unet_calls, den.transformer_calls) == (steps, 2 * steps)  # guidance: two forwards per call
    assert backbone.variant.name == {"wan2.1": "wan2.1-i2v", "ti2v": "wan2.2-ti2v-5b"}[variant]
    # another seed gives another video (the comparison is not trivially equal)
    other, _ = _ours(backbone, image, 9, steps, seed=8, guidance_scale=5.0, **prompts)
    assert np.abs(other - theirs).max() > 100 * TOL
    if scheduler == "unipc":  # and the sampler matters: Euler steps on UniPC's own levels are another video
        euler, _ = _ours(backbone, image, 9, steps, seed=7, euler=True, guidance_scale=5.0, **prompts)
        assert np.abs(euler - theirs).max() > 10 * TOL


@pytest.mark.parametrize("scheduler", ["euler", "unipc"])
def test_two_experts_equal_diffusers_and_switch_at_the_boundary(scheduler, reference_cleaning):
    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    parts = tiny_wan_components("wan2.2", scheduler=scheduler)
    image = _image()
    kw = {
        "prompt": "clouds drift",
        "negative_prompt": "jitter",
        "guidance_scale": 4.0,
        "guidance_scale_2": 2.5,
    }
    theirs = _reference(parts, image, 13, 4, seed=3, **kw)
    backbone = WanBackbone(**parts)
    high, low = _count_calls(backbone.transformer), _count_calls(backbone.transformer_2)
    ours, den = _ours(backbone, image, 13, 4, seed=3, **kw)
    assert ours.shape == (1, 13, SIZE, SIZE, 3)
    assert np.abs(ours - theirs).max() <= TOL
    # shift 5, 4 steps: Euler's t = 1000, 889 (>= 875: high-noise expert), 689, 27 (low-noise expert); UniPC's
    # own timesteps 999, 937 (high), 833, 625 (low); 2 forwards each
    t = den.sigmas[:-1] * 1000
    assert int((t >= 875).sum()) == 2
    assert (high[0], low[0]) == (4, 4)
    assert backbone.variant.name == "wan2.2-i2v-a14b" and backbone.variant.two_experts
    if scheduler == "unipc":
        assert [float(den.timestep(s)) for s in den.sigmas[:-1]] == [999.0, 937.0, 833.0, 625.0]


def test_folder_in_diffusers_layout_loads_and_missing_parts_are_named(tmp_path, reference_cleaning):
    from diffusers import WanImageToVideoPipeline

    from stillmotion.diffusion.wan import WanBackbone, is_wan_index, read_model_index
    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    parts = tiny_wan_components("wan2.2", rope_max_seq_len=1024)  # the real models' table: 480P buckets fit
    folder = tmp_path / "Wan2.2-I2V-A14B-Diffusers"
    WanImageToVideoPipeline(**parts).save_pretrained(folder)
    assert is_wan_index(read_model_index(folder))
    loaded = WanBackbone.from_pretrained(folder)
    assert loaded.variant.name == "wan2.2-i2v-a14b" and loaded.config.boundary_ratio == 0.875
    image = _image()
    a, _ = _ours(WanBackbone(**parts), image, 5, 2, seed=0, prompt="waves", guidance_scale=3.0)
    b, _ = _ours(loaded, image, 5, 2, seed=0, prompt="waves", guidance_scale=3.0)
    assert np.abs(a - b).max() <= TOL
    # resolution buckets: 480P area for the A14B / 2.1 folders, multiples of 16
    assert loaded.default_size(1920, 1080) == (832, 464)
    assert loaded.default_size(832, 480) == (832, 480) and loaded.size_multiple == 16

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "transformer_2")
    with pytest.raises(MissingWeightsError, match="transformer_2"):
        WanBackbone.from_pretrained(broken)
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder"] = [None, None]
    (broken / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(MissingWeightsError, match="text_encoder"):
        WanBackbone.from_pretrained(broken)
    with pytest.raises(MissingWeightsError, match="model_index.json"):
        WanBackbone.from_pretrained(tmp_path)


def test_the_sampler_is_the_one_the_folders_scheduler_names(tmp_path):
    from diffusers import WanImageToVideoPipeline

    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.diffusion.wan_tiny import tiny_wan_components
    from stillmotion.sampling.unipc import UniPC

    folder = tmp_path / "Wan2.1-I2V-14B-480P-Diffusers"
    WanImageToVideoPipeline(**tiny_wan_components("wan2.1", scheduler="unipc")).save_pretrained(folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    assert config["_class_name"] == "UniPCMultistepScheduler" and config["use_flow_sigmas"]

    def solver():
        backbone = WanBackbone.from_pretrained(folder)
        return backbone.prepare(_image(), num_frames=5, width=SIZE, height=SIZE,
                                max_sequence_length=16).denoiser.solver  # fmt: skip

    found = solver()
    assert isinstance(found, UniPC)
    assert (found.order, found.variant, found.lower_order_final) == (2, "bh2", True)
    config_path.write_text(json.dumps({**config, "solver_order": 3, "solver_type": "bh1"}))
    found = solver()
    assert (found.order, found.variant) == (3, "bh1")

    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())

    def scheduler(class_name: str, **settings) -> None:
        index_path.write_text(json.dumps({**index, "scheduler": ["diffusers", class_name]}))
        config_path.write_text(json.dumps({**config, "_class_name": class_name, **settings}))

    scheduler("FlowMatchEulerDiscreteScheduler", shift=5.0)
    assert solver().name == "euler"
    scheduler("DPMSolverMultistepScheduler")
    with pytest.raises(MissingWeightsError, match="'scheduler': DPMSolverMultistepScheduler is not supp"):
        WanBackbone.from_pretrained(folder)
    scheduler("UniPCMultistepScheduler", predict_x0=False)
    with pytest.raises(MissingWeightsError, match="predict_x0=False"):
        WanBackbone.from_pretrained(folder)


def test_text_to_video_transformer_is_refused(tmp_path):
    from diffusers import WanImageToVideoPipeline

    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.diffusion.wan_tiny import _transformer, tiny_wan_components

    parts = tiny_wan_components("wan2.2")
    parts.update(transformer=_transformer(0, 16, 16, None), transformer_2=None, boundary_ratio=None)
    folder = tmp_path / "t2v"
    WanImageToVideoPipeline(**parts).save_pretrained(folder)
    with pytest.raises(MissingWeightsError, match="text-to-video"):
        WanBackbone.from_pretrained(folder)


def test_latent_frames_cover_the_video_frames_asked_for():
    from stillmotion.diffusion.wan import decoded_frames, latent_frames

    assert [latent_frames(f) for f in (1, 2, 5, 80, 81, 82, 125, 200)] == [1, 2, 2, 21, 21, 22, 32, 51]
    for f in (1, 2, 80, 81, 82, 125, 200):
        n = latent_frames(f)
        assert decoded_frames(n) >= f > decoded_frames(n - 1) if n > 1 else f == 1


def test_stream_decoder_equals_one_decode_plain_and_tiled():
    from stillmotion.diffusion.wan import WanBackbone, WanStreamDecoder
    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    backbone = WanBackbone(**tiny_wan_components("wan2.1"))
    vae = backbone.vae
    z = torch.randn(1, 5, 16, 6, 6, generator=torch.Generator().manual_seed(0))  # [B, n, C, h, w]
    mean, inv_std = backbone._latent_norm(z.device, torch.float32)
    raw = z.permute(0, 2, 1, 3, 4) / inv_std + mean
    for tiled in (False, True):
        if tiled:
            vae.enable_tiling(
                tile_sample_min_height=32,
                tile_sample_min_width=32,
                tile_sample_stride_height=16,
                tile_sample_stride_width=16,
            )
        with torch.no_grad():
            whole = vae.decode(raw).sample
        whole = (whole / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy()
        stream = WanStreamDecoder(backbone, limit=15)
        parts = [stream.push(z[:, :2]), stream.push(z[:, 2:3]), stream.push(z[:, 3:])]
        assert [p.shape[1] for p in parts] == [5, 4, 6]  # 1 + 4, 4, then 8 cut to the limit of 15
        assert np.abs(np.concatenate(parts, 1) - whole[:, :15]).max() <= 1e-6


def test_still_regions_end_on_the_photo_and_its_pixels():
    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    backbone = WanBackbone(**tiny_wan_components("wan2.2"))
    image = _image()
    mask = np.zeros((SIZE, SIZE), bool)
    mask[:, : SIZE // 2] = True  # the left half may move
    prepared = backbone.prepare(image, mask=mask, num_frames=9, width=SIZE, height=SIZE,
                                max_sequence_length=16)  # fmt: skip
    den = prepared.denoiser
    sigmas = den.set_schedule(3)
    x = sample_euler(den, backbone.initial_latents(den, generator=torch.Generator().manual_seed(0)), sigmas)
    still = den.still_mask.expand_as(x) >= 0.999
    assert still.any() and not still.all()
    assert torch.allclose(x[still], den.still.window(x.shape[1])[still], atol=1e-5)
    frames = np.concatenate(list(backbone.decode(prepared, x, 2)), axis=1)[0]
    right = (frames[:, :, SIZE // 2 + 8 :] * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(right, np.broadcast_to(image[:, SIZE // 2 + 8 :], right.shape))
