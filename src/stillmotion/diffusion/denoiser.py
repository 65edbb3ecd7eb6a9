"""SVD's UNet with all its conditioning as the sampler interface ``denoiser(x, sigma, **cond) -> x0``.

Interface (what every sampler in ``stillmotion.sampling`` relies on)::

    x0 = denoiser(x, sigma, frames=slice(a, b) | None, image=None, image_embeds=None)

- ``x``: noisy latents ``[B, f, C, h, w]`` of the window ``frames`` of the whole video (scaled
  latents, i.e. VAE latent * scaling_factor, float32). ``frames=None`` means frames ``0..f-1``.
- ``sigma``: the noise level (0-d tensor or float), normally one of :attr:`MotionDenoiser.sigmas`.
- ``frames`` selects, for the window, the motion fields and the per-frame guidance scales from the
  whole video's (``num_frames`` long); the UNet sees the window as one clip (its frame position
  embedding restarts at 0).
- ``image`` overrides the conditioning image latent ``[B, C, h, w]`` (unscaled VAE latent of the
  noise-augmented image, as SVD uses it; build it with :meth:`encode_condition_image`), e.g. the
  previous clip's last frame for the ``direct`` baseline. ``image_embeds`` ``[B, 1, D]`` overrides
  the CLIP embedding the same way.
- Returns the denoised estimate x0 ``[B, f, C, h, w]`` float32.

Exactly SVD's computation (diffusers' StableVideoDiffusionPipeline with EulerDiscreteScheduler):
classifier-free guidance batches [uncond, cond] with a zero image embedding and a zero image latent
for uncond when the largest guidance scale exceeds 1; c_in = 1/sqrt(sigma^2+1); the UNet's timestep
is the scheduler's c_noise (0.25*log(sigma) for SVD's continuous v-prediction config); guidance
``v = v_u + g_frame * (v_c - v_u)`` per frame; v-prediction x0 = v * (-sigma/sqrt(sigma^2+1)) +
x/(sigma^2+1). With ``sample_euler`` over :attr:`sigmas` starting from noise * :attr:`init_noise_sigma`
this reproduces the scheduler's steps operation for operation.
The formulas are ``sampling.parameterization.VPredictionEDM``'s (``denoiser.parameterization``), the same
object the trainer and the samplers use.

Motion: the flows of the whole video are held (a static field as an expanded view, so 500 frames
cost no more than one); the motion encoder runs on the window's flows, its features are cached per
window (``feature_cache_size`` windows) and handed to the :class:`MotionAdapter` hooks for the UNet
call, for both guidance branches (the motion field is a structural control like ControlNet's, so the
unconditional branch sees it too). The strength M_s goes to both branches too, like SVD's time ids.

Still regions (the mask): after the UNet, x0 is blended toward the clean conditioning latent where
the (area-downsampled) mask says "still": ``x0 <- m*x0 + (1-m)*z_image``. An Euler step from
``x = z + sigma*eps`` toward that x0 lands on ``z + sigma_next*eps``, so still regions follow the
noised input latent's trajectory and end exactly on the input latent at sigma 0, whatever sampler
runs over this interface. The pipeline pastes the input pixels there after decoding.

Condition residual (``condition_residual``, an addition for small models, not SVD's; saved in the
motion adapter's config by the trainer): the UNet sees ``x - r`` instead of ``x``, where ``r`` is the
conditioning latents of the conditional branch (scaled: the warped frames, or the image repeated), and
``x0 = r + c_skip * (x - r) + c_out * v``. The model then learns what the video adds to its conditioning
rather than how to copy 48 latent channels through the whole UNet, which a 64-wide UNet trained for
40 minutes on a CPU does not learn precisely (docs/training.md). Both guidance branches share ``r``.

Counters: ``unet_calls`` (UNet forwards) and ``frame_evaluations`` (frames through the UNet,
both guidance branches included).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from stillmotion.diffusion.temporal_windows import triangular_weights, window_fused_temporal_attention
from stillmotion.sampling.parameterization import VPredictionEDM
from stillmotion.sampling.segments import sliding_windows


def c_noise(scheduler, sigma: torch.Tensor) -> torch.Tensor:
    """The UNet timestep for noise level sigma, as the scheduler defines it."""
    cfg = scheduler.config
    if getattr(cfg, "timestep_type", "discrete") == "continuous" and cfg.prediction_type == "v_prediction":
        return 0.25 * sigma.log()

    log_sigmas = np.log(np.array(((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod) ** 0.5))
    t = scheduler._sigma_to_t(np.array(sigma.item()), log_sigmas)
    return torch.tensor(float(t), dtype=torch.float32)


def unet_forward(
    unet,
    motion_adapter,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    added_time_ids: torch.Tensor,
    motion_features: Sequence[torch.Tensor] | None = None,
    strength: torch.Tensor | None = None,
) -> torch.Tensor:
    """One UNet forward with motion features and strength (training uses this too).

    sample ``[B, F, 2C, h, w]`` (c_in-scaled latents concatenated with the image latents);
    motion_features: the encoder's levels for the ``B*F`` frames (None: stock SVD);
    strength ``[B]`` M_s values (None: no strength term). Returns the model output (v) ``[B, F, C, h, w]``.
    """
    if motion_adapter is None:
        if motion_features is not None or strength is not None:
            raise ValueError("motion features or strength given but the pipeline has no motion_adapter")
        return unet(
            sample,
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            added_time_ids=added_time_ids,
            return_dict=False,
        )[0]
    motion_adapter.attach(unet)
    with motion_adapter.conditioning(motion_features, strength):
        return unet(
            sample,
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            added_time_ids=added_time_ids,
            return_dict=False,
        )[0]


class MotionDenoiser:
    """Callable ``(x, sigma, frames=None, image=None, image_embeds=None) -> x0``; see the module doc."""

    def __init__(
        self,
        *,
        unet,
        scheduler,
        image_embeddings: torch.Tensor,
        image_latents: torch.Tensor,
        added_time_ids: torch.Tensor,
        guidance: torch.Tensor | tuple[float, float],
        num_frames: int,
        motion_encoder=None,
        motion_adapter=None,
        flows: torch.Tensor | None = None,
        strength: torch.Tensor | None = None,
        still_mask: torch.Tensor | None = None,
        still_latents: torch.Tensor | None = None,
        feature_cache_size: int = 4,
        vae=None,
        generator: torch.Generator | None = None,
        noise_aug_strength: float = 0.02,
        image_encoder_fn=None,
        frame_latents: Any = None,
        motion_frames: Any = None,
        condition_residual: bool = False,
        latent_scale: float = 1.0,
    ):
        if isinstance(guidance, tuple):
            self.guidance_range: tuple[float, float] | None = (float(guidance[0]), float(guidance[1]))
            self.guidance = None
        else:
            if guidance.ndim != 1 or guidance.shape[0] != num_frames:
                raise ValueError(
                    f"guidance must hold one scale per frame ({num_frames}), got {tuple(guidance.shape)}"
                )
            self.guidance_range, self.guidance = None, guidance
        if flows is not None and flows.shape[1] != num_frames:
            raise ValueError(f"flows must hold {num_frames} frames, got {flows.shape[1]}")
        self.unet = unet
        self.scheduler = scheduler
        self.motion_encoder = motion_encoder
        self.motion_adapter = motion_adapter
        self.image_embeddings = image_embeddings  # [B, 1, D], conditional branch only
        self.image_latents = image_latents  # [B, C, h, w], unscaled, conditional branch only
        # per-frame conditioning latents (warped image conditioning: ``.window(start, stop)`` ->
        # [B, f, C, h, w]), or None: the UNet then gets image_latents for every frame, as in SVD
        self.frame_latents = frame_latents
        # the same for a model without warped conditioning: only :meth:`reference` reads it
        self.motion_frames = motion_frames
        self.condition_residual = condition_residual
        self.latent_scale = float(latent_scale)  # VAE scaling_factor: the residual is taken in scaled latents
        self.added_time_ids = added_time_ids  # [B, 3]
        # guidance: (min, max) = SVD's ramp over every clip the UNet sees (see guidance_scales), or an
        # explicit [N] per frame of the whole video
        self._guidance_windows: tuple[int, int] | None = None  # FreeNoise's windows while its hook is on
        self.num_frames = num_frames
        self.flows = flows  # [B, N, 2, H, W] normalised encoder input, or None
        self.strength = strength  # [B] or None
        self.still_mask = still_mask  # [1, 1, 1, h, w], 1 where the image must stay still
        self.still_latents = still_latents  # [B, 1, C, h, w], scaled clean image latent
        self.do_cfg = bool(max(self.guidance_range) > 1 if self.guidance is None else guidance.max() > 1)
        self.feature_cache_size = feature_cache_size
        self._features: OrderedDict[tuple[int, int], list[torch.Tensor]] = OrderedDict()
        self.vae = vae
        self.generator = generator
        self.noise_aug_strength = noise_aug_strength
        self._image_encoder_fn = image_encoder_fn
        self.unet_calls = 0
        self.frame_evaluations = 0
        self.sigmas: torch.Tensor | None = None
        # SVD's v-prediction EDM form, with the scheduler's timestep (sampling.parameterization)
        self.parameterization = VPredictionEDM(timestep_fn=lambda s: c_noise(self.scheduler, s))
        self.init_noise_sigma: torch.Tensor | float | None = None

    # ---- facts samplers need ---------------------------------------------------------------------

    def keep_windows(self, count: int) -> None:
        """Cache the per-window inputs (motion features, warped conditioning latents) of ``count``
        windows: for samplers that visit every window at every step (Gen-L-Video), which would otherwise
        remake them each time."""
        self.feature_cache_size = max(self.feature_cache_size, int(count))
        if self.frame_latents is not None:
            self.frame_latents.cache_size = max(self.frame_latents.cache_size, int(count))

    @contextlib.contextmanager
    def windowed_temporal_attention(
        self, window: int, stride: int, chunk_frames: int | None = None
    ) -> Iterator[int]:
        """Context manager: FreeNoise's window-fused temporal attention on this denoiser's UNet for its
        duration (``stillmotion.diffusion.temporal_windows``), removed on exit. The guidance ramp follows
        the same windows (see :meth:`guidance_scales`)."""
        self._guidance_windows = (int(window), int(stride))
        try:
            with window_fused_temporal_attention(self.unet, window, stride, chunk_frames) as patched:
                yield patched
        finally:
            self._guidance_windows = None

    def guidance_scales(self, start: int, stop: int) -> torch.Tensor:
        """Per-frame guidance scales ``[stop - start]`` for a call on frames ``start:stop``.

        SVD's ramp is per clip: the frames of one UNet call are a clip, so they get
        ``linspace(min, max, f)`` whatever their place in the video (a later Direct clip, a Gen-L-Video
        window or a phased segment is guided like a stock clip). Under FreeNoise's windowed attention a
        call spans many windows; each frame then gets the ramp values of the windows it is in, fused with
        the attention's triangular weights. An explicit per-frame guidance tensor is indexed by frame."""
        if self.guidance is not None:
            return self.guidance[start:stop]
        lo, hi = self.guidance_range
        f = stop - start
        win = self._guidance_windows
        if win is None or f <= win[0]:
            return torch.linspace(lo, hi, f)

        window, stride = win
        weights = triangular_weights(window)
        ramp = torch.linspace(lo, hi, window)
        total, weight = torch.zeros(f), torch.zeros(f)
        for a, b in sliding_windows(f, window, stride):
            total[a:b] += weights[: b - a] * ramp[: b - a]
            weight[a:b] += weights[: b - a]
        return total / weight

    @property
    def batch_size(self) -> int:
        return int(self.image_latents.shape[0])

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.out_channels)

    @property
    def latent_size(self) -> tuple[int, int]:
        return int(self.image_latents.shape[-2]), int(self.image_latents.shape[-1])

    @property
    def clip_frames(self) -> int:
        """The UNet's native clip length (14 for img2vid, 25 for img2vid-xt)."""
        return int(self.unet.config.num_frames)

    @property
    def device(self) -> torch.device:
        return self.image_latents.device

    @property
    def dtype(self) -> torch.dtype:
        return self.image_embeddings.dtype

    def latent_shape(self, frames: int) -> tuple[int, int, int, int, int]:
        return (self.batch_size, frames, self.latent_channels, *self.latent_size)

    def set_schedule(self, steps: int) -> torch.Tensor:
        """Karras sigmas for ``steps`` steps (``steps + 1`` values ending at 0, float32 on the CPU as the
        scheduler keeps them) and :attr:`init_noise_sigma`, the factor for the initial unit noise."""
        self.scheduler.set_timesteps(steps, device=self.device)
        self.sigmas = self.scheduler.sigmas.clone()
        self.init_noise_sigma = self.scheduler.init_noise_sigma
        return self.sigmas

    def reset_counters(self) -> None:
        self.unet_calls = 0
        self.frame_evaluations = 0

    @torch.no_grad()
    def encode_condition_image(
        self, pixels: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Pixels ``[B, 3, H, W]`` in [-1, 1] -> conditioning image latent ``[B, C, h, w]`` for ``image=``:
        noise-augmented with ``noise_aug_strength`` and encoded (mode, unscaled) exactly as SVD does."""
        # lazy: diffusers is an optional extra, imported only on this path
        from diffusers.utils.torch_utils import randn_tensor

        if self.vae is None:
            raise RuntimeError("this denoiser was built without a VAE")
        noise = randn_tensor(
            pixels.shape, generator=generator or self.generator, device=pixels.device, dtype=pixels.dtype
        )
        aug = pixels + self.noise_aug_strength * noise
        upcast = self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False)
        vae_dtype = torch.float32 if upcast else self.vae.dtype
        if upcast:
            self.vae.to(dtype=torch.float32)
        latents = self.vae.encode(aug.to(device=self.device, dtype=vae_dtype)).latent_dist.mode()
        if upcast:
            self.vae.to(dtype=torch.float16)
        return latents.to(self.dtype)

    @torch.no_grad()
    def encode_condition_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, 3, H, W]`` in [-1, 1] -> CLIP image embedding ``[B, 1, D]`` for ``image_embeds=``."""
        if self._image_encoder_fn is None:
            raise RuntimeError("this denoiser was built without an image encoder")
        return self._image_encoder_fn(pixels)

    # ---- the call -------------------------------------------------------------------------------

    def _window(self, frames: slice | None, f: int) -> tuple[int, int]:
        start = 0 if frames is None or frames.start is None else int(frames.start)
        stop = start + f if frames is None or frames.stop is None else int(frames.stop)
        if frames is not None and frames.step not in (None, 1):
            raise ValueError("frames must be a contiguous slice")
        if stop - start != f or start < 0 or stop > self.num_frames:
            raise ValueError(
                f"frames {start}:{stop} do not fit x's {f} frames in a {self.num_frames}-frame video"
            )
        return start, stop

    def reference(self, start: int, stop: int) -> torch.Tensor | None:
        """The motion reference of frames ``start:stop``: latents ``[B, f, C, h, w]`` (float32, scaled) of
        the input image carried along the motion field, or None without a field. For a warped-conditioning
        model these are its conditioning latents (for a condition-residual one exactly the r it denoises
        relative to); for any other model the warped frames encoded without noise augmentation
        (``motion_frames``), which it never sees. Samplers use it to carry a state from one window to
        another along the motion (``sample_phased``)."""
        source = self.frame_latents if self.frame_latents is not None else self.motion_frames
        if source is None:
            return None
        return source.window(start, stop).to(self.device).float() * self.latent_scale

    def _condition_latents(self, start: int, stop: int, image: torch.Tensor | None = None) -> torch.Tensor:
        """The conditional branch's image latents per frame ``[B, f, C, h, w]`` (unscaled): ``image``
        repeated when given (``[B, C, h, w]``; a per-frame ``[B, >= f, C, h, w]`` override is used from
        its first frame on), else the warped frames of the window, else SVD's one image latent repeated."""
        if image is not None and image.ndim == 5:
            return image[:, : stop - start].to(self.device, self.dtype)
        if image is None and self.frame_latents is not None:
            return self.frame_latents.window(start, stop).to(self.device, self.dtype)
        img = self.image_latents if image is None else image.to(self.device, self.dtype)
        return img.unsqueeze(1).expand(img.shape[0], stop - start, *img.shape[1:])

    def motion_features(self, start: int, stop: int) -> list[torch.Tensor] | None:
        """The motion encoder's features for frames ``start:stop`` (cached per window)."""
        if self.flows is None or self.motion_encoder is None:
            return None
        key = (start, stop)
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        feats = self.motion_encoder(self.flows[:, start:stop])
        feats = [t.to(self.dtype) for t in feats]
        if self.feature_cache_size > 0:
            self._features[key] = feats
            while len(self._features) > self.feature_cache_size:
                self._features.popitem(last=False)
        return feats

    @torch.no_grad()
    def __call__(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        frames: slice | None = None,
        image: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        **unused: Any,
    ) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"x must have shape [B, f, C, h, w], got {tuple(x.shape)}")
        b, f = x.shape[:2]
        start, stop = self._window(frames, f)
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        if sigma.device.type != "cpu" and self.device.type == "cpu":
            sigma = sigma.cpu()
        x = x.to(torch.float32)

        emb = self.image_embeddings if image_embeds is None else image_embeds.to(self.device, self.dtype)
        img = self._condition_latents(start, stop, image)
        ids = self.added_time_ids
        strength = self.strength
        feats = self.motion_features(start, stop)
        ref = img.float() * self.latent_scale if self.condition_residual else None
        latent_in = x if ref is None else x - ref
        if self.do_cfg:
            latent_in = torch.cat([latent_in] * 2)
            emb = torch.cat([torch.zeros_like(emb), emb])
            img = torch.cat([torch.zeros_like(img), img])
            ids = torch.cat([ids, ids])
            strength = None if strength is None else torch.cat([strength, strength])
            if feats is not None:
                feats = [t.unsqueeze(0).expand(2, *t.shape).flatten(0, 1) for t in feats]
        latent_in = self.parameterization.model_input(latent_in, sigma)
        model_in = torch.cat([latent_in.to(self.dtype), img], dim=2)
        t = self.parameterization.timestep(sigma).to(self.device)

        v = unet_forward(self.unet, self.motion_adapter, model_in, t, emb, ids, feats, strength)
        self.unet_calls += 1
        self.frame_evaluations += model_in.shape[0] * f

        if self.do_cfg:
            v_u, v_c = v.chunk(2)
            g = self.guidance_scales(start, stop).to(v.device, v.dtype).view(1, f, 1, 1, 1)
            v = v_u + g * (v_c - v_u)
        if ref is None:
            x0 = self.parameterization.denoised(x, v.float(), sigma)
        else:
            x0 = ref + self.parameterization.denoised(x - ref, v.float(), sigma)
        if self.still_mask is not None:
            m = self.still_mask.to(x0.device)
            x0 = x0 * (1 - m) + self.still_latents.to(x0.device, x0.dtype) * m
        return x0
