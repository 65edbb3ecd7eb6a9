"""StillMotionPipeline on tiny SVD components: zero-init equivalence with diffusers, motion control,
strength, save/load, clear weight errors, the mask."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import StableVideoDiffusionPipeline  # noqa: E402
from PIL import Image  # noqa: E402

from stillmotion.diffusion.pipeline import StillMotionPipeline  # noqa: E402
from stillmotion.diffusion.tiny import tiny_components  # noqa: E402
from stillmotion.errors import MissingWeightsError  # noqa: E402
from tolerances import FRAME_ATOL, MODEL_ATOL  # noqa: E402

W, H, F, STEPS = 48, 32, 4, 2
KW = dict(width=W, height=H, num_frames=F, num_inference_steps=STEPS, decode_chunk_size=2)
SVD_PARTS = ("vae", "image_encoder", "unet", "scheduler", "feature_extractor")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(0)
    img = np.stack([xx * 5, yy * 7, (xx + yy) * 3], -1) + rng.integers(0, 40, (H, W, 3))
    return img.clip(0, 255).astype(np.uint8)


def right_field(speed: float = 1.5) -> np.ndarray:
    field = np.zeros((H, W, 2), np.float32)
    field[..., 0] = speed
    return field


def down_field(speed: float = 1.5) -> np.ndarray:
    field = np.zeros((H, W, 2), np.float32)
    field[H // 4 :, :, 1] = speed
    return field


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def trained(pipe: StillMotionPipeline, seed: int = 5) -> StillMotionPipeline:
    """Give the zero-initialised motion modules non-zero weights (stand-in for training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pipe.motion_adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return pipe


def test_zero_init_equals_stock_svd(image):
    parts = tiny_components(0)
    svd = StableVideoDiffusionPipeline(**{k: parts[k] for k in SVD_PARTS})
    svd.set_progress_bar_config(disable=True)
    ref = svd(Image.fromarray(image), generator=gen(), output_type="np", **KW).frames
    pipe = StillMotionPipeline(**parts)
    # Without motion, with a motion field (and its strength M_s), and with an explicit strength:
    # the new modules at zero initialisation leave SVD's frames unchanged.
    for motion, strength in ((None, None), (right_field(), None), (down_field(), 7.0)):
        out = pipe(image, motion, strength=strength, generator=gen(), **KW)
        assert out.frames.shape == ref.shape == (1, F, H, W, 3)
        assert np.abs(out.frames - ref).max() <= FRAME_ATOL  # another implementation of the same maths
        assert out.stats == {"steps": STEPS, "unet_calls": STEPS, "frame_evaluations": STEPS * 2 * F}


def test_from_svd_directory_and_hub_id(image, tmp_path):
    parts = tiny_components(0)
    svd = StableVideoDiffusionPipeline(**{k: parts[k] for k in SVD_PARTS})
    svd.set_progress_bar_config(disable=True)
    svd.save_pretrained(tmp_path / "svd")
    ref = svd(Image.fromarray(image), generator=gen(), output_type="np", **KW).frames
    for pipe in (
        StillMotionPipeline.from_svd(tmp_path / "svd"),
        StillMotionPipeline.from_pretrained(tmp_path / "svd"),
    ):
        out = pipe(image, right_field(), generator=gen(), **KW)
        assert np.abs(out.frames - ref).max() <= FRAME_ATOL  # reloaded weights: not bit-exact
    with pytest.raises(MissingWeightsError, match="Hugging Face cache"):
        StillMotionPipeline.from_svd("nobody/no-such-svd-model")


def test_motion_controls_output_and_is_deterministic(image):
    pipe = trained(StillMotionPipeline(**tiny_components(0)))
    a = pipe(image, right_field(), generator=gen(), **KW).frames
    a2 = pipe(image, right_field(), generator=gen(), **KW).frames
    b = pipe(image, down_field(), generator=gen(), **KW).frames
    none = pipe(image, None, generator=gen(), **KW).frames
    assert np.array_equal(a, a2)
    assert np.abs(a - b).mean() > 1e-3
    assert np.abs(a - none).mean() > 1e-3


def test_strength_path_changes_output_only_when_trained(image):
    pipe = StillMotionPipeline(**tiny_components(0))
    lo = pipe(image, right_field(), strength=0.5, generator=gen(), **KW).frames
    hi = pipe(image, right_field(), strength=12.0, generator=gen(), **KW).frames
    assert np.array_equal(lo, hi)  # zero-initialised strength projection: no effect
    with torch.no_grad():
        pipe.motion_adapter.strength_proj.weight.normal_(0, 0.5, generator=gen(3))
    lo = pipe(image, right_field(), strength=0.5, generator=gen(), **KW).frames
    hi = pipe(image, right_field(), strength=12.0, generator=gen(), **KW).frames
    assert np.abs(lo - hi).mean() > 1e-3


def test_strength_hook_equals_widened_add_embedding():
    """Adding W_s @ sinusoid(M_s) to linear_1's output == linear_1 widened by the strength columns."""
    parts = tiny_components(0)
    unet, adapter = parts["unet"], parts["motion_adapter"]
    with torch.no_grad():
        adapter.strength_proj.weight.normal_(0, 0.5, generator=gen(2))
    adapter.attach(unet)
    ids = torch.tensor([[6.0, 127.0, 0.02]])
    strength = torch.tensor([3.5])
    time_embeds = unet.add_time_proj(ids.flatten()).reshape(1, -1)
    with adapter.conditioning(None, strength):
        hooked = unet.add_embedding.linear_1(time_embeds)
    lin = unet.add_embedding.linear_1
    wide = torch.nn.Linear(lin.in_features + adapter.config.addition_time_embed_dim, lin.out_features)
    with torch.no_grad():
        wide.weight.copy_(torch.cat([lin.weight, adapter.strength_proj.weight], 1))
        wide.bias.copy_(lin.bias)
        s_emb = adapter.strength_sinusoid(strength * adapter.config.strength_scale)
        widened = wide(torch.cat([time_embeds, s_emb], 1))
    assert torch.allclose(hooked, widened, atol=1e-5)


def test_save_load_round_trip_same_frames(image, tmp_path):
    pipe = trained(StillMotionPipeline(**tiny_components(0)))
    with torch.no_grad():
        pipe.motion_adapter.strength_proj.weight.normal_(0, 0.5, generator=gen(4))
    a = pipe(image, right_field(), generator=gen(), **KW).frames
    pipe.save_pretrained(tmp_path / "model")
    files = sorted(p.name for p in (tmp_path / "model").rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    loaded = StillMotionPipeline.from_pretrained(tmp_path / "model")
    b = loaded(image, right_field(), generator=gen(), **KW).frames
    assert np.abs(a - b).max() <= FRAME_ATOL  # new tensors, same weights: float32 within FRAME_ATOL
    assert np.array_equal(b, loaded(image, right_field(), generator=gen(), **KW).frames)  # same objects


def test_missing_or_mismatched_weights_name_the_component(tmp_path):
    pipe = StillMotionPipeline(**tiny_components(0))
    pipe.save_pretrained(tmp_path / "ok")
    import shutil

    # Missing weights file.
    shutil.copytree(tmp_path / "ok", tmp_path / "missing")
    (tmp_path / "missing" / "motion_adapter" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match="'motion_adapter'") as exc:
        StillMotionPipeline.from_pretrained(tmp_path / "missing")
    assert len(str(exc.value)) < 600

    # Missing folder.
    shutil.copytree(tmp_path / "ok", tmp_path / "nofolder")
    shutil.rmtree(tmp_path / "nofolder" / "motion_encoder")
    with pytest.raises(MissingWeightsError, match="'motion_encoder'"):
        StillMotionPipeline.from_pretrained(tmp_path / "nofolder")

    # Weights that do not match the config (UNet config edited to other widths).
    shutil.copytree(tmp_path / "ok", tmp_path / "mismatch")
    cfg_file = tmp_path / "mismatch" / "unet" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["block_out_channels"] = [32, 96]
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(MissingWeightsError, match="'unet'") as exc:
        StillMotionPipeline.from_pretrained(tmp_path / "mismatch")
    assert len(str(exc.value)) < 600

    # A motion adapter built for another UNet.
    shutil.copytree(tmp_path / "ok", tmp_path / "adapter")
    cfg_file = tmp_path / "adapter" / "motion_adapter" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    for key in ("block_names", "block_dims", "block_heads", "block_levels"):
        cfg[key] = cfg[key][:-1]
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(MissingWeightsError, match="'motion_adapter'"):
        StillMotionPipeline.from_pretrained(tmp_path / "adapter")

    with pytest.raises(MissingWeightsError, match="model_index.json"):
        StillMotionPipeline.from_pretrained(tmp_path)


def test_mask_holds_still_regions(image):
    pipe = trained(StillMotionPipeline(**tiny_components(0)))
    mask = np.zeros((H, W), bool)
    mask[:, : W // 2] = True  # left half may move, right half must stay
    prepared = pipe.prepare(image, right_field(), mask=mask, num_frames=F, width=W, height=H, generator=gen())
    den = prepared.denoiser
    sigmas = den.set_schedule(STEPS)
    from stillmotion.sampling.base import sample_euler

    x = sample_euler(den, pipe.initial_latents(den, generator=gen(2)), sigmas)
    # Latent cells entirely in the still half end exactly on the input image's latent.
    still = den.still_mask[0, 0, 0] == 1
    assert still.any() and (~still).any()
    target = den.still_latents.expand_as(x)
    assert torch.allclose(x[..., still], target[..., still], atol=1e-5)
    assert not torch.allclose(x[..., ~still], target[..., ~still], atol=1e-2)
    frames = np.concatenate(list(pipe.decode(prepared, x, 2)), 1)[0]
    ref = image.astype(np.float32) / 255
    # Every still pixel is the input's (the paste's feathering lies on the moving side of the seam) ...
    assert np.abs(frames[:, ~mask] - ref[~mask]).max() < 1e-6
    # ... and the moving region beyond the feather band is the model's own output.
    deep = np.zeros((H, W), bool)
    deep[:, : W // 2 - pipe.vae_scale_factor - 1] = True
    assert np.abs(frames[:, deep] - ref[deep]).mean() > 1e-3


def test_refine_uses_refiner_or_gives_notice(image, caplog, tmp_path):
    pipe = StillMotionPipeline(**tiny_components(0))
    with caplog.at_level(logging.WARNING, logger="stillmotion.diffusion"):
        prepared = pipe.prepare(
            image, right_field(), num_frames=F, width=W, height=H, refine=True, generator=gen()
        )
    assert "no refinement model T" in caplog.text
    assert np.array_equal(prepared.field, right_field())

    from stillmotion.motion.refiner import FlowRefiner

    torch.manual_seed(0)
    refiner = FlowRefiner(sample_size=32, num_downs=3, base_channels=8, max_channels=16, use_image=True)
    with torch.no_grad():  # an untrained T is the identity; make it change the field
        for p in refiner.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    pipe = StillMotionPipeline(**tiny_components(0), refiner=refiner.eval())
    prepared = pipe.prepare(image, right_field(), num_frames=F, width=W, height=H, refine=True,
                            generator=gen())  # fmt: skip
    assert not np.allclose(prepared.field, right_field())
    refined = prepared.field
    prepared = pipe.prepare(image, right_field(), num_frames=F, width=W, height=H, refine=False,
                            generator=gen())  # fmt: skip
    assert np.array_equal(prepared.field, right_field())

    # T is saved and loaded with the pipeline, and a T trained apart can be dropped into refiner/.
    pipe.save_pretrained(tmp_path / "with_t")
    loaded = StillMotionPipeline.from_pretrained(tmp_path / "with_t")
    assert isinstance(loaded.refiner, FlowRefiner)
    prepared = loaded.prepare(image, right_field(), num_frames=F, width=W, height=H, refine=True,
                              generator=gen())  # fmt: skip
    assert np.allclose(prepared.field, refined, atol=MODEL_ATOL)  # reloaded weights: new layout
    StillMotionPipeline(**tiny_components(0)).save_pretrained(tmp_path / "drop")
    refiner.save_pretrained(tmp_path / "drop" / "refiner")
    assert isinstance(StillMotionPipeline.from_pretrained(tmp_path / "drop").refiner, FlowRefiner)


def test_any_input_size_is_fitted(image):
    pipe = StillMotionPipeline(**tiny_components(0))
    big = np.asarray(Image.fromarray(image).resize((101, 57)))
    field = np.zeros((57, 101, 2), np.float32)
    field[..., 0] = 2.0
    prepared = pipe.prepare(big, field, num_frames=F, generator=gen())
    w, h = prepared.width, prepared.height
    assert w % pipe.size_multiple == 0 and h % pipe.size_multiple == 0
    assert prepared.image.shape == (h, w, 3)
    # vectors are rescaled with the image: 2 px/frame at 101 px wide -> 2 * w / 101-ish at the new width
    assert prepared.field[..., 0].mean() == pytest.approx(2.0 * w / 101, rel=0.1)
    from stillmotion.errors import UserInputError

    with pytest.raises(UserInputError, match="multiples of"):
        pipe.prepare(image, None, num_frames=F, width=W + 1, height=H)
