"""StillMotionPipeline: Stable Video Diffusion guided by motion fields and a motion strength (paper 3.1-3.3).

Components (diffusers layout, one subfolder each, safetensors only):

- ``vae``: SVD's AutoencoderKLTemporalDecoder, or the weightless
  :class:`~stillmotion.diffusion.autoencoder.SpaceToDepthAutoencoder` (any object with
  ``encode(x).latent_dist.mode()``, ``decode(z, num_frames=...).sample`` and ``config.scaling_factor``);
- ``image_encoder`` / ``feature_extractor``: SVD's CLIP vision model and its image processor;
- ``unet``: SVD's UNetSpatioTemporalConditionModel, unchanged (stock weights load as they are);
- ``scheduler``: SVD's EulerDiscreteScheduler (v-prediction, Karras sigmas);
- ``motion_encoder``: :class:`~stillmotion.diffusion.motion_encoder.MotionEncoder` (flows -> z_m);
- ``motion_adapter``: :class:`~stillmotion.diffusion.motion_adapter.MotionAdapter` (motion
  cross-attention, eq. 4, and the strength embedding, eq. 8; zero-initialised, hooked into the UNet);
- ``refiner`` (optional): the flow refinement model T, ``stillmotion.motion.refiner.FlowRefiner``;
- ``static_camera_lora/`` (optional folder): the rank-16 static-camera LoRA on the temporal layers.

The pipeline only orchestrates: :meth:`prepare` turns the inputs into a
:class:`~stillmotion.diffusion.prepared.Prepared` video holding a
:class:`~stillmotion.diffusion.denoiser.MotionDenoiser` (the project's sampler interface) and the fitted
inputs, a sampler from ``stillmotion.sampling`` integrates the denoiser, and :meth:`decode` turns latents
into frames in chunks.
``__call__`` does all three for one clip with the Euler sampler, which reproduces diffusers'
StableVideoDiffusionPipeline exactly while the new modules sit at their zero initialisation.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, StableVideoDiffusionPipeline
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    _resize_with_antialiasing,
)
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from PIL import Image

from stillmotion.diffusion import lora as lora_mod
from stillmotion.diffusion.denoiser import MotionDenoiser
from stillmotion.diffusion.motion_adapter import MotionAdapter
from stillmotion.diffusion.motion_encoder import MotionEncoder, normalize_flows
from stillmotion.diffusion.prepared import Prepared
from stillmotion.diffusion.preprocess import (
    check_size,
    default_size,
    fit_inputs,
    still_alpha,
)
from stillmotion.diffusion.warp_condition import WarpedCondition
from stillmotion.errors import MissingWeightsError, UserInputError
from stillmotion.io.atomic import atomic_path
from stillmotion.motion.strength import motion_strength
from stillmotion.progress import progress_bar
from stillmotion.sampling.base import sample_euler

logger = logging.getLogger("stillmotion.diffusion")

LORA_FOLDER = "static_camera_lora"
# Every component folder, in the order they are loaded and saved (the refiner is optional).
COMPONENTS = (
    "vae",
    "image_encoder",
    "unet",
    "scheduler",
    "feature_extractor",
    "motion_encoder",
    "motion_adapter",
    "refiner",
)


@dataclass
class StillMotionPipelineOutput(BaseOutput):
    """frames: float32 ``[B, F, H, W, 3]`` in [0, 1] (as diffusers' ``output_type="np"``) or latents."""

    frames: np.ndarray | torch.Tensor
    stats: dict = field(default_factory=dict)


def vae_downscale(vae) -> int:
    """The autoencoder's spatial downscale factor."""
    cfg = vae.config
    if getattr(cfg, "downscale_factor", None):
        return int(cfg.downscale_factor)
    return 2 ** (len(cfg.block_out_channels) - 1)


class StillMotionPipeline(DiffusionPipeline):
    """SVD + motion encoder + motion cross-attention + strength embedding (+ refiner T, camera LoRA)."""

    model_cpu_offload_seq = "image_encoder->unet->vae"
    # Small and called from inside the UNet's forward (hooks) or once per window: kept on the device.
    _exclude_from_cpu_offload = ["motion_encoder", "motion_adapter", "refiner"]
    _optional_components = ["refiner"]

    def __init__(
        self,
        vae,
        image_encoder,
        unet,
        scheduler,
        feature_extractor,
        motion_encoder,
        motion_adapter,
        refiner=None,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            image_encoder=image_encoder,
            unet=unet,
            scheduler=scheduler,
            feature_extractor=feature_extractor,
            motion_encoder=motion_encoder,
            motion_adapter=motion_adapter,
            refiner=refiner,
        )
        if motion_adapter is not None:
            if motion_encoder is not None and list(motion_adapter.config.motion_channels) != list(
                motion_encoder.config.block_out_channels
            ):
                raise MissingWeightsError(
                    "component 'motion_adapter' does not fit 'motion_encoder': feature widths "
                    f"{list(motion_adapter.config.motion_channels)} vs "
                    f"{list(motion_encoder.config.block_out_channels)}"
                )
            motion_adapter.attach(unet)

        self.vae_scale_factor = vae_downscale(vae)
        self.video_processor = VideoProcessor(do_resize=True, vae_scale_factor=self.vae_scale_factor)

    # ---- construction ---------------------------------------------------------------------------

    @classmethod
    def from_svd(
        cls,
        svd: Any,
        *,
        motion_encoder=None,
        motion_adapter=None,
        refiner=None,
        torch_dtype: torch.dtype | None = None,
        variant: str | None = None,
        encoder_channels: int = 64,
        seed: int = 0,
    ) -> StillMotionPipeline:
        """Build from stock SVD: a ``StableVideoDiffusionPipeline`` object, a local directory of one
        (stable-video-diffusion-img2vid / -xt layout) or a hub id present in the Hugging Face cache.

        New modules not given are created at their zero initialisation (motion encoder weights drawn
        with ``seed``), so the result behaves exactly like the stock pipeline until trained weights
        are loaded.
        """
        if not isinstance(svd, StableVideoDiffusionPipeline):
            where = _resolve_dir(svd)
            kwargs: dict[str, Any] = {"use_safetensors": True}
            if torch_dtype is not None:
                kwargs["torch_dtype"] = torch_dtype
            if variant is not None:
                kwargs["variant"] = variant
            try:
                svd = StableVideoDiffusionPipeline.from_pretrained(where, **kwargs)
            except (OSError, ValueError, RuntimeError) as exc:
                raise MissingWeightsError(
                    f"cannot load Stable Video Diffusion from {where}: {_short(exc)}"
                ) from exc
        unet = svd.unet
        if motion_encoder is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                motion_encoder = MotionEncoder.for_unet(unet, base_channels=encoder_channels)
        if motion_adapter is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)
                motion_adapter = MotionAdapter.from_unet(unet, motion_encoder)
        motion_encoder.to(device=unet.device, dtype=unet.dtype)
        motion_adapter.to(device=unet.device, dtype=unet.dtype)
        return cls(
            vae=svd.vae,
            image_encoder=svd.image_encoder,
            unet=unet,
            scheduler=svd.scheduler,
            feature_extractor=svd.feature_extractor,
            motion_encoder=motion_encoder,
            motion_adapter=motion_adapter,
            refiner=refiner,
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        torch_dtype: torch.dtype | None = None,
        variant: str | None = None,
        load_lora: bool = True,
        **unused: Any,
    ) -> StillMotionPipeline:
        """Load a folder written by :meth:`save_pretrained` (or a hub id in the HF cache).

        A stock SVD folder (``_class_name`` StableVideoDiffusionPipeline) is accepted too and goes
        through :meth:`from_svd`. Any component whose files are missing or do not match its config
        raises :class:`~stillmotion.errors.MissingWeightsError` naming the component.
        """
        root = Path(_resolve_dir(pretrained_model_name_or_path))
        index_file = root / "model_index.json"
        if not index_file.is_file():
            raise MissingWeightsError(f"{root} is not a pipeline folder: model_index.json is missing")
        index = json.loads(index_file.read_text())
        if index.get("_class_name") == "StableVideoDiffusionPipeline":
            return cls.from_svd(str(root), torch_dtype=torch_dtype, variant=variant)
        parts: dict[str, Any] = {}
        for name in COMPONENTS:
            entry = index.get(name)
            unlisted = entry is None or entry[0] is None
            if name == "refiner" and unlisted and (root / name / "config.json").is_file():
                entry = ["stillmotion.motion.refiner", "FlowRefiner"]  # T trained apart and dropped in
            if entry is None or entry[0] is None or entry[1] is None:
                if name == "refiner":
                    parts[name] = None
                    continue
                raise MissingWeightsError(f"component '{name}' is not listed in {index_file}")
            parts[name] = _load_component(root, name, entry[0], entry[1], torch_dtype, variant)
        pipe = cls(**parts)
        if load_lora and (root / LORA_FOLDER).is_dir():
            pipe.load_static_camera_lora(root / LORA_FOLDER)
        return pipe

    def save_pretrained(self, save_directory: str | os.PathLike, **unused: Any) -> None:
        """Write every component in diffusers' layout (safetensors only), atomically.

        The UNet is saved without LoRA layers; an unfused static-camera LoRA goes to
        ``static_camera_lora/`` beside it.
        """
        with atomic_path(save_directory, directory=True) as tmp:
            self.save_config(tmp)
            for name in COMPONENTS:
                comp = getattr(self, name, None)
                if comp is None:
                    continue
                target = Path(tmp) / name
                if name == "unet" and lora_mod.has_lora(comp):
                    lora_mod.save_unet_without_lora(comp, target)
                    lora_mod.save_lora(comp, Path(tmp) / LORA_FOLDER)
                elif hasattr(comp, "save_pretrained"):
                    try:
                        comp.save_pretrained(target, safe_serialization=True)
                    except TypeError:
                        comp.save_pretrained(target)
                else:
                    raise TypeError(f"component {name!r} ({type(comp).__name__}) cannot be saved")

    # ---- static-camera LoRA -----------------------------------------------------------------------

    def load_static_camera_lora(self, path: str | os.PathLike, scale: float = 1.0) -> None:
        """Load the rank-16 static-camera LoRA (temporal layers only) from a folder and set its scale."""
        lora_mod.load_lora(self.unet, path)
        lora_mod.set_lora_scale(self.unet, scale)

    def set_lora_scale(self, scale: float) -> None:
        lora_mod.set_lora_scale(self.unet, scale)

    def unload_lora(self) -> None:
        lora_mod.unload_lora(self.unet)

    def fuse_lora(self) -> None:
        lora_mod.fuse_lora(self.unet)

    # ---- what training and samplers reach for -----------------------------------------------------

    def motion_parameters(self) -> list[torch.nn.Parameter]:
        """Trainable parameters of the new motion modules (encoder + adapter)."""
        return list(self.motion_encoder.parameters()) + list(self.motion_adapter.parameters())

    @property
    def motion_modules_trained(self) -> bool:
        """Whether the motion encoder and adapter change the output (False: zero-initialised, e.g. stock
        SVD or a model trained without motion input; the arrows then steer it only with warp guidance)."""
        return self.motion_adapter is not None and self.motion_adapter.is_trained()

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this: VAE factor x the UNet's downsampling factor."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def default_size(self, width: int, height: int) -> tuple[int, int]:
        """The size an input of (width, height) is brought to when none is asked for: the longer side
        4/3 of the UNet's native sample size (1024 for SVD), the aspect ratio kept."""
        long_side = int(round(self.unet.config.sample_size * self.vae_scale_factor * 4 / 3))
        return default_size(width, height, long_side, self.size_multiple)

    @torch.no_grad()
    def encode_image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, 3, H, W]`` in [-1, 1] -> CLIP image embedding ``[B, 1, D]``, exactly SVD's path
        (antialiased resize to 224, CLIP normalisation)."""
        device = self._execution_device
        dtype = next(self.image_encoder.parameters()).dtype
        image = _resize_with_antialiasing(pixels.float().cpu(), (224, 224))
        image = (image + 1.0) / 2.0
        image = self.feature_extractor(
            images=image,
            do_normalize=True,
            do_center_crop=False,
            do_resize=False,
            do_rescale=False,
            return_tensors="pt",
        ).pixel_values
        return self.image_encoder(image.to(device=device, dtype=dtype)).image_embeds.unsqueeze(1)

    @torch.no_grad()
    def encode_latents(self, pixels: torch.Tensor, mode: bool = True) -> torch.Tensor:
        """Pixels ``[N, 3, H, W]`` in [-1, 1] -> unscaled VAE latents ``[N, C, h, w]`` (distribution mode)."""
        upcast = self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False)
        if upcast:
            self.vae.to(dtype=torch.float32)
        dist = self.vae.encode(pixels.to(self._execution_device, torch.float32 if upcast else self.vae.dtype))
        latents = dist.latent_dist.mode() if mode else dist.latent_dist.sample()
        if upcast:
            self.vae.to(dtype=torch.float16)
        return latents

    def encode_flows(self, flows: torch.Tensor, frame_size: tuple[int, int], latent_size: tuple[int, int]):
        """Pixel flows ``[B, F, 2, H, W]`` (px/frame of a ``frame_size`` frame) -> motion features."""
        size = self.motion_encoder.input_size(latent_size)
        x = normalize_flows(flows, frame_size, size).to(self.motion_encoder.device, self.motion_encoder.dtype)
        return self.motion_encoder(x)

    # ---- inference --------------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(
        self,
        image: np.ndarray | Any,
        motion: np.ndarray | None = None,
        *,
        mask: np.ndarray | None = None,
        num_frames: int | None = None,
        width: int | None = None,
        height: int | None = None,
        strength: float | None = None,
        refine: bool = False,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        min_guidance_scale: float = 1.0,
        max_guidance_scale: float = 3.0,
        guidance: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        feather: int | None = None,
    ) -> Prepared:
        """Inputs -> a :class:`~stillmotion.diffusion.prepared.Prepared` video of ``num_frames`` frames (any
        length): its :class:`MotionDenoiser` and the fitted inputs that :meth:`decode` reads.

        image: uint8 (H, W, 3) RGB (or a PIL image) of any size; motion: float32 (H, W, 2) per-frame
        field in the image's pixels (repeated for every frame) or (N, H, W, 2) / (N-1, H, W, 2) per
        frame; mask: bool (H, W), True where motion is allowed (None: everything may move).
        All three are resized and center-cropped to ``width`` x ``height`` (default
        :meth:`default_size`). ``refine`` runs the refinement model T on a single field when the
        pipeline has one (a notice is logged and the field used as is otherwise). ``strength``: the
        global motion strength M_s (eq. 8, px/frame at 512 px); default: M_s of the final field, or
        none without motion (set ``denoiser.strength = None`` to drop the term). ``guidance``: per-frame
        guidance scales ``[num_frames]`` of the whole video; default SVD's linear rise from min to max over
        every clip (window, segment) the UNet is called on.

        The generator draws the image's noise augmentation here, as SVD does before the initial noise.
        """
        # 1. Check the inputs and fit image, mask and field to the model's size (refined by T if asked).
        image = _as_uint8_rgb(image)
        num_frames = int(num_frames or self.unet.config.num_frames)
        if num_frames < 1:
            raise UserInputError(f"num_frames must be >= 1, got {num_frames}")
        if width is None or height is None:
            dw, dh = self.default_size(image.shape[1], image.shape[0])
            width, height = width or dw, height or dh
        check_size(width, height, self.size_multiple)
        image, mask_fit, field = fit_inputs(image, mask, motion, width, height)
        if field is not None and refine:
            field = self._refine(field, image, mask_fit)

        # 2. Encode the image exactly as SVD: CLIP embedding, then the noise-augmented image latent.
        pixels, embeds, image_latents = self._encode_image(image, width, height, noise_aug_strength,
                                                           generator)  # fmt: skip

        # 3. Added time ids (fps, motion bucket, noise augmentation) and the guidance scales.
        ids = self._get_add_time_ids(fps, motion_bucket_id, noise_aug_strength, embeds.dtype)
        if guidance is None:  # SVD's ramp, per clip the UNet sees (MotionDenoiser.guidance_scales)
            guidance = (float(min_guidance_scale), float(max_guidance_scale))
        else:
            guidance = torch.as_tensor(guidance, dtype=torch.float32).to(self._execution_device)

        # 4. Encode the motion: the field per frame, the motion encoder's input and the strength M_s.
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        motion_on, field, flows, strength, s_tensor = self._encode_motion(
            field, strength, num_frames, (height, width), latent_size
        )

        # 5. The still region: the clean image latent the denoiser holds there, the pixels pasted after.
        still_mask, still_latents, alpha = self._prepare_still_region(pixels, mask_fit, latent_size, feather)

        # 6. Per-frame conditioning along the field: the warped image (a warped-conditioning model) or the
        #    motion reference long videos carry their segments along.
        frame_latents, motion_frames = self._prepare_frame_conditions(
            image, field, mask_fit, num_frames, noise_aug_strength, generator, embeds.dtype
        )

        # 7. The denoiser, and the facts about the frames beside it.
        den = MotionDenoiser(
            unet=self.unet,
            scheduler=self.scheduler,
            image_embeddings=embeds,
            image_latents=image_latents,
            added_time_ids=ids,
            guidance=guidance,
            num_frames=num_frames,
            motion_encoder=self.motion_encoder if motion_on else None,
            motion_adapter=self.motion_adapter if motion_on else None,
            flows=flows,
            strength=s_tensor,
            still_mask=still_mask,
            still_latents=still_latents,
            vae=self.vae,
            generator=generator,
            noise_aug_strength=noise_aug_strength,
            image_encoder_fn=self.encode_image_embeddings,
            frame_latents=frame_latents,
            motion_frames=motion_frames,
            condition_residual=bool(getattr(self.motion_adapter.config, "condition_residual", False))
            if self.motion_adapter is not None else False,
            latent_scale=float(self.vae.config.scaling_factor),
        )
        return Prepared(
            denoiser=den,
            image=image,
            width=width,
            height=height,
            video_frames=num_frames,
            field=field,
            mask=mask_fit,
            alpha=alpha,
            strength=None if strength is None else float(strength),
            motion_trained=motion_on,
        )

    def _encode_image(
        self,
        image: np.ndarray,
        width: int,
        height: int,
        noise_aug_strength: float,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fitted image -> (pixels ``[1, 3, H, W]`` in [-1, 1], CLIP embedding, noise-augmented latent);
        draws the augmentation noise from ``generator``."""
        device = self._execution_device
        pixels = self.video_processor.preprocess(_to_pil(image), height=height, width=width).to(device)
        embeds = self.encode_image_embeddings(pixels)
        noise = randn_tensor(pixels.shape, generator=generator, device=device, dtype=pixels.dtype)
        image_latents = self.encode_latents(pixels + noise_aug_strength * noise).to(embeds.dtype)
        return pixels, embeds, image_latents

    def _get_add_time_ids(
        self, fps: int, motion_bucket_id: int, noise_aug_strength: float, dtype: torch.dtype
    ) -> torch.Tensor:
        """SVD's added time ids ``[[fps - 1, motion bucket, noise augmentation]]``."""
        expected = self.unet.add_embedding.linear_1.in_features
        if expected != 3 * self.unet.config.addition_time_embed_dim:
            raise MissingWeightsError(
                f"component 'unet' expects {expected // self.unet.config.addition_time_embed_dim} added time "
                "ids; StillMotion uses SVD's 3 (fps, motion bucket, noise augmentation)"
            )
        return torch.tensor(
            [[fps - 1, motion_bucket_id, noise_aug_strength]], dtype=dtype, device=self._execution_device
        )

    def _encode_motion(
        self,
        field: np.ndarray | None,
        strength: float | None,
        num_frames: int,
        frame_size: tuple[int, int],
        latent_size: tuple[int, int],
    ) -> tuple[bool, np.ndarray | None, torch.Tensor | None, float | None, torch.Tensor | None]:
        """(motion modules on, the field with one entry per frame, the motion encoder's flows, M_s, M_s as
        the denoiser's tensor). Untrained (zero) motion modules add exactly nothing: they are skipped
        entirely (no motion encoder, no hooks in the UNet's forward), as with stock SVD from from_svd."""
        height, width = frame_size
        device = self._execution_device
        motion_on = self.motion_modules_trained
        if not motion_on and self.motion_adapter is not None:
            self.motion_adapter.detach()  # unet_forward attaches it again for a trained adapter
        flows = s_tensor = None
        if field is not None and field.ndim == 4:
            n = field.shape[0]
            if n == num_frames - 1:
                field = np.concatenate([field, field[-1:]])
            elif n != num_frames:
                raise UserInputError(f"motion holds {n} fields, expected {num_frames} or {num_frames - 1}")
        if field is not None and motion_on:
            if field.ndim == 3:
                flows = (
                    torch.from_numpy(field)
                    .permute(2, 0, 1)[None, None]
                    .expand(1, num_frames, 2, height, width)
                )
            else:
                flows = torch.from_numpy(np.ascontiguousarray(field)).permute(0, 3, 1, 2)[None]
            flows = normalize_flows(flows, frame_size, self.motion_encoder.input_size(latent_size))
            flows = flows.to(device=device, dtype=self.motion_encoder.dtype)
        if field is not None and strength is None:
            strength = motion_strength(field)
        if strength is not None and motion_on:
            s_tensor = torch.tensor([float(strength)], dtype=torch.float32, device=device)
        return motion_on, field, flows, strength, s_tensor

    def _prepare_still_region(
        self, pixels: torch.Tensor, mask: np.ndarray | None, latent_size: tuple[int, int], feather: int | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, np.ndarray | None]:
        """(still mask on the latent grid, the clean scaled image latent, the paste weights), all None when
        everything may move."""
        if mask is None or mask.all():
            return None, None, None
        move = torch.from_numpy(mask.astype(np.float32))[None, None]
        still_mask = (1.0 - F.interpolate(move, size=latent_size, mode="area"))[None]
        still_mask = still_mask.to(self._execution_device)
        clean = self.encode_latents(pixels).to(torch.float32) * self.vae.config.scaling_factor
        alpha = still_alpha(mask, self.vae_scale_factor if feather is None else feather)
        return still_mask, clean[:, None], alpha

    def _prepare_frame_conditions(
        self,
        image: np.ndarray,
        field: np.ndarray | None,
        mask: np.ndarray | None,
        num_frames: int,
        noise_aug_strength: float,
        generator: torch.Generator | None,
        dtype: torch.dtype,
    ) -> tuple[WarpedCondition | None, WarpedCondition | None]:
        """(warped conditioning latents of a warped-conditioning model, the motion reference), at most one
        of them set, both made per window on demand."""
        if field is None:
            return None, None
        if getattr(self.motion_adapter.config, "warped_image_condition", False):
            return self._warped_condition(image, field, mask, num_frames, noise_aug_strength, generator,
                                          dtype), None  # fmt: skip
        # the motion reference long videos carry their segments along (MotionDenoiser.reference); rendered
        # only when asked, and drawing nothing from ``generator``
        device = self._execution_device

        def encode(px: torch.Tensor) -> torch.Tensor:
            return self.encode_latents(px.to(device)).to(dtype)

        return None, WarpedCondition(image, field, num_frames, mask, encode, noise_aug_strength=0.0, seed=0)

    def _warped_condition(self, image, field, mask, num_frames, noise_aug_strength, generator, dtype):
        """The image warped along ``field``, as per-frame conditioning latents made per window
        (:class:`~stillmotion.diffusion.warp_condition.WarpedCondition`), augmented and encoded as SVD's
        image latent."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        device = self._execution_device
        return WarpedCondition(
            image, field, num_frames, mask, lambda px: self.encode_latents(px.to(device)).to(dtype),
            noise_aug_strength=noise_aug_strength, seed=seed,
        )  # fmt: skip

    def _refine(self, field: np.ndarray, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        if field.ndim != 3:
            logger.warning("refine: a per-frame flow sequence is used as is (T refines single arrow fields)")
            return field
        if self.refiner is None:
            logger.warning(
                "refine: this model has no refinement model T (no refiner/ weights); "
                "using the dense arrow field as is"
            )
            return field
        return self.refiner.refine(field, image, mask)

    def initial_latents(
        self,
        den: MotionDenoiser,
        num_frames: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unit noise ``[B, F, C, h, w]`` times the scheduler's init_noise_sigma (call set_schedule first)."""
        if den.init_noise_sigma is None:
            raise RuntimeError("call denoiser.set_schedule(steps) before initial_latents")
        shape = den.latent_shape(num_frames or den.num_frames)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=den.device, dtype=den.dtype)
        return latents.to(den.device) * den.init_noise_sigma

    @torch.no_grad()
    def decode(
        self,
        prepared: Prepared,
        latents: torch.Tensor,
        decode_chunk_size: int | None = None,
        paste: bool = True,
    ) -> Iterator[np.ndarray]:
        """Scaled latents ``[B, F, C, h, w]`` -> float32 frames ``[1, n, H, W, 3]`` in [0, 1], yielded
        ``decode_chunk_size`` frames at a time (the temporal decoder mixes frames only within a chunk).
        Chunks run over the flattened (batch, frame) sequence as in SVD; the project uses B = 1.
        Where the mask says still, the input pixels are pasted (feathered over a few pixels)."""
        f = latents.shape[1]
        chunk = decode_chunk_size or f
        flat = latents.flatten(0, 1)
        flat = 1 / self.vae.config.scaling_factor * flat
        alpha = prepared.alpha if paste else None
        if alpha is not None:
            ref = torch.from_numpy(prepared.image.astype(np.float32) / 255.0)
            a = torch.from_numpy(alpha)[..., None]
        for i in range(0, flat.shape[0], chunk):
            part = flat[i : i + chunk].to(self.vae.dtype)
            kwargs = {"num_frames": part.shape[0]} if _accepts_num_frames(self.vae) else {}
            frames = self.vae.decode(part, **kwargs).sample.float()
            frames = (frames / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1)
            if alpha is not None:
                frames = frames * (1 - a) + ref * a
            yield frames.numpy()[None]

    @torch.no_grad()
    def __call__(
        self,
        image: np.ndarray | Any,
        motion: np.ndarray | None = None,
        *,
        mask: np.ndarray | None = None,
        num_frames: int | None = None,
        num_inference_steps: int = 25,
        width: int | None = None,
        height: int | None = None,
        strength: float | None = None,
        refine: bool = False,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        min_guidance_scale: float = 1.0,
        max_guidance_scale: float = 3.0,
        decode_chunk_size: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        progress: bool = False,
    ) -> StillMotionPipelineOutput:
        """One clip (at most a few times the UNet's clip length) with the Euler sampler; see :meth:`prepare`.

        Returns frames float32 ``[B, F, H, W, 3]`` in [0, 1] (``output_type="np"``) or the latents
        (``"latent"``), and ``stats`` (steps, unet_calls, frame_evaluations).
        """
        prepared = self.prepare(
            image,
            motion,
            mask=mask,
            num_frames=num_frames,
            width=width,
            height=height,
            strength=strength,
            refine=refine,
            fps=fps,
            motion_bucket_id=motion_bucket_id,
            noise_aug_strength=noise_aug_strength,
            min_guidance_scale=min_guidance_scale,
            max_guidance_scale=max_guidance_scale,
            generator=generator,
        )
        den = prepared.denoiser
        sigmas = den.set_schedule(num_inference_steps)
        x = self.initial_latents(den, generator=generator, latents=latents)
        with progress_bar(total=num_inference_steps, desc="denoising", enabled=progress, unit="step") as bar:
            x = sample_euler(den, x, sigmas, callback=lambda i, x_, x0: bar.update(1))
        stats = {
            "steps": num_inference_steps,
            "unet_calls": den.unet_calls,
            "frame_evaluations": den.frame_evaluations,
        }
        if output_type == "latent":
            frames: Any = x
        else:
            frames = np.concatenate(list(self.decode(prepared, x, decode_chunk_size)), axis=1)
        self.maybe_free_model_hooks()
        return StillMotionPipelineOutput(frames=frames, stats=stats)


def _accepts_num_frames(vae) -> bool:
    fn = vae._orig_mod.forward if hasattr(vae, "_orig_mod") else vae.forward
    return "num_frames" in inspect.signature(fn).parameters


def _as_uint8_rgb(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        image = np.asarray(image.convert("RGB"))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UserInputError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    return image


def _to_pil(image: np.ndarray):
    return Image.fromarray(image)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def _resolve_dir(name_or_path: str | os.PathLike) -> str:
    """A local folder as is; otherwise a hub id looked up in the Hugging Face cache only (no download)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    text = str(name_or_path)
    if text.count("/") != 1 or path.exists():
        raise MissingWeightsError(f"model {text!r}: no such folder (and not a hub id 'owner/name')")
    try:
        # lazy, guarded: a part missing from this installation is reported, not an import error
        from huggingface_hub import snapshot_download

        return snapshot_download(text, local_files_only=True)
    except Exception as exc:
        raise MissingWeightsError(
            f"model {text!r} is neither a local folder nor in the Hugging Face cache (this machine does not "
            f"download weights; fetch them elsewhere and pass the folder): {_short(exc)}"
        ) from exc


def _load_component(root: Path, name: str, library: str, class_name: str, torch_dtype, variant):
    folder = root / name
    if not folder.is_dir():
        raise MissingWeightsError(f"component '{name}': folder {folder} is missing")
    try:
        cls = getattr(importlib.import_module(library), class_name)
    except (ImportError, AttributeError) as exc:
        raise MissingWeightsError(f"component '{name}': unknown class {library}.{class_name}") from exc
    try:
        if library == "transformers":
            if (
                hasattr(cls, "from_pretrained")
                and "Processor" not in class_name
                and "Extractor" not in class_name
            ):
                kwargs: dict[str, Any] = {"use_safetensors": True}
                if torch_dtype is not None:
                    kwargs["dtype"] = torch_dtype
                return cls.from_pretrained(folder, **kwargs)
            return cls.from_pretrained(folder)
        if name == "scheduler" or not hasattr(cls, "load_config") or "Scheduler" in class_name:
            return cls.from_pretrained(root, subfolder=name)
        kwargs = {"use_safetensors": True, "low_cpu_mem_usage": False}
        if torch_dtype is not None:
            kwargs["torch_dtype"] = torch_dtype
        if variant is not None:
            kwargs["variant"] = variant
        return cls.from_pretrained(root, subfolder=name, **kwargs)
    except MissingWeightsError:
        raise
    except Exception as exc:  # the loaders raise OSError/ValueError/RuntimeError/KeyError variously
        raise MissingWeightsError(
            f"component '{name}' in {folder}: weights are missing or do not match its config ({_short(exc)})"
        ) from exc
