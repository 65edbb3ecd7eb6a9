"""The diffusion engine on a Wan 2.1 / 2.2 image-to-video model (``stillmotion.diffusion.wan``).

``animate_wan`` is what ``animate_diffusion`` runs when ``--model`` is a Wan folder (recognised from its
model_index.json): it loads the backbone (cached), fits the scene to the model's resolution bucket (or
``--size``), prepares the flow-matching denoiser with the prompt and guidance, and returns a lazy iterator
of uint8 frames plus a stats dict complete once the iterator is exhausted. Up to one clip (81 video frames,
21 latent frames) the video is sampled as diffusers' pipeline samples it, with the sampler its scheduler
config names (Euler for FlowMatchEuler, UniPC for UniPCMultistep); longer videos go through the long-video
samplers with the same sampler, in latent frames, decoded as one causal stream.

Imported only when a Wan model runs (``engines.diffusion`` imports it then): torch and diffusers at the top.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stillmotion.diffusion.wan import WanBackbone
from stillmotion.diffusion.warp_guidance import WarpGuidance, resolve_control
from stillmotion.engines.backbone_run import (
    cached_load,
    fit_sequence,
    long_options,
    on_device,
    phased_options,
    resolve_device,
    resolve_dtype,
    step_progress,
    to_uint8,
    with_control,
)
from stillmotion.engines.long_video import steady_heap, stream_long_video
from stillmotion.engines.options import DiffusionOptions, RenderRequest
from stillmotion.errors import UserInputError
from stillmotion.inputs.scene import Scene
from stillmotion.sampling.base import sample_ode, solver_of

logger = logging.getLogger("stillmotion.diffusion")

_CACHE: dict[tuple, Any] = {}
# Wan's own sampling settings (its repositories' image-to-video defaults)
DEFAULT_STEPS = 40
DEFAULT_GUIDANCE = {"wan2.1-i2v": 5.0, "wan2.2-i2v-a14b": 3.5, "wan2.2-ti2v-5b": 5.0}


def load_wan(
    model: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    offload: bool = False,
    vae_tiling: bool = False,
):
    """Load (and cache the last) Wan backbone. ``dtype`` auto: bf16 on CUDA (Wan's weights are bf16),
    fp32 on the CPU; the VAE stays fp32. ``offload``: model CPU offload on CUDA; ``vae_tiling``: decode in
    tiles."""
    dev = resolve_device(device)
    torch_dtype = (
        torch.bfloat16 if dtype in (None, "auto") and dev.startswith("cuda") else resolve_dtype(dtype, dev)
    )
    key = (str(model), dev, str(torch_dtype), bool(offload), bool(vae_tiling))
    if torch.device(dev).type == "cpu":
        steady_heap()  # before the load: blocks freed in the heap before it was set would stay in use

    def load() -> WanBackbone:
        pipe = on_device(WanBackbone.from_pretrained(model, torch_dtype=torch_dtype), dev, offload)
        if vae_tiling:
            pipe.vae.enable_tiling()
        return pipe

    return cached_load(_CACHE, key, load)


def animate_wan(
    scene: Scene,
    field: np.ndarray | None,
    *,
    model: str | Path,
    frames: int,
    strength: float = 1.0,
    progress: bool = False,
    size: tuple[int, int] | None = None,
    **options: Any,
) -> tuple[Iterator[np.ndarray], dict]:
    """Animate ``scene`` with a Wan image-to-video model (module docstring); ``options``: the fields of
    :class:`~stillmotion.engines.options.DiffusionOptions` (the SVD-only ones are not used). ``control``:
    ``warp-guided`` (``auto`` with a field: the arrows steer the model through the warp engine's reference,
    ``follow`` and ``freedom`` its knobs, ``loop`` the reference's seamless loop) or ``none`` (the prompt
    alone; ``auto`` without a field); ``trained`` is SVD's (the paper's motion modules) and refused. Stats:
    steps, unet_calls (denoiser calls), transformer_calls, frame_evaluations (latent frames through the
    transformer), latent_frames, device, dtype, size, backbone, sampler (the one the model's scheduler config
    names: euler or unipc), control, long_method."""
    opts = DiffusionOptions(model=model, **options)
    request = RenderRequest(frames=frames, fps=0.0, strength=strength, loop=opts.loop, progress=progress,
                            size=size)  # fmt: skip
    return animate_wan_with(scene, field, request, opts)


def animate_wan_with(
    scene: Scene, field: np.ndarray | None, request: RenderRequest, o: DiffusionOptions
) -> tuple[Iterator[np.ndarray], dict]:
    """:func:`animate_wan` with the request and options as the diffusion engine holds them (``o.model`` a
    Wan folder); ``request.fps`` is not used (Wan has no frame-rate conditioning)."""
    frames, strength, progress, size = request.frames, request.strength, request.progress, request.size
    if o.steps is not None and int(o.steps) < 1:
        raise UserInputError(f"--steps must be >= 1, got {o.steps}")
    if frames < 1:
        raise UserInputError(f"--frames must be >= 1, got {frames}")
    for name, value in (("--guidance", o.guidance), ("--guidance-2", o.guidance_2)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise UserInputError(f"{name} must be a number >= 0, got {value!r}")
    if o.flow_shift is not None and not (np.isfinite(o.flow_shift) and o.flow_shift > 0):
        raise UserInputError(f"--flow-shift must be a number > 0, got {o.flow_shift!r}")
    options = long_options(o)
    mode = resolve_control(o.control, False)  # Wan has no trained motion modules: auto is warp-guided
    if mode == "trained":
        raise UserInputError(
            "--control trained: the paper's motion modules are SVD-only; a Wan model takes --control "
            "warp-guided (the arrows steer it) or none"
        )
    if field is None:
        mode = "none"
    knobs = WarpGuidance(
        **{k: float(v) for k, v in (("follow", o.follow), ("freedom", o.freedom)) if v is not None}
    )
    pipe = load_wan(o.model, o.device, o.dtype, o.offload, o.vae_tiling)
    variant = pipe.variant.name
    steps = int(DEFAULT_STEPS if o.steps is None else o.steps)
    scale = float(DEFAULT_GUIDANCE[variant] if o.guidance is None else o.guidance)
    width, height = size if size is not None else pipe.default_size(scene.width, scene.height)
    motion = None if field is None else np.asarray(field, np.float32) * np.float32(strength)
    if motion is not None and mode == "none":
        logger.warning(
            "--control none: plain image-to-video from the prompt, the arrows / motion field are ignored"
        )
        motion = None
    if motion is not None and motion.ndim == 4:  # a sequence: one field per video frame step
        motion = fit_sequence(motion, frames)
    prepared = pipe.prepare(
        scene.image, motion, mask=scene.mask, num_frames=frames, width=width, height=height, prompt=o.prompt,
        negative_prompt=o.negative_prompt, guidance_scale=scale, guidance_scale_2=o.guidance_2,
        flow_shift=o.flow_shift,
    )  # fmt: skip
    plain = prepared.denoiser
    prepared, guided = with_control(pipe, prepared, mode, knobs, o.loop)
    den = prepared.denoiser
    options = phased_options(options, o, den, guided, pipe.vae_scale_factor_temporal)
    stats: dict[str, Any] = {
        "steps": steps,
        "unet_calls": 0,
        "transformer_calls": 0,
        "frame_evaluations": 0,
        "latent_frames": den.num_frames,
        "device": str(pipe._execution_device),
        "dtype": str(pipe.main_transformer.dtype).replace("torch.", ""),
        "size": [width, height],
        "backbone": variant,
        "sampler": solver_of(den).name,  # the model's scheduler's: euler or unipc
        "control": mode,
        "steps_run": steps - (knobs.start_step(steps) if guided is not None else 0),
        "strength_ms": None,
        "refined": False,
        "long_method": None,
        "overlap": options.shared_frames(den.clip_frames),
        "carry": options.carry,  # phased: how later segments continue (--carry motion resolved)
    }

    if guided is not None:
        stats.update(
            follow=knobs.follow, freedom=knobs.freedom, reference="loop" if guided.ref.loop else "forward"
        )

    def count() -> None:
        stats.update(unet_calls=den.unet_calls, transformer_calls=den.transformer_calls,
                     frame_evaluations=den.frame_evaluations)  # fmt: skip

    def one_clip() -> Iterator[np.ndarray]:
        sigmas = den.set_schedule(steps)  # warp-guided: from its start level on
        x = pipe.initial_latents(plain, generator=torch.Generator(device="cpu").manual_seed(int(o.seed)))
        if guided is not None:
            x = guided.start_latents(x)
        with step_progress(len(sigmas) - 1, "wan", progress, o.on_step) as step_done:
            x = sample_ode(den, x, sigmas, callback=step_done)
        count()
        for chunk in pipe.decode(prepared, x, o.decode_chunk_size):
            yield from to_uint8(chunk)
        pipe.maybe_free_model_hooks()

    def long_video() -> Iterator[np.ndarray]:
        stats["long_method"] = options.method
        for chunk, _join in stream_long_video(
            pipe, prepared, options, steps=steps, seed=int(o.seed), decode_chunk_size=o.decode_chunk_size,
            progress=progress, on_call=o.on_step,
        ):  # fmt: skip
            count()
            yield from to_uint8(chunk)
        count()
        pipe.maybe_free_model_hooks()

    if plain.num_frames <= plain.clip_frames:
        return one_clip(), stats
    return long_video(), stats
