"""Wan 2.1 / 2.2 image-to-video as a backbone: diffusers' Wan components behind the sampler interface.

``WanBackbone`` holds diffusers' pieces of a Wan image-to-video model (``WanTransformer3DModel``, a second
expert ``transformer_2`` for Wan 2.2 A14B, ``AutoencoderKLWan``, the UMT5 text encoder and its tokenizer,
the CLIP image encoder of Wan 2.1) and turns an image plus a prompt into a :class:`WanDenoiser`, the
project's ``denoiser(x, sigma, frames=..., image=...) -> x0`` over flow matching
(``sampling.parameterization.FlowMatching``). Every sampler in ``stillmotion.sampling`` runs on it.

Layouts and units. The samplers' latents are ``[B, f, C, h, w]`` float32, in the transformer's space (VAE
latents normalised with the VAE's ``latents_mean`` / ``latents_std``), ``sigma`` is the flow time t in
[0, 1]. Frames are *latent* frames: Wan's VAE compresses time by 4, so a clip of F video frames has
``(F - 1) // 4 + 1`` latent frames (81 -> 21); the first latent frame decodes to one video frame, each
later one to four. A user asks for video frames; :func:`latent_frames` gives the latent frames that cover
them and the decoder cuts the surplus (80 frames: 21 latent frames, 81 decoded, 80 kept).

The computation per denoiser call is diffusers' ``WanImageToVideoPipeline`` step:

- Wan 2.1 / 2.2 A14B: the transformer sees ``cat([x, condition])`` on channels, where ``condition`` is a
  4-channel first-frame mask (1 on the video frames known: the first) and the VAE latent (mode,
  normalised) of the video ``[image, 0, 0, ...]``; Wan 2.1 also gets the CLIP image encoder's penultimate
  hidden states. The timestep is ``1000 * t``. Classifier-free guidance runs the conditional and the
  negative-prompt branch as two calls (as diffusers does), ``v = v_u + g * (v_c - v_u)``.
- Wan 2.2 A14B has two experts: ``transformer`` for timesteps >= ``boundary_ratio * 1000`` (high noise),
  ``transformer_2`` below, each with its own guidance scale.
- Wan 2.2 TI2V-5B (``expand_timesteps``): the first latent frame of the input is replaced by the image's
  latent and gets timestep 0 per token; the denoised estimate holds that latent on frame 0, so frame 0 of
  every sampler's result is the image's latent (diffusers pastes it at the end instead: same output).
- ``x0 = x_t - t * v`` (FlowMatching.denoised). The sampler is the one the model's scheduler config
  names (:func:`scheduler_solver`, the denoiser's ``solver``): with FlowMatchEulerDiscreteScheduler the
  Euler steps of ``sampling.base`` reproduce its steps; with UniPCMultistepScheduler (what the released
  checkpoints ship) ``sampling.unipc.UniPC`` reproduces its predictor-corrector steps. Either way the
  levels and network timesteps are the scheduler's own for the model's flow shift (``set_schedule``).

Windows (long videos). A window ``frames=slice(a, b)`` is one clip to the transformer (its rotary position
embedding restarts at 0) conditioned like a clip: the image as its first frame, which is the same rule
SVD's denoiser follows (the image latent on every window). ``image=`` replaces the conditioning, with a
tensor from :meth:`WanDenoiser.encode_condition_image` (the ``direct`` baseline's previous last frame).

Counters: ``unet_calls`` (denoiser calls, the unit the long-video cost formulas count),
``transformer_calls`` (forwards: two per call with guidance) and ``frame_evaluations`` (latent frames
through the transformer, both guidance branches counted).
"""

from __future__ import annotations

import contextlib
import html
import importlib
import json
import logging
import math
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify
from diffusers.utils.torch_utils import get_module_execution_device, randn_tensor
from diffusers.video_processor import VideoProcessor

from stillmotion.diffusion.pipeline import _as_uint8_rgb, _resolve_dir, _short, _to_pil
from stillmotion.diffusion.prepared import Prepared
from stillmotion.diffusion.preprocess import check_size, fit_inputs, still_alpha
from stillmotion.diffusion.warp_condition import REFERENCE_SUPERSAMPLE, WarpedCondition
from stillmotion.errors import MissingWeightsError, UserInputError
from stillmotion.sampling.base import EULER, Euler
from stillmotion.sampling.parameterization import FlowMatching
from stillmotion.sampling.unipc import UNIPC_VARIANTS, UniPC

logger = logging.getLogger("stillmotion.wan")

DEFAULT_PROMPT = (
    "The photo comes to life with natural, smooth motion along the way it is drawn; the camera stays "
    "still, details and lighting stay as in the photo."
)
DEFAULT_NEGATIVE_PROMPT = (
    "static, frozen frame, still picture, flicker, jitter, morphing, distorted, deformed, blurry, "
    "low quality, jpeg artifacts, overexposed, subtitles, text, watermark, extra limbs, camera shake"
)
# Video frames of one clip the models were trained on (all Wan 2.x image-to-video models: 81).
CLIP_VIDEO_FRAMES = 81
WAN_PIPELINE_CLASSES = ("WanImageToVideoPipeline", "WanPipeline")


def latent_frames(video_frames: int, temporal: int = 4) -> int:
    """Latent frames covering ``video_frames`` (>= 1): ``ceil((F - 1) / 4) + 1``, = (F - 1) // 4 + 1 when
    F - 1 is a multiple of 4."""
    if video_frames < 1:
        raise UserInputError(f"--frames must be >= 1, got {video_frames}")
    return -(-(video_frames - 1) // temporal) + 1


def decoded_frames(latent: int, temporal: int = 4) -> int:
    """Video frames ``latent`` latent frames decode to: 1 + 4 (n - 1)."""
    return 1 + temporal * (latent - 1)


def _prompt_clean(text: str) -> str:
    # diffusers' Wan prompt cleaning: ftfy when installed, HTML entities, collapsed whitespace
    try:
        # lazy, guarded: a part missing from this installation is reported, not an import error
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class WanVariant:
    """What a Wan folder is, from model_index.json and the transformer's config."""

    name: str  # wan2.1-i2v | wan2.2-i2v-a14b | wan2.2-ti2v-5b
    two_experts: bool
    expand_timesteps: bool
    image_encoder: bool
    area: int  # pixels of the model's resolution buckets (480P: 832 x 480, 720P: 1280 x 720, 5B: 1280 x 704)


def is_wan_index(index: dict) -> bool:
    return index.get("_class_name") in WAN_PIPELINE_CLASSES


def read_model_index(folder: str | os.PathLike) -> dict:
    path = Path(folder) / "model_index.json"
    if not path.is_file():
        raise MissingWeightsError(f"model {folder}: model_index.json is missing (not a diffusers folder)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(f"model {folder}: model_index.json cannot be read ({exc})") from exc


def wan_model_dir(model: str | os.PathLike | None) -> Path | None:
    """The folder of a Wan model (a local folder or a hub id in the Hugging Face cache) when ``model`` is
    one (model_index.json names a Wan pipeline), else None (SVD / StillMotion models, unknown names)."""
    if model is None:
        return None
    try:
        root = Path(_resolve_dir(model))
        index = json.loads((root / "model_index.json").read_text())
    except (MissingWeightsError, OSError, ValueError):
        return None
    return root if isinstance(index, dict) and is_wan_index(index) else None


def _present(index: dict, name: str) -> bool:
    entry = index.get(name)
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None and entry[1] is not None


class WanBackbone(DiffusionPipeline):
    """diffusers' Wan image-to-video components; :meth:`prepare` gives the denoiser (see the module doc)."""

    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->transformer_2->vae"
    _optional_components = ["transformer", "transformer_2", "image_encoder", "image_processor"]

    def __init__(
        self,
        tokenizer,
        text_encoder,
        vae,
        scheduler,
        image_processor=None,
        image_encoder=None,
        transformer=None,
        transformer_2=None,
        boundary_ratio: float | None = None,
        expand_timesteps: bool = False,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=image_encoder,
            transformer=transformer, scheduler=scheduler, image_processor=image_processor,
            transformer_2=transformer_2,
        )  # fmt: skip
        self.register_to_config(boundary_ratio=boundary_ratio, expand_timesteps=expand_timesteps)

        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)
        self.bucket_area = 832 * 480
        self.source = ""

    # ---- loading --------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, name_or_path: str | os.PathLike, torch_dtype: torch.dtype | None = None, **unused: Any
    ) -> WanBackbone:
        """A Wan image-to-video folder (or cached hub id) in diffusers' layout; nothing is downloaded.

        Each missing or unloadable component is named in a :class:`MissingWeightsError`."""
        root = Path(_resolve_dir(name_or_path))
        index = read_model_index(root)
        if not is_wan_index(index):
            raise MissingWeightsError(
                f"model {name_or_path}: model_index.json names {index.get('_class_name')!r}, "
                "not a Wan pipeline"
            )
        boundary = index.get("boundary_ratio")
        expand = bool(index.get("expand_timesteps", False))
        required = ["tokenizer", "text_encoder", "vae", "scheduler", "transformer"]
        if boundary is not None:
            required.append("transformer_2")
        for name in required:
            if not _present(index, name):
                raise MissingWeightsError(
                    f"model {name_or_path}: component '{name}' is not listed in model_index.json"
                )
            if not (root / name).is_dir():
                raise MissingWeightsError(
                    f"model {name_or_path}: component '{name}': folder {root / name} is missing"
                )
        parts: dict[str, Any] = {}
        for name in (
            "scheduler",  # first: a scheduler the project cannot sample with is refused before weights load
            "tokenizer",
            "text_encoder",
            "vae",
            "transformer",
            "transformer_2",
            "image_encoder",
            "image_processor",
        ):
            if not _present(index, name):
                continue
            library, class_name = index[name]
            dtype = (
                torch_dtype
                if name in ("text_encoder", "transformer", "transformer_2", "image_encoder")
                else None
            )
            if name == "vae":
                dtype = torch.float32  # Wan's VAE runs in float32 (diffusers' examples do the same)
            parts[name] = _load_component(root, name, library, class_name, dtype)
            if name == "scheduler":
                scheduler_solver(parts[name], str(name_or_path))  # an unsupported sampler is named now
        transformer = parts["transformer"]
        if transformer.config.image_dim is not None:
            for name in ("image_encoder", "image_processor"):
                if name not in parts:
                    raise MissingWeightsError(
                        f"model {name_or_path}: component '{name}' is missing (the transformer takes "
                        "CLIP image "
                        "embeddings: Wan 2.1 image-to-video)"
                    )
        pipe = cls(**parts, boundary_ratio=boundary, expand_timesteps=expand)
        pipe.variant.check(pipe, str(name_or_path), index)
        pipe.bucket_area = _bucket_area(str(name_or_path), root, expand)
        pipe.source = str(name_or_path)
        return pipe

    # ---- facts ----------------------------------------------------------------------------------

    @property
    def vae_scale_factor_spatial(self) -> int:
        vae = getattr(self, "vae", None)
        return int(vae.config.scale_factor_spatial) if vae is not None else 8

    @property
    def vae_scale_factor_temporal(self) -> int:
        vae = getattr(self, "vae", None)
        return int(vae.config.scale_factor_temporal) if vae is not None else 4

    @property
    def main_transformer(self):
        return self.transformer if self.transformer is not None else self.transformer_2

    @property
    def variant(self) -> _VariantInfo:
        return _VariantInfo(self)

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this: the VAE's spatial factor x the patch size."""
        patch = self.main_transformer.config.patch_size
        return self.vae_scale_factor_spatial * int(max(patch[1], patch[2]))

    def default_size(self, width: int, height: int) -> tuple[int, int]:
        """The model's resolution bucket for this aspect ratio: at most ``bucket_area`` pixels, sides
        rounded down to multiples of :attr:`size_multiple` (Wan's and diffusers' rule; 480P: 832 x 464 for
        16:9, 832 x 480 for 832 x 480)."""
        m = self.size_multiple
        aspect = height / width
        h = int(round(math.sqrt(self.bucket_area * aspect)))
        w = int(round(math.sqrt(self.bucket_area / aspect)))
        shrink = min(1.0, self.max_side / max(w, h))
        return max(m, int(w * shrink) // m * m), max(m, int(h * shrink) // m * m)

    @property
    def max_side(self) -> int:
        """The longest side the transformer's rotary position table covers (pixels)."""
        tr = self.main_transformer
        return int(tr.config.rope_max_seq_len) * self.size_multiple

    @property
    def clip_latent_frames(self) -> int:
        return latent_frames(CLIP_VIDEO_FRAMES, self.vae_scale_factor_temporal)

    # ---- conditioning ---------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompt: str, max_sequence_length: int = 512) -> torch.Tensor:
        """UMT5 hidden states ``[1, max_sequence_length, D]``, zeros past the prompt's tokens."""
        inputs = self.tokenizer(
            [_prompt_clean(prompt)], padding="max_length", max_length=max_sequence_length, truncation=True,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )  # fmt: skip
        ids, mask = inputs.input_ids, inputs.attention_mask
        seq_len = int(mask.gt(0).sum(dim=1)[0])
        device = get_module_execution_device(self.text_encoder)
        hidden = self.text_encoder(ids.to(device), mask.to(device)).last_hidden_state
        hidden = hidden.to(device=self._execution_device, dtype=self.main_transformer.dtype)
        out = torch.zeros_like(hidden)
        out[:, :seq_len] = hidden[:, :seq_len]
        return out

    @torch.no_grad()
    def encode_image_embeds(self, image) -> torch.Tensor | None:
        """CLIP penultimate hidden states of a PIL image (Wan 2.1); None if the transformer takes none."""
        if self.main_transformer.config.image_dim is None:
            return None
        inputs = self.image_processor(images=image, return_tensors="pt").to(
            get_module_execution_device(self.image_encoder)
        )
        out = self.image_encoder(**inputs, output_hidden_states=True).hidden_states[-2]
        return out.to(self._execution_device, self.main_transformer.dtype)

    def _latent_norm(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(device, dtype)
        inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(device, dtype)
        return mean, inv_std

    @torch.no_grad()
    def encode_condition(self, pixels: torch.Tensor, num_latent: int) -> torch.Tensor:
        """Pixels ``[B, 3, H, W]`` in [-1, 1] -> the transformer's conditioning for a clip of ``num_latent``
        latent frames, Wan layout ``[B, C', n, h, w]``: mask (4) + latent of ``[image, 0, ...]`` (16), or for
        TI2V (expand_timesteps) the image's latent alone ``[B, z, 1, h, w]``."""
        b, _, height, width = pixels.shape
        device = self._execution_device
        t = self.vae_scale_factor_temporal
        image = pixels.unsqueeze(2)
        if self.config.expand_timesteps:
            video = image
        else:
            frames = decoded_frames(num_latent, t)
            video = torch.cat([image, image.new_zeros(b, image.shape[1], frames - 1, height, width)], dim=2)
        video = video.to(device=get_module_execution_device(self.vae), dtype=self.vae.dtype)
        latent = self.vae.encode(video).latent_dist.mode().to(device=device, dtype=torch.float32)
        mean, inv_std = self._latent_norm(device, torch.float32)
        latent = (latent - mean) * inv_std
        if self.config.expand_timesteps:
            return latent
        lh, lw = latent.shape[-2:]
        mask = torch.zeros(b, t, num_latent, lh, lw, device=device)
        mask[:, :, 0] = 1  # the first video frame is known: its four mask slots of latent frame 0
        return torch.cat([mask, latent], dim=1)

    # ---- the denoiser ---------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(
        self,
        image: np.ndarray | Any,
        motion: np.ndarray | None = None,
        *,
        mask: np.ndarray | None = None,
        num_frames: int = CLIP_VIDEO_FRAMES,
        width: int | None = None,
        height: int | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        guidance_scale: float = 5.0,
        guidance_scale_2: float | None = None,
        flow_shift: float | None = None,
        max_sequence_length: int = 512,
        clip_frames: int | None = None,
    ) -> Prepared:
        """An image (uint8 (H, W, 3) or PIL) -> a :class:`~stillmotion.diffusion.prepared.Prepared` video of
        ``num_frames`` video frames: its :class:`WanDenoiser` and the fitted inputs.

        The image is resized and center-cropped to ``width`` x ``height`` (default: the model's bucket,
        :meth:`default_size`). ``prompt`` defaults to :data:`DEFAULT_PROMPT`, ``negative_prompt`` to
        :data:`DEFAULT_NEGATIVE_PROMPT`; ``guidance_scale_2`` is the low-noise expert's (default: the same);
        ``flow_shift`` defaults to the scheduler's. ``clip_frames``: video frames of one window (81).

        ``motion`` (H, W, 2) px per video frame, or (N, H, W, 2) per frame step, and ``mask`` (bool (H, W),
        True where motion is allowed) are fitted with the image and kept in the result for warp-guided
        control (:meth:`warp_reference`). Where the mask says still, the denoised estimate is held to the
        photo's own latents (a still clip of it, encoded) and the photo's pixels are pasted after decoding,
        as the SVD pipeline does."""
        # 1. Check the inputs and fit image, mask and field to the model's size.
        image = _as_uint8_rgb(image)
        if width is None or height is None:
            dw, dh = self.default_size(image.shape[1], image.shape[0])
            width, height = width or dw, height or dh
        check_size(width, height, self.size_multiple)
        if max(width, height) > self.max_side:
            raise UserInputError(
                f"size {width}x{height} is too large for this model: its position table covers sides up to "
                f"{self.max_side} pixels"
            )
        if guidance_scale < 0 or (guidance_scale_2 is not None and guidance_scale_2 < 0):
            raise UserInputError(f"--guidance must be >= 0, got {guidance_scale}")
        image, mask_fit, field = fit_inputs(image, mask, motion, width, height)
        t = self.vae_scale_factor_temporal
        n_latent = latent_frames(int(num_frames), t)
        clip_latent = latent_frames(int(clip_frames or CLIP_VIDEO_FRAMES), t)

        # 2. Encode the prompt, and the negative prompt when classifier-free guidance runs.
        g2 = guidance_scale if guidance_scale_2 is None else guidance_scale_2
        do_cfg = guidance_scale > 1 or (self.config.boundary_ratio is not None and g2 > 1)
        prompt_embeds, negative_embeds = self._encode_prompts(prompt, negative_prompt, do_cfg,
                                                              max_sequence_length)  # fmt: skip

        # 3. Encode the image: CLIP hidden states (Wan 2.1) and the first-frame conditioning of one clip.
        pil = _to_pil(image)
        image_embeds = self.encode_image_embeds(pil)
        pixels = self.video_processor.preprocess(pil, height=height, width=width)
        pixels = pixels.to(self._execution_device, torch.float32)
        condition = self.encode_condition(pixels, min(n_latent, clip_latent))

        # 4. The denoiser.
        den = WanDenoiser(
            backbone=self,
            condition=condition,
            prompt_embeds=prompt_embeds,
            negative_embeds=negative_embeds,
            image_embeds=image_embeds,
            guidance_scale=guidance_scale,
            guidance_scale_2=g2,
            num_frames=n_latent,
            clip_frames=clip_latent,
            flow_shift=flow_shift,
        )

        # 5. The still region: held to the photo's latents in the denoiser, its pixels pasted after decoding.
        alpha = self._prepare_still_region(den, pixels, mask_fit, clip_latent)
        return Prepared(
            denoiser=den,
            image=image,
            width=width,
            height=height,
            video_frames=int(num_frames),
            field=field,
            mask=mask_fit,
            alpha=alpha,
        )

    def _encode_prompts(
        self, prompt: str | None, negative_prompt: str | None, do_cfg: bool, max_sequence_length: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prompt embeddings, negative prompt embeddings or None without guidance), the defaults for None."""
        prompt = DEFAULT_PROMPT if prompt is None else prompt
        negative_prompt = DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
        prompt_embeds = self.encode_prompt(prompt, max_sequence_length)
        negative_embeds = self.encode_prompt(negative_prompt, max_sequence_length) if do_cfg else None
        return prompt_embeds, negative_embeds

    def _prepare_still_region(
        self, den: WanDenoiser, pixels: torch.Tensor, mask: np.ndarray | None, clip_latent: int
    ) -> np.ndarray | None:
        """Sets the denoiser's still mask and still latents where the mask says still; returns the paste
        weights (None when everything may move)."""
        if mask is None or mask.all():
            return None
        move = torch.from_numpy(mask.astype(np.float32))[None, None]
        den.still_mask = (1.0 - F.interpolate(move, size=den.latent_size, mode="area"))[None]
        den.still_mask = den.still_mask.to(self._execution_device)
        den.still = _StillLatents(self, pixels, clip_latent)
        return still_alpha(mask, self.vae_scale_factor_spatial)

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Video ``[B, 3, T, H, W]`` in [-1, 1] -> normalised latents in the samplers' layout
        ``[B, (T - 1) // 4 + 1, C, h, w]`` float32 (VAE mode)."""
        video = video.to(device=get_module_execution_device(self.vae), dtype=self.vae.dtype)
        latent = self.vae.encode(video).latent_dist.mode().to(self._execution_device, torch.float32)
        mean, inv_std = self._latent_norm(latent.device, torch.float32)
        return ((latent - mean) * inv_std).permute(0, 2, 1, 3, 4)

    def warp_reference(self, prepared: Prepared, *, loop: bool, cache_size: int = 4) -> WanReferenceLatents:
        """Warp-guided control's reference for a prepared video: the photo animated along its field by the
        warp engine, as Wan latents per window (:class:`WanReferenceLatents`)."""
        if prepared.field is None:
            raise ValueError("the video was prepared without a motion field")
        den = prepared.denoiser
        return WanReferenceLatents(
            self, prepared.image, prepared.field, den.num_frames, prepared.mask, loop=loop,
            batch=den.batch_size, cache_size=cache_size,
        )  # fmt: skip

    def initial_latents(
        self, den: WanDenoiser, generator: torch.Generator | None = None, latents: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unit noise ``[B, F, C, h, w]`` drawn in Wan's layout ``[B, C, F, h, w]`` (so a seed gives
        diffusers' noise), times the scheduler's initial noise level (the first level; UniPC's 1), as its
        pipeline starts (call ``set_schedule`` first)."""
        if den.sigmas is None:
            raise RuntimeError("call denoiser.set_schedule(steps) before initial_latents")
        b, f, c, h, w = den.latent_shape(den.num_frames)
        if latents is None:
            latents = randn_tensor(
                (b, c, f, h, w), generator=generator, device=den.device, dtype=torch.float32
            )
        return den.parameterization.prior(latents.permute(0, 2, 1, 3, 4), den.init_noise_sigma)

    def stream_decoder(self, prepared: Prepared) -> WanStreamDecoder:
        """A causal decoder that takes the video's latent frames in order, any number at a time."""
        return WanStreamDecoder(self, prepared.video_frames, paste=prepared)

    @torch.no_grad()
    def decode(
        self, prepared: Prepared, latents: torch.Tensor, decode_chunk_size: int | None = None, **unused: Any
    ) -> Iterator[np.ndarray]:
        """Latents ``[B, n, C, h, w]`` (a whole video from its first latent frame) -> float32 frames
        ``[B, m, H, W, 3]`` in [0, 1], ``decode_chunk_size`` latent frames at a time (the decoder is causal
        and keeps its cache between chunks, so chunking changes nothing), cut to the video frames asked
        for."""
        stream = self.stream_decoder(prepared)
        step = max(1, int(decode_chunk_size or latents.shape[1]))
        for i in range(0, latents.shape[1], step):
            frames = stream.push(latents[:, i : i + step])
            if frames.shape[1]:
                yield frames


class _VariantInfo:
    """The variant of a loaded backbone (see :class:`WanVariant`) and its checks."""

    def __init__(self, pipe: WanBackbone) -> None:
        tr = pipe.main_transformer
        expand = bool(pipe.config.expand_timesteps)
        two = pipe.config.boundary_ratio is not None and pipe.transformer_2 is not None
        name = "wan2.2-ti2v-5b" if expand else ("wan2.2-i2v-a14b" if two else "wan2.1-i2v")
        self.info = WanVariant(name, two, expand, tr.config.image_dim is not None, pipe.bucket_area)

    def check(self, pipe: WanBackbone, where: str, index: dict) -> None:
        tr = pipe.main_transformer
        z = int(pipe.vae.config.z_dim)
        want = z if self.info.expand_timesteps else 2 * z + pipe.vae_scale_factor_temporal
        if int(tr.config.in_channels) != want:
            kind = (
                "a text-to-video model"
                if int(tr.config.in_channels) == z
                else "not a Wan image-to-video model"
            )
            raise MissingWeightsError(
                f"model {where}: component 'transformer' takes {tr.config.in_channels} input channels, "
                f"image-to-video needs {want} ({kind}; use an -I2V- or TI2V model)"
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.info, name)


def _load_component(root: Path, name: str, library: str, class_name: str, torch_dtype) -> Any:
    """One component from its subfolder, safetensors only; errors name the component."""
    folder = root / name
    try:
        cls = getattr(importlib.import_module(library), class_name)
    except (ImportError, AttributeError) as exc:
        raise MissingWeightsError(f"component '{name}': unknown class {library}.{class_name}") from exc
    try:
        if library == "transformers":
            if "Tokenizer" in class_name or "Processor" in class_name or "Extractor" in class_name:
                return cls.from_pretrained(folder)
            kwargs: dict[str, Any] = {"use_safetensors": True}
            if torch_dtype is not None:
                kwargs["dtype"] = torch_dtype
            return cls.from_pretrained(folder, **kwargs)
        if "Scheduler" in class_name:
            return cls.from_pretrained(root, subfolder=name)
        kwargs = {"use_safetensors": True}
        if torch_dtype is not None:
            kwargs["torch_dtype"] = torch_dtype
        # low_cpu_mem_usage (diffusers' default): a 14B transformer is not built twice in memory
        return cls.from_pretrained(root, subfolder=name, **kwargs)
    except Exception as exc:  # the loaders raise OSError/ValueError/RuntimeError/KeyError variously
        raise MissingWeightsError(
            f"component '{name}' in {folder}: weights are missing or do not match its config ({_short(exc)})"
        ) from exc


def _bucket_area(where: str, root: Path, expand: bool) -> int:
    text = f"{where} {root}".lower()
    if expand:
        return 1280 * 704
    if "720p" in text:
        return 1280 * 720
    return 832 * 480


SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "UniPCMultistepScheduler")


def scheduler_solver(scheduler: Any, where: str = "") -> Euler | UniPC:
    """The project's solver for a Wan model's scheduler (its scheduler_config.json): Euler for
    FlowMatchEulerDiscreteScheduler, :class:`~stillmotion.sampling.unipc.UniPC` with the config's order,
    variant, lower_order_final and disable_corrector for UniPCMultistepScheduler (the real checkpoints').
    Anything else, or a UniPC setting the solver does not implement, is refused naming the setting."""
    name = type(scheduler).__name__
    cfg = scheduler.config
    here = f"model {where}: " if where else ""
    if name == "FlowMatchEulerDiscreteScheduler":
        return EULER
    if name != "UniPCMultistepScheduler":
        raise MissingWeightsError(
            f"{here}component 'scheduler': {name} is not supported (a Wan model samples with "
            f"{' or '.join(SCHEDULERS)})"
        )
    wrong = [
        f"{key}={cfg.get(key)!r} (needs {want!r})"
        for key, want in (
            ("prediction_type", "flow_prediction"), ("use_flow_sigmas", True), ("predict_x0", True),
            ("solver_p", None), ("thresholding", False), ("use_dynamic_shifting", False),
        )
        if cfg.get(key, want) != want
    ]  # fmt: skip
    variant = cfg.get("solver_type", "bh2")
    if variant not in UNIPC_VARIANTS:
        wrong.append(f"solver_type={variant!r} (needs one of {', '.join(UNIPC_VARIANTS)})")
    if wrong:
        raise MissingWeightsError(
            f"{here}component 'scheduler': UniPCMultistepScheduler with {', '.join(wrong)} is not supported"
        )
    return UniPC(
        order=int(cfg.get("solver_order", 2)), variant=variant,
        lower_order_final=bool(cfg.get("lower_order_final", True)),
        disable_corrector=cfg.get("disable_corrector") or (),
    )  # fmt: skip


class WanDenoiser:
    """``denoiser(x, sigma, frames=None, image=None) -> x0`` for a Wan backbone; see the module docstring."""

    def __init__(
        self,
        *,
        backbone: WanBackbone,
        condition: torch.Tensor,
        prompt_embeds: torch.Tensor,
        negative_embeds: torch.Tensor | None,
        image_embeds: torch.Tensor | None,
        guidance_scale: float,
        guidance_scale_2: float,
        num_frames: int,
        clip_frames: int,
        flow_shift: float | None = None,
    ) -> None:
        self.backbone = backbone
        self.condition = condition  # [B, C', n, h, w], n = min(video, clip) latent frames (Wan layout)
        self.prompt_embeds = prompt_embeds
        self.negative_embeds = negative_embeds
        self.image_embeds = image_embeds
        self.guidance_scale = float(guidance_scale)
        self.guidance_scale_2 = float(guidance_scale_2)
        self.num_frames = int(num_frames)  # latent frames of the whole video
        self._clip = int(clip_frames)
        sched = backbone.scheduler.config
        self.parameterization = FlowMatching(int(sched.get("num_train_timesteps", 1000)))
        self.solver = scheduler_solver(backbone.scheduler)  # the sampler the model's scheduler config names
        # the levels are the scheduler's, whichever solver steps over them
        self._unipc_levels = isinstance(self.solver, UniPC)
        default_shift = sched.get("shift", sched.get("flow_shift", 1.0))
        self.flow_shift = float(default_shift if flow_shift is None else flow_shift)
        if not self.flow_shift > 0:
            raise UserInputError(f"--flow-shift must be > 0, got {self.flow_shift}")
        ratio = backbone.config.boundary_ratio
        self.boundary = None if ratio is None else float(ratio) * self.parameterization.num_train_timesteps
        self.sigmas: torch.Tensor | None = None
        self.init_noise_sigma: float | None = None
        self._timesteps: dict[float, float] = {}  # the schedule's network timestep of each level
        self.still_mask: torch.Tensor | None = None  # [1, 1, 1, h, w], 1 where the photo stays still
        self.still: _StillLatents | None = None
        self.unet_calls = 0
        self.transformer_calls = 0
        self.frame_evaluations = 0

    # ---- facts samplers need --------------------------------------------------------------------

    @property
    def clip_frames(self) -> int:
        """Latent frames of one window: the model's clip (21 for 81 video frames)."""
        return self._clip

    @property
    def batch_size(self) -> int:
        return int(self.condition.shape[0])

    @property
    def latent_channels(self) -> int:
        return int(self.backbone.vae.config.z_dim)

    @property
    def latent_size(self) -> tuple[int, int]:
        return int(self.condition.shape[-2]), int(self.condition.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.condition.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def latent_shape(self, frames: int) -> tuple[int, int, int, int, int]:
        return (self.batch_size, frames, self.latent_channels, *self.latent_size)

    def windowed_temporal_attention(self, window: int, stride: int):
        """Context manager: FreeNoise's window-fused attention on this denoiser's transformers for its
        duration (:func:`windowed_self_attention`), removed on exit."""
        b = self.backbone
        experts = [m for m in (b.transformer, b.transformer_2) if m is not None]
        return windowed_self_attention(experts, window, stride)

    def keep_windows(self, count: int) -> None:
        """Nothing per window to cache: every window shares the clip's conditioning."""

    def reset_counters(self) -> None:
        self.unet_calls = self.transformer_calls = self.frame_evaluations = 0

    def set_schedule(self, steps: int) -> torch.Tensor:
        """Flow times of the model's scheduler with this model's shift: ``steps + 1`` values from 1 down to 0
        (float32, CPU). FlowMatchEulerDiscreteScheduler's, or UniPCMultistepScheduler's flow sigmas (its
        first level 1 - 1e-6, its network timesteps whole numbers: both kept, as its pipeline runs)."""
        if int(steps) < 1:
            raise UserInputError(f"--steps must be >= 1, got {steps}")
        if self._unipc_levels:
            config = self.backbone.scheduler.config
            sched = UniPCMultistepScheduler.from_config(config, flow_shift=self.flow_shift)
            sched.set_timesteps(int(steps))
            self.init_noise_sigma = float(sched.init_noise_sigma)  # its pipeline starts from unit noise
        else:
            sched = FlowMatchEulerDiscreteScheduler(
                num_train_timesteps=self.parameterization.num_train_timesteps, shift=self.flow_shift
            )
            sched.set_timesteps(int(steps))
            self.init_noise_sigma = float(sched.sigmas[0])
        self.sigmas = sched.sigmas.float().cpu().clone()
        levels = self.sigmas[: len(sched.timesteps)].tolist()
        self._timesteps = dict(zip(levels, sched.timesteps.float().cpu().tolist(), strict=True))
        return self.sigmas

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The network timestep of level sigma: the schedule's own for its levels, else ``1000 * t``."""
        found = self._timesteps.get(float(sigma))
        return self.parameterization.timestep(sigma) if found is None else torch.tensor(found)

    @torch.no_grad()
    def encode_condition_image(
        self, pixels: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Pixels ``[B, 3, H, W]`` in [-1, 1] -> a conditioning override for ``image=`` (one clip's worth)."""
        return self.backbone.encode_condition(pixels.to(self.device, torch.float32), self.condition.shape[2])

    def encode_condition_embeds(self, pixels: torch.Tensor) -> torch.Tensor | None:
        """CLIP embedding override for ``image_embeds=`` (Wan 2.1), or None."""
        if self.backbone.main_transformer.config.image_dim is None:
            return None
        frame = ((pixels[0].permute(1, 2, 0).float().cpu().numpy() + 1) * 127.5 + 0.5).clip(0, 255)
        return self.backbone.encode_image_embeds(_to_pil(frame.astype(np.uint8)))

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

    @staticmethod
    def _frames_of(cond: torch.Tensor, f: int) -> torch.Tensor:
        """The conditioning of an f-frame window: the clip's first f frames; past the clip (one pass over a
        longer video, FreeNoise) its last frame repeated: the mask is 0 there and the latent of the zero
        frames is constant once the causal encoder's receptive field has left the image."""
        n = cond.shape[2]
        if f <= n:
            return cond[:, :, :f]
        return torch.cat([cond, cond[:, :, -1:].expand(-1, -1, f - n, -1, -1)], dim=2)

    def _expert(self, t: torch.Tensor):
        b = self.backbone
        if self.boundary is None or b.transformer_2 is None:
            return (b.transformer if b.transformer is not None else b.transformer_2), self.guidance_scale
        if b.transformer is not None and float(t) >= self.boundary:
            return b.transformer, self.guidance_scale
        return b.transformer_2, self.guidance_scale_2

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
        self._window(frames, f)
        param = self.parameterization
        sigma = torch.as_tensor(sigma, dtype=torch.float32).cpu()
        t = self.timestep(sigma)
        model, g = self._expert(t)
        cond = (self.condition if image is None else image).to(self.device)
        emb_image = self.image_embeds if image_embeds is None else image_embeds
        xw = x.to(self.device, torch.float32).permute(0, 2, 1, 3, 4)  # Wan layout [B, C, f, h, w]
        timestep = t.to(self.device).expand(b)
        if self.backbone.config.expand_timesteps:
            mask = torch.ones(1, 1, f, *xw.shape[-2:], device=self.device)
            mask[:, :, 0] = 0  # frame 0 is the image's latent, at timestep 0
            model_in = (1 - mask) * cond + mask * xw
            patch = model.config.patch_size
            timestep = (
                (mask[0][0][:, :: patch[1], :: patch[2]] * timestep[0]).flatten().unsqueeze(0).expand(b, -1)
            )
        else:
            model_in = torch.cat([xw, self._frames_of(cond, f)], dim=1)
        model_in = model_in.to(model.dtype)
        emb_image = None if emb_image is None else emb_image.to(self.device, model.dtype)

        def forward(text: torch.Tensor) -> torch.Tensor:
            out = model(
                hidden_states=model_in,
                timestep=timestep,
                encoder_hidden_states=text,
                encoder_hidden_states_image=emb_image,
                return_dict=False,
            )[0]
            self.transformer_calls += 1
            self.frame_evaluations += b * f
            return out

        v = forward(self.prompt_embeds)
        if g > 1 and self.negative_embeds is not None:
            v_u = forward(self.negative_embeds)
            v = v_u + g * (v - v_u)
        self.unet_calls += 1
        x0 = param.denoised(xw, v.float(), sigma.to(self.device))
        if self.backbone.config.expand_timesteps:
            x0[:, :, 0] = cond[:, :, 0].float()
        x0 = x0.permute(0, 2, 1, 3, 4)
        if self.still_mask is not None:
            # still regions: an Euler step toward the photo's latents keeps them on the noised photo's path
            m = self.still_mask.to(x0.device)
            x0 = x0 * (1 - m) + self.still.window(f).to(x0.device) * m
        return x0


def _window_video(frames: np.ndarray, device) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> [1, 3, T, H, W] in [-1, 1]."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(3, 0, 1, 2)[None]
    return video.float() / 127.5 - 1


class _StillLatents:
    """Latents of the photo held still, per window length: a clip of ``4 (f - 1) + 1`` copies of it, encoded
    (a still clip's latent frames are not all equal: the first one holds one frame, the others four)."""

    def __init__(self, backbone: WanBackbone, pixels: torch.Tensor, clip: int) -> None:
        self.backbone, self.pixels, self.clip = backbone, pixels, int(clip)
        self._cache: dict[int, torch.Tensor] = {}

    def window(self, f: int) -> torch.Tensor:
        n = min(f, self.clip)
        if n not in self._cache:
            video = self.pixels.unsqueeze(2).expand(-1, -1, decoded_frames(n), -1, -1)
            self._cache[n] = self.backbone.encode_video(video)
        z = self._cache[n]
        return z if f <= n else torch.cat([z, z[:, -1:].expand(-1, f - n, -1, -1, -1)], dim=1)


class WanReferenceLatents:
    """Warp-guided control's reference on Wan: the warp engine's animation of the photo along the field, as
    the latents a clip of it would have, for any window of latent frames, made on demand.

    Latent window ``[a, b)`` is the encoding of the animation's video frames ``[4 a, 4 (b - 1) + 1)``: a
    window is a clip to the transformer, so its first latent frame holds one video frame (the last of
    latent frame a's four in the whole video) and each later one four, which are the whole video's. The warp
    runs forward as windows ask for frames, the last windows' latents are kept (``cache_size``), so memory is
    flat in the video's length. Frames are encoded without noise augmentation."""

    def __init__(
        self, backbone: WanBackbone, image: np.ndarray, field: np.ndarray, latent_count: int,
        mask: np.ndarray | None, *, loop: bool, batch: int = 1, cache_size: int = 4,
    ) -> None:  # fmt: skip
        loop = bool(loop) and field.ndim == 3  # a flow sequence animates forward only
        self.loop = loop
        self.backbone = backbone
        self.batch = int(batch)
        self.num_frames = int(latent_count)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self.frames_source = WarpedCondition(
            image, field, decoded_frames(latent_count), mask, lambda px: px, noise_aug_strength=0.0, seed=0,
            loop=loop, supersample=REFERENCE_SUPERSAMPLE,
        )  # fmt: skip

    @staticmethod
    def video_frames(start: int, stop: int) -> tuple[int, int]:
        """The animation's video frames a latent window ``[start, stop)`` is made of."""
        return (0 if start == 0 else 4 * start), 4 * (stop - 1) + 1

    def window(self, start: int, stop: int) -> torch.Tensor:
        key = (start, stop)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        v0, v1 = self.video_frames(start, stop)
        video = _window_video(self.frames_source.frames(v0, v1), self.backbone._execution_device)
        z = self.backbone.encode_video(video)
        z = z.expand(self.batch, *z.shape[1:]) if z.shape[0] != self.batch else z
        self._cache[key] = z
        while len(self._cache) > max(1, self.cache_size):
            self._cache.popitem(last=False)
        return z


def _triangular(length: int, device, dtype) -> torch.Tensor:
    j = torch.arange(length, device=device)
    return torch.minimum(j + 1, length - j).to(dtype)


def _windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Windows of ``window`` frames every ``stride`` frames, the last aligned to the end."""
    if n <= window:
        return [(0, n)]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return [(a, a + window) for a in starts]


class _WindowState:
    def __init__(self, window: int, stride: int) -> None:
        self.window, self.stride = window, stride
        self.frames = 0  # latent frames (after temporal patching) of the current forward
        self.tokens_per_frame = 0


class _WindowedSelfAttention:
    """An attention processor wrapper: self-attention per window of frames, outputs fused with triangular
    weights; the rotary position embedding restarts in each window (positions 0 .. L-1 as in training)."""

    def __init__(self, inner: Any, state: _WindowState) -> None:
        self.inner, self.state = inner, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        st = self.state
        if encoder_hidden_states is not None or st.frames <= st.window:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        hw = st.tokens_per_frame
        weights = _triangular(st.window, hidden_states.device, torch.float32)
        fused = torch.zeros(hidden_states.shape[:2] + (attn.to_out[0].out_features,),
                            device=hidden_states.device, dtype=torch.float32)  # fmt: skip
        total = torch.zeros(st.frames, device=hidden_states.device, dtype=torch.float32)
        for a, b in _windows(st.frames, st.window, st.stride):
            rope = None if rotary_emb is None else tuple(r[:, : (b - a) * hw] for r in rotary_emb)
            # the output projection is affine, so fusing after it equals fusing the attention outputs
            out = self.inner(attn, hidden_states[:, a * hw : b * hw], None, attention_mask, rope)
            w = weights[: b - a].repeat_interleave(hw).view(1, -1, 1)
            fused[:, a * hw : b * hw] += out.float() * w
            total[a:b] += weights[: b - a]
        fused = fused / total.repeat_interleave(hw).view(1, -1, 1)
        return fused.to(hidden_states.dtype)


@contextlib.contextmanager
def windowed_self_attention(transformers: list, window: int, stride: int) -> Iterator[int]:
    """FreeNoise on Wan's full spatio-temporal attention: inside the ``with``, each block's self-attention
    runs per window of ``window`` latent frames (every ``stride``, the last aligned to the end) and the
    windows' outputs are fused with triangular weights; cross-attention and feed-forward see every frame
    once. The rotary embedding is computed for one window and restarts inside each. With at most
    ``window`` frames nothing changes. Yields the number of attention layers wrapped."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
    patched: list[tuple[Any, Any]] = []
    ropes: list[Any] = []
    try:
        for tr in transformers:
            state = _WindowState(window, stride)
            p_t, p_h, p_w = tr.config.patch_size

            def rope_forward(hidden_states, _orig=tr.rope.forward, _st=state, _p=(p_t, p_h, p_w)):
                _st.frames = hidden_states.shape[2] // _p[0]
                _st.tokens_per_frame = (hidden_states.shape[3] // _p[1]) * (hidden_states.shape[4] // _p[2])
                return _orig(hidden_states[:, :, : min(_st.frames, _st.window) * _p[0]])

            tr.rope.forward = rope_forward
            ropes.append(tr.rope)
            for block in tr.blocks:
                patched.append((block.attn1, block.attn1.processor))
                block.attn1.processor = _WindowedSelfAttention(block.attn1.processor, state)
        yield len(patched)
    finally:
        for attn, processor in patched:
            attn.processor = processor
        for rope in ropes:
            del rope.forward  # back to the class's forward


class WanStreamDecoder:
    """Wan's causal VAE decoder over a video's latent frames pushed in order, memory flat in video length.

    The decoder keeps a small cache of each causal convolution's last input frames (what diffusers'
    ``AutoencoderKLWan._decode`` keeps between the frames of one call); here it lives across calls, so a
    video decoded chunk by chunk equals one decode of all its latents. With the VAE's tiling on, one
    cache per tile, blended as ``tiled_decode`` blends. ``limit`` cuts the output at that many frames."""

    def __init__(
        self, backbone: WanBackbone, limit: int | None = None, paste: Prepared | None = None
    ) -> None:
        self.backbone = backbone
        self.vae = backbone.vae
        self.limit = limit
        # a prepared video with paste weights: the photo's pixels pasted where it is still
        self.paste = paste if paste is not None and paste.alpha is not None else None
        self.emitted = 0
        self.index = 0  # latent frames pushed so far
        self.caches: dict[tuple[int, int], list] = {}

    def _new_cache(self) -> list:
        return [None] * self.vae._cached_conv_counts["decoder"]

    def _decode_frame(self, z: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
        cache = self.caches.get(key)
        if cache is None:
            cache = self.caches[key] = self._new_cache()
        x = self.vae.post_quant_conv(z)
        return self.vae.decoder(x, feat_cache=cache, feat_idx=[0], first_chunk=self.index == 0)

    def _frame(self, z: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        h, w = z.shape[-2:]
        tile_h = vae.tile_sample_min_height // vae.spatial_compression_ratio
        tile_w = vae.tile_sample_min_width // vae.spatial_compression_ratio
        patch = vae.config.patch_size
        if not (vae.use_tiling and (w > tile_w or h > tile_h)):
            out = self._decode_frame(z, (0, 0))
        else:
            stride_h = vae.tile_sample_stride_height // vae.spatial_compression_ratio
            stride_w = vae.tile_sample_stride_width // vae.spatial_compression_ratio
            sample_h, sample_w = h * vae.spatial_compression_ratio, w * vae.spatial_compression_ratio
            out_stride_h, out_stride_w = vae.tile_sample_stride_height, vae.tile_sample_stride_width
            blend_h = vae.tile_sample_min_height - out_stride_h
            blend_w = vae.tile_sample_min_width - out_stride_w
            if patch is not None:
                sample_h, sample_w = sample_h // patch, sample_w // patch
                out_stride_h, out_stride_w = out_stride_h // patch, out_stride_w // patch
                blend_h = vae.tile_sample_min_height // patch - out_stride_h
                blend_w = vae.tile_sample_min_width // patch - out_stride_w
            rows = []
            for i in range(0, h, stride_h):
                row = [
                    self._decode_frame(z[:, :, :, i : i + tile_h, j : j + tile_w], (i, j))
                    for j in range(0, w, stride_w)
                ]
                rows.append(row)
            result = []
            for i, row in enumerate(rows):
                parts = []
                for j, tile in enumerate(row):
                    if i > 0:
                        tile = vae.blend_v(rows[i - 1][j], tile, blend_h)
                    if j > 0:
                        tile = vae.blend_h(row[j - 1], tile, blend_w)
                    parts.append(tile[:, :, :, :out_stride_h, :out_stride_w])
                result.append(torch.cat(parts, dim=-1))
            out = torch.cat(result, dim=3)[:, :, :, :sample_h, :sample_w]
        if patch is not None:
            out = unpatchify(out, patch_size=patch)
        self.index += 1
        return torch.clamp(out, -1.0, 1.0)

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> np.ndarray:
        """The next latent frames ``[B, n, C, h, w]`` -> their video frames ``[B, m, H, W, 3]`` float32 in
        [0, 1] (m = 4 n, or 4 n - 3 for the chunk holding the first latent frame; fewer at ``limit``)."""
        vae = self.vae
        z = latents.permute(0, 2, 1, 3, 4).to(vae.device, torch.float32)
        mean, inv_std = self.backbone._latent_norm(z.device, torch.float32)
        z = (z / inv_std + mean).to(vae.dtype)
        outs = [self._frame(z[:, :, k : k + 1]) for k in range(z.shape[2])]
        if not outs:
            return np.zeros((latents.shape[0], 0, 1, 1, 3), np.float32)
        video = torch.cat(outs, dim=2).float()
        frames = (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).cpu().numpy()
        if self.limit is not None:
            frames = frames[:, : max(0, self.limit - self.emitted)]
        if self.paste is not None:
            ref = self.paste.image.astype(np.float32) / 255.0
            a = self.paste.alpha[..., None]
            frames = frames * (1 - a) + ref * a
        self.emitted += frames.shape[1]
        return frames
