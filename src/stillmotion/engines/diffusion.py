"""The diffusion engine: a scene and its motion field -> frames from the motion-conditioned SVD pipeline.

``animate_diffusion`` loads a :class:`~stillmotion.diffusion.pipeline.StillMotionPipeline` (a folder
or a hub id in the Hugging Face cache; the bundled tiny checkpoint when ``model`` is None), fits the
scene to a size the model accepts, prepares the denoiser and returns a lazy iterator of uint8 frames
plus a stats dict that is complete once the iterator is exhausted. Up to the model's clip length the
video is one clip sampled with the Euler sampler; longer videos go through the long-video samplers
(``stillmotion.sampling.long``; ``long_method`` phased by default).

``strength`` is a speed factor as in the warp engine: the field is multiplied by it, and the global
motion strength M_s (eq. 8) the model is conditioned on is measured on the scaled field.

``control`` says what makes the arrows steer the model (``stillmotion.diffusion.warp_guidance``):
``trained`` the model's motion modules (and its warped conditioning when it has one), ``warp-guided``
the warp engine's animation as the dual-clock reference (any image-to-video model, no training),
``none`` nothing (plain image-to-video, the arrows ignored), ``auto`` ``trained`` for a model whose motion
modules are trained and ``warp-guided`` otherwise.

Importing this module is light (numpy only): the web app and the demo use its model-folder helpers
(``default_model``, ``model_path``); torch, the samplers and diffusers are imported when a model loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stillmotion.engines.options import DiffusionOptions, RenderRequest
from stillmotion.errors import UserInputError
from stillmotion.inputs.scene import Scene

logger = logging.getLogger("stillmotion.diffusion")

# The bundled small checkpoint (issue "Embedded default model") lives here once trained.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "models" / "stillmotion-tiny"
# The plain tiny image-to-video model (no motion modules trained, no warped conditioning: a stand-in for
# stock SVD), selected with --model plain.
PLAIN_MODEL_DIR = DEFAULT_MODEL_DIR.with_name("stillmotion-tiny-plain")
MODEL_NAMES = ("bundled", "plain")

_CACHE: dict[tuple, Any] = {}


def default_model_dir() -> Path | None:
    """The bundled default model's folder when it is installed, else None."""
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "model_index.json").is_file() else None


def default_model() -> Path:
    path = default_model_dir()
    if path is not None:
        return path
    raise UserInputError(
        "no --model given and the bundled default model is not present "
        f"({DEFAULT_MODEL_DIR}); pass --model with a StillMotion or Stable Video Diffusion folder or hub id"
    )


def model_path(model: str | Path | None) -> Path | str:
    """``--model`` as a folder or hub id: None or ``bundled`` is the bundled model, ``plain`` the plain
    one (a folder of that name is passed as ``./plain``)."""
    if model is None or str(model) == "bundled":
        return default_model()
    if str(model) == "plain":
        if not (PLAIN_MODEL_DIR / "model_index.json").is_file():
            raise UserInputError(f"--model plain: the plain model is not present ({PLAIN_MODEL_DIR})")
        return PLAIN_MODEL_DIR
    return model


def model_defaults(model: str | Path) -> dict:
    """Inference defaults a model folder ships in stillmotion_defaults.json (steps, guidance), or {}."""
    path = Path(model) / "stillmotion_defaults.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def load_pipeline(model: str | Path | None, device: str = "auto", dtype: str = "auto", offload: bool = False):
    """Load (and cache the last) pipeline on ``device`` in ``dtype``; offload = model CPU offload on CUDA."""
    # lazy: torch and diffusers (an optional extra) load only when a model does; the web app and the demo
    # use this module's model-folder helpers without them
    from stillmotion.diffusion.pipeline import StillMotionPipeline
    from stillmotion.engines.backbone_run import cached_load, on_device, resolve_device, resolve_dtype
    from stillmotion.engines.long_video import steady_heap

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if dev.split(":")[0] == "cpu":
        steady_heap()  # before the load: blocks freed in the heap before it was set would stay in use
    where = str(model_path(model))
    index = Path(where) / "model_index.json"
    stamp = index.stat().st_mtime_ns if index.is_file() else None  # a re-saved folder is reloaded
    key = (where, stamp, dev, str(torch_dtype), bool(offload))
    return cached_load(_CACHE, key, lambda: on_device(
        StillMotionPipeline.from_pretrained(where, torch_dtype=torch_dtype), dev, offload))  # fmt: skip


def model_size(pipe, width: int, height: int) -> tuple[int, int]:
    """The size the scene is brought to: its own rounded to the model's multiple, or the model's default
    size (aspect kept) when the scene is larger than that."""
    dw, dh = pipe.default_size(width, height)
    if max(width, height) > max(dw, dh):
        return dw, dh
    m = pipe.size_multiple
    return max(m, int(round(width / m)) * m), max(m, int(round(height / m)) * m)


def render(
    scene: Scene, field: np.ndarray | None, request: RenderRequest, options: dict[str, Any]
) -> tuple[Iterator[np.ndarray], dict]:
    """The registry's entry point: ``options`` are :class:`~stillmotion.engines.options.DiffusionOptions`
    names (checked by the API), ``request.loop`` warp-guided control's reference."""
    return _animate(scene, field, request, DiffusionOptions(**{**options, "loop": bool(request.loop)}))


def animate_diffusion(
    scene: Scene,
    field: np.ndarray | None,
    *,
    frames: int,
    fps: float = 8.0,
    strength: float = 1.0,
    progress: bool = False,
    size: tuple[int, int] | None = None,
    **options: Any,
) -> tuple[Iterator[np.ndarray], dict]:
    """Animate ``scene`` along ``field`` (H, W, 2 px/frame at the scene's size; or (F, H, W, 2), one
    field per frame step, cut or extended by its last field to the video; or None for no motion
    guidance). Returns (lazy iterator of uint8 (H', W', 3) frames at the model size, stats dict with
    steps, unet_calls, frame_evaluations, device, size, strength_ms, refined).

    ``options``: the fields of :class:`~stillmotion.engines.options.DiffusionOptions` (a name it does not
    have is a TypeError). ``on_step(done, total)`` is called after every denoiser call (total: the calls the
    whole video takes), for front ends that show progress while no frame has come out yet.

    ``control`` (auto, trained, warp-guided, none; see the module docstring); ``follow`` and ``freedom``:
    warp-guided's knobs (:class:`~stillmotion.diffusion.warp_guidance.WarpGuidance`, default the measured
    ones); ``loop``: warp-guided's reference is the warp engine's seamless loop of ``frames`` frames
    (False: forward motion; a flow sequence always animates forward).

    A Wan 2.1 / 2.2 image-to-video ``model`` (model_index.json names a Wan pipeline) runs
    :func:`stillmotion.engines.wan.animate_wan` with ``prompt``, ``negative_prompt``, ``guidance``,
    ``guidance_2``, ``flow_shift`` and ``vae_tiling``, which the SVD models do not use (and the SVD-only
    options refine, chunk_frames, min/max_guidance_scale, motion_bucket_id, noise_aug_strength are not
    Wan's)."""
    opts = DiffusionOptions(**options)
    request = RenderRequest(frames=frames, fps=fps, strength=strength, loop=opts.loop, progress=progress,
                            size=size)  # fmt: skip
    return _animate(scene, field, request, opts)


def _animate(
    scene: Scene, field: np.ndarray | None, request: RenderRequest, o: DiffusionOptions
) -> tuple[Iterator[np.ndarray], dict]:
    """One backbone or the other: Wan for a Wan folder, SVD (the StillMotion pipeline) otherwise."""
    # lazy: torch and diffusers (an optional extra) load only when the engine runs (module docstring)
    from stillmotion.diffusion.wan import wan_model_dir
    from stillmotion.engines.wan import animate_wan_with

    wan = wan_model_dir(o.model)
    if wan is not None:

        return animate_wan_with(scene, field, request, dataclasses.replace(o, model=wan))
    return _animate_svd(scene, field, request, o)


def _animate_svd(
    scene: Scene, field: np.ndarray | None, request: RenderRequest, o: DiffusionOptions
) -> tuple[Iterator[np.ndarray], dict]:
    # lazy: torch and the samplers load only when the engine runs (module docstring)
    import torch

    from stillmotion.diffusion.warp_guidance import WarpGuidance, resolve_control
    from stillmotion.engines.backbone_run import (
        fit_sequence,
        long_options,
        phased_options,
        step_progress,
        to_uint8,
        with_control,
    )
    from stillmotion.engines.long_video import stream_long_video
    from stillmotion.sampling.base import sample_euler
    from stillmotion.sampling.frame_noise import FrameNoise

    frames, strength, progress, size = request.frames, request.strength, request.progress, request.size
    wan_only = {"--prompt": o.prompt, "--negative-prompt": o.negative_prompt, "--guidance": o.guidance,
                "--guidance-2": o.guidance_2, "--flow-shift": o.flow_shift,
                "--vae-tiling": o.vae_tiling or None}  # fmt: skip
    given = [name for name, value in wan_only.items() if value is not None]
    if given:
        logger.warning("%s: Wan models only; this model is a Stable Video Diffusion one, ignored",
                       ", ".join(given))  # fmt: skip

    if o.steps is not None and int(o.steps) < 1:
        raise UserInputError(f"--steps must be >= 1, got {o.steps}")
    if frames < 1:
        raise UserInputError(f"--frames must be >= 1, got {frames}")
    if not (np.isfinite(strength) and strength >= 0):
        raise UserInputError(f"strength must be a finite number >= 0, got {strength!r}")
    options = long_options(o, chunk_frames=o.chunk_frames)  # checked before any work
    resolve_control(o.control, True)  # a bad mode is refused before any loading
    pipe = load_pipeline(o.model, o.device, o.dtype, o.offload)
    # Unset options take the model folder's stillmotion_defaults.json (the bundled model's), else SVD's.
    defaults = model_defaults(model_path(o.model))
    guidance_knobs = WarpGuidance(
        follow=float(defaults.get("follow", WarpGuidance.follow) if o.follow is None else o.follow),
        freedom=float(defaults.get("freedom", WarpGuidance.freedom) if o.freedom is None else o.freedom),
    )
    trained = pipe.motion_modules_trained
    mode = resolve_control(o.control, trained)
    steps = int(defaults.get("steps", 25) if o.steps is None else o.steps)
    min_guidance_scale, max_guidance_scale = o.min_guidance_scale, o.max_guidance_scale
    if min_guidance_scale is None:
        min_guidance_scale = float(defaults.get("min_guidance_scale", 1.0))
    if max_guidance_scale is None:
        max_guidance_scale = float(defaults.get("max_guidance_scale", 3.0))
    width, height = size if size is not None else model_size(pipe, scene.width, scene.height)
    refine = o.refine
    motion = None if field is None else np.asarray(field, np.float32) * np.float32(strength)
    if motion is not None and motion.ndim == 4:
        # a sequence steers frame step t by field t: cut to the video's steps, the last one repeated
        motion = fit_sequence(motion, frames)
        refine = False  # T refines single arrow fields
    if motion is not None and mode == "none":
        logger.warning("--control none: plain image-to-video, the arrows / motion field are ignored")
        motion = None
    elif motion is not None and mode == "trained" and not trained:
        logger.warning("--control trained: this model's motion modules are untrained (zero), so the arrows "
                       "do not steer it; use --control warp-guided (or auto) to follow them")  # fmt: skip
    if mode == "warp-guided":
        refine = False  # the warp reference follows the field as asked; a refined one would disagree with it
    refined = bool(refine and motion is not None and pipe.refiner is not None)
    generator = torch.Generator(device="cpu").manual_seed(int(o.seed))
    prepared = pipe.prepare(
        scene.image, motion, mask=scene.mask, num_frames=frames, width=width, height=height, refine=refine,
        fps=max(1, int(round(request.fps))), motion_bucket_id=o.motion_bucket_id,
        noise_aug_strength=o.noise_aug_strength, min_guidance_scale=min_guidance_scale,
        max_guidance_scale=max_guidance_scale, generator=generator,
    )  # fmt: skip
    prepared, guided = with_control(pipe, prepared, mode, guidance_knobs, o.loop)
    den = prepared.denoiser
    options = phased_options(options, o, den, guided)
    stats: dict[str, Any] = {
        "steps": steps,
        "unet_calls": 0,
        "frame_evaluations": 0,
        "device": str(pipe._execution_device),
        "dtype": str(pipe.unet.dtype).replace("torch.", ""),
        "size": [width, height],
        "strength_ms": prepared.strength,
        "refined": refined,
        "long_method": None,
        # phased's cross-faded frames per join (when the video is long)
        "overlap": options.shared_frames(den.clip_frames),
        "carry": options.carry,  # phased: how later segments continue (--carry motion resolved)
        "seams": [],  # [first frame, frame steps] of every join between separately sampled segments
        "control": mode,
        "steps_run": steps - (guidance_knobs.start_step(steps) if guided is not None else 0),
        "motion_modules": "trained" if trained else "untrained (skipped)",
    }
    if guided is not None:
        stats.update(follow=guidance_knobs.follow, freedom=guidance_knobs.freedom,
                     reference="loop" if guided.ref.loop else "forward")  # fmt: skip

    def one_clip() -> Iterator[np.ndarray]:
        sigmas = den.set_schedule(steps)  # warp-guided: from its start level on
        top = float(guided.full_sigmas[0]) if guided is not None else float(sigmas[0])
        # the long-video samplers' per-frame noise: the same seed gives a frame the same noise whatever
        # the video's length, so a short video is the first clip of a longer one
        noise = FrameNoise(den.num_frames, den.latent_shape(1)[2:], seed=int(o.seed), batch=den.batch_size,
                           device=den.device, dtype=torch.float32,
                           scale=float(den.init_noise_sigma) / top)  # fmt: skip
        if guided is not None:  # warp-guided: the reference noised to the start level (SDEdit)
            noise = guided.start_noise(noise)
        x = noise.frames(0, den.num_frames) * sigmas[0]  # as the long-video samplers start
        with step_progress(len(sigmas) - 1, "diffusion", progress, o.on_step) as step_done:
            x = sample_euler(den, x, sigmas, callback=step_done)
        stats.update(unet_calls=den.unet_calls, frame_evaluations=den.frame_evaluations)
        for chunk in pipe.decode(prepared, x, o.decode_chunk_size):
            yield from to_uint8(chunk)
        pipe.maybe_free_model_hooks()  # with --offload: everything back to the CPU

    def long_video() -> Iterator[np.ndarray]:
        stats["long_method"] = options.method
        done = 0
        for chunk, join in stream_long_video(
            pipe, prepared, options, steps=steps, seed=int(o.seed), decode_chunk_size=o.decode_chunk_size,
            progress=progress, on_call=o.on_step,
        ):  # fmt: skip
            stats.update(unet_calls=den.unet_calls, frame_evaluations=den.frame_evaluations)
            if join:
                stats["seams"].append([done, int(join)])
            done += chunk.shape[1]
            yield from to_uint8(chunk)
        stats.update(unet_calls=den.unet_calls, frame_evaluations=den.frame_evaluations)
        pipe.maybe_free_model_hooks()

    if o.overlap is not None and frames > den.clip_frames:
        if options.method != "phased":
            logger.warning("--overlap applies to --long-method phased only; ignored for %s", options.method)
        elif options.shared_frames(den.clip_frames) < options.overlap:
            most = options.shared_frames(den.clip_frames)
            logger.warning("--overlap %d: this model's clips hold %d frames, so at most %d can be shared; "
                           "using %d", options.overlap, den.clip_frames, most, most)  # fmt: skip
            stats["overlap"] = most
    if frames <= den.clip_frames:
        return one_clip(), stats
    return long_video(), stats
