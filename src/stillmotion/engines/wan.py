"""The diffusion engine on a Wan 2.1 / 2.2 image-to-video model (``stillmotion.diffusion.wan``).

``animate_wan`` is what ``animate_diffusion`` runs when ``--model`` is a Wan folder (recognised from its
model_index.json): it loads the backbone (cached), fits the scene to the model's resolution bucket (or
``--size``), prepares the flow-matching denoiser with the prompt and guidance, and returns a lazy iterator
of uint8 frames plus a stats dict complete once the iterator is exhausted. Up to one clip (81 video frames,
21 latent frames) the video is sampled with the Euler sampler, as diffusers' pipeline does; longer videos go
through the long-video samplers, in latent frames, decoded as one causal stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.inputs.scene import Scene

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
    import torch

    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.engines.diffusion import resolve_device, resolve_dtype

    dev = resolve_device(device)
    torch_dtype = (
        torch.bfloat16 if dtype in (None, "auto") and dev.startswith("cuda") else resolve_dtype(dtype, dev)
    )
    key = (str(model), dev, str(torch_dtype), bool(offload), bool(vae_tiling))
    if key in _CACHE:
        return _CACHE[key]
    _CACHE.clear()
    pipe = WanBackbone.from_pretrained(model, torch_dtype=torch_dtype)
    if offload and dev.startswith("cuda"):
        pipe.enable_model_cpu_offload(device=dev)
    else:
        if offload:
            logger.warning("--offload has no effect on the CPU; ignoring it")
        pipe.to(dev)
    if vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    _CACHE[key] = pipe
    return pipe


def _to_uint8(frames: np.ndarray) -> Iterator[np.ndarray]:
    for frame in frames[0]:
        yield (frame * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def animate_wan(
    scene: Scene,
    field: np.ndarray | None,
    *,
    model: str | Path,
    frames: int,
    strength: float = 1.0,
    progress: bool = False,
    steps: int | None = None,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    device: str = "auto",
    dtype: str = "auto",
    offload: bool = False,
    long_method: str | None = None,
    gamma: float = 0.8,
    omega: float = 0.2,
    overlap: int | None = None,
    branch_sigma: float | None = None,
    carry: str = "motion",
    stride: int | None = None,
    decode_chunk_size: int = 8,
    prompt: str | None = None,
    negative_prompt: str | None = None,
    guidance: float | None = None,
    guidance_2: float | None = None,
    flow_shift: float | None = None,
    vae_tiling: bool = False,
    control: str = "auto",
    follow: float | None = None,
    freedom: float | None = None,
    loop: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[Iterator[np.ndarray], dict]:
    """Animate ``scene`` with a Wan image-to-video model (module docstring). ``control``: ``warp-guided``
    (``auto`` with a field: the arrows steer the model through the warp engine's reference, ``follow`` and
    ``freedom`` its knobs, ``loop`` the reference's seamless loop) or ``none`` (the prompt alone; ``auto``
    without a field); ``trained`` is SVD's (the paper's motion modules) and refused. Stats: steps, unet_calls
    (denoiser calls), transformer_calls, frame_evaluations (latent frames through the transformer),
    latent_frames, device, dtype, size, backbone, control, long_method."""
    import torch

    from stillmotion.diffusion.warp_guidance import WarpGuidance, resolve_control, warp_guided
    from stillmotion.sampling.long import LongOptions

    if steps is not None and int(steps) < 1:
        raise UserInputError(f"--steps must be >= 1, got {steps}")
    if frames < 1:
        raise UserInputError(f"--frames must be >= 1, got {frames}")
    for name, value in (("--guidance", guidance), ("--guidance-2", guidance_2)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise UserInputError(f"{name} must be a number >= 0, got {value!r}")
    if flow_shift is not None and not (np.isfinite(flow_shift) and flow_shift > 0):
        raise UserInputError(f"--flow-shift must be a number > 0, got {flow_shift!r}")
    options = LongOptions(method=long_method or "phased", gamma=gamma, omega=omega, branch_sigma=branch_sigma,
                          carry=carry, stride=stride,
                          **({} if overlap is None else {"overlap": int(overlap)}))  # fmt: skip
    mode = resolve_control(control, False)  # Wan has no trained motion modules: auto is warp-guided
    if mode == "trained":
        raise UserInputError(
            "--control trained: the paper's motion modules are SVD-only; a Wan model takes --control "
            "warp-guided (the arrows steer it) or none"
        )
    if field is None:
        mode = "none"
    knobs = WarpGuidance(
        **{k: float(v) for k, v in (("follow", follow), ("freedom", freedom)) if v is not None}
    )
    pipe = load_wan(model, device, dtype, offload, vae_tiling)
    variant = pipe.variant.name
    steps = int(DEFAULT_STEPS if steps is None else steps)
    scale = float(DEFAULT_GUIDANCE[variant] if guidance is None else guidance)
    width, height = size if size is not None else pipe.default_size(scene.width, scene.height)
    motion = None if field is None else np.asarray(field, np.float32) * np.float32(strength)
    if motion is not None and mode == "none":
        logger.warning(
            "--control none: plain image-to-video from the prompt, the arrows / motion field are ignored"
        )
        motion = None
    if motion is not None and motion.ndim == 4:  # a sequence: one field per video frame step
        need = max(1, frames - 1)
        motion = motion[:need]
        if len(motion) < need:
            motion = np.concatenate([motion, np.repeat(motion[-1:], need - len(motion), 0)])
    prepared = pipe.prepare(
        scene.image, motion, mask=scene.mask, num_frames=frames, width=width, height=height, prompt=prompt,
        negative_prompt=negative_prompt, guidance_scale=scale, guidance_scale_2=guidance_2,
        flow_shift=flow_shift,
    )  # fmt: skip
    plain = prepared.denoiser
    guided_video = warp_guided(pipe, prepared, knobs, loop=loop) if mode == "warp-guided" else None
    if guided_video is not None:
        prepared = guided_video
    den = prepared.denoiser
    guided = den if guided_video is not None else None
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
        "control": mode,
        "steps_run": steps - (knobs.start_step(steps) if guided is not None else 0),
        "strength_ms": None,
        "refined": False,
        "long_method": None,
        "overlap": options.overlap,
    }

    if guided is not None:
        stats.update(
            follow=knobs.follow, freedom=knobs.freedom, reference="loop" if guided.ref.loop else "forward"
        )

    def count() -> None:
        stats.update(unet_calls=den.unet_calls, transformer_calls=den.transformer_calls,
                     frame_evaluations=den.frame_evaluations)  # fmt: skip

    def one_clip() -> Iterator[np.ndarray]:
        from stillmotion.progress import progress_bar
        from stillmotion.sampling.base import sample_euler

        sigmas = den.set_schedule(steps)  # warp-guided: from its start level on
        x = pipe.initial_latents(plain, generator=torch.Generator(device="cpu").manual_seed(int(seed)))
        if guided is not None:
            x = guided.start_latents(x)
        run = len(sigmas) - 1

        def step_done(i: int, x_, x0) -> None:
            bar.update(1)
            if on_step is not None:
                on_step(i + 1, run)

        with progress_bar(total=run, desc="wan", enabled=progress, unit="step") as bar:
            x = sample_euler(den, x, sigmas, callback=step_done)
        count()
        for chunk in pipe.decode(prepared, x, decode_chunk_size):
            yield from _to_uint8(chunk)
        pipe.maybe_free_model_hooks()

    def long_video() -> Iterator[np.ndarray]:
        from stillmotion.engines.long_video import stream_long_video

        stats["long_method"] = options.method
        for chunk, _join in stream_long_video(
            pipe, prepared, options, steps=steps, seed=int(seed), decode_chunk_size=decode_chunk_size,
            progress=progress, on_call=on_step,
        ):  # fmt: skip
            count()
            yield from _to_uint8(chunk)
        count()
        pipe.maybe_free_model_hooks()

    if plain.num_frames <= plain.clip_frames:
        return one_clip(), stats
    return long_video(), stats
