"""The bundled default model: its recipe's init/assemble stages, and loading it when --model is not given."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from stillmotion.engines.diffusion import animate_diffusion, default_model_dir
from stillmotion.inputs.arrows import Arrow
from stillmotion.inputs.scene import Scene


def _recipe():
    # The recipe is a checkout script (scripts/train_tiny.py), not part of the package: load it by path.
    path = Path(__file__).resolve().parents[1] / "scripts" / "train_tiny.py"
    spec = importlib.util.spec_from_file_location("train_tiny", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_RECIPE = _recipe()
assemble, build_init = _RECIPE.assemble, _RECIPE.build_init

TINY = {
    "resolution": 32,
    "num_frames": 4,
    "downscale_factor": 4,
    "unet": {
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "num_attention_heads": 4,
        "cross_attention_dim": 32,
        "addition_time_embed_dim": 32,
    },
    "motion_encoder_base_channels": 8,
    "seed": 0,
    "save_dtype": "float16",
    "defaults": {"steps": 2, "min_guidance_scale": 1.0, "max_guidance_scale": 1.5},
}


def _scene(size: int = 32) -> tuple[Scene, np.ndarray]:
    rng = np.random.default_rng(0)
    image = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    mask = np.zeros((size, size), bool)
    mask[:, : size // 2] = True
    field = np.zeros((size, size, 2), np.float32)
    field[mask, 0] = 1.0
    return Scene(image, [Arrow(((2.0, 16.0), (10.0, 16.0)))], mask), field


def test_recipe_builds_assembles_and_the_engine_uses_its_defaults(tmp_path):
    init = build_init(TINY, tmp_path / "init")
    model = assemble(init, None, TINY, tmp_path / "model")
    assert json.loads((model / "stillmotion_defaults.json").read_text()) == TINY["defaults"]
    with safe_open(str(model / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}
    with safe_open(str(model / "vae" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert str(f.get_tensor("basis").dtype) == "torch.float32"  # the lossless basis stays exact

    scene, field = _scene()
    frames, stats = animate_diffusion(scene, field, frames=4, model=model, size=(32, 32))
    video = np.stack(list(frames))
    assert video.shape == (4, 32, 32, 3) and video.dtype == np.uint8
    assert stats["steps"] == 2  # from stillmotion_defaults.json
    # Still region (outside the mask) keeps the input pixels.
    assert np.abs(video[:, :, 16:].astype(int) - scene.image[None, :, 16:].astype(int)).max() <= 1


@pytest.mark.skipif(default_model_dir() is None, reason="the bundled model is not present (make train-tiny)")
def test_bundled_model_loads_by_default_and_generates_frames():
    scene, field = _scene(64)
    frames, stats = animate_diffusion(scene, field, frames=3, model=None, steps=1)
    video = np.stack(list(frames))
    assert video.shape[0] == 3 and video.dtype == np.uint8
    assert stats["steps"] == 1 and stats["unet_calls"] >= 1


def test_bundled_model_continues_later_segments_by_its_appearance_and_the_plain_model_by_its_own_motion():
    # --carry motion as the engine resolves it: a model steered by its trained motion input carries only
    # its appearance (its own jitter is not replayed), warp-guided control the reference, a model without
    # motion input its own motion (with 5 cross-faded frames, as warp-guided control)
    scene, field = _scene(64)
    cases = (("auto", None, "appearance", 1), ("warp-guided", None, "reference", 5),
             ("none", "plain", "own", 5))
    for control, model, carry, overlap in cases:
        frames, stats = animate_diffusion(scene, field, frames=20, model=model, steps=1, control=control)
        assert len(list(frames)) == 20
        assert (stats["carry"], stats["overlap"]) == (carry, overlap), control
