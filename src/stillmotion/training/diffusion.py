"""Train the motion-conditioned video diffusion model: ``stillmotion train diffusion CONFIG``.

Reads top to bottom: the config, the model and which of its weights train, the data, SVD's
objective, the loop. ``training/lora.py`` runs the same loop with LoRA weights instead.

Objective (SVD's EDM-style training, as Stable Video Diffusion fine-tuning uses it):

- sigma ~ LogNormal(P_mean, P_std) per clip, P_mean = 0.7, P_std = 1.6 (the values SVD fine-tuning
  recipes use for the img2vid models: most of the mass on high noise, where motion is decided);
- z_noisy = z + sigma * eps with z the scaled latents of the clip (VAE latent * scaling_factor);
- preconditioning with sigma_data = 1: c_in = 1/sqrt(sigma^2+1), c_skip = 1/(sigma^2+1),
  c_out = -sigma/sqrt(sigma^2+1), c_noise = 0.25 log sigma (the UNet's timestep). The UNet predicts
  v; the denoised estimate is x0 = c_skip * z_noisy + c_out * v, exactly what the pipeline's
  MotionDenoiser computes at inference;
- loss = w(sigma) * ||x0 - z||^2 with w = (1+sigma^2)/sigma^2 (SVD's v-weighting; it makes the loss
  equal to the plain MSE between predicted and true v), averaged over frames, channels, pixels and
  the batch.

These formulas are ``sampling.parameterization.VPredictionEDM``'s (scalings, timestep, re-noising,
sigma draws and loss), the same object the denoisers and samplers use at inference.

Conditioning, as the pipeline feeds it at inference: the clip's first frame gives the CLIP image
embedding (clean) and the image latent (noise-augmented: frame + a * eps with a ~ LogNormal(-3.0,
0.5), SVD's conditioning augmentation, a also given to the UNet as its third added time id); fps
and motion bucket ids are constants (``fps``, ``motion_bucket_id``); the flows of the clip (k -> k+1,
the last repeated) go through the motion encoder into the motion cross-attention; the clip's motion
strength M_s (eq. 8) goes to the strength embedding.

Conditioning dropout (for classifier-free guidance and for running without motion): one uniform
number u per clip; the image embedding is zeroed when u < ``drop_image_embed`` and the image latent
when u < ``drop_image_latent`` - the same u, so with equal probabilities both drop together, which
is exactly the pipeline's unconditional branch (zero embedding, zero latent). Motion features and
the strength term are left out for a whole step with probabilities ``drop_motion`` and
``drop_strength`` (the pipeline's "no motion" / "no strength" paths, which skip those modules).

Which weights train (``unet_trainable``), beyond the motion encoder and adapter (always trained):
- ``paper`` (default): the paper keeps "the spatial layers of the UNet frozen, while the remainder
  of the model remains trainable". Frozen: conv_in, conv_norm_out, conv_out, every
  ``spatial_res_block``, every spatial ``transformer_blocks`` (self-attention, image cross-attention,
  feed-forward) with its transformer's norm / proj_in / proj_out, the down- and upsamplers.
  Trained: every ``temporal_res_block``, ``temporal_transformer_blocks``, ``time_pos_embed``,
  ``time_mixer`` (the spatial/temporal blend), and the time / added-time embeddings.
- ``temporal``: only the temporal layers listed above (no embeddings);
- ``all``: the whole UNet (training a small model from scratch, where nothing is pretrained);
- ``none``: only the motion encoder and adapter.

Exact resume and multi-GPU: the data order is a function of the step (``dataset.ClipSampler``) and
every random draw for a sample (sigma, noise, augmentation, dropout) comes from a generator seeded
by that sample's own seed, the per-step draws from one seeded by the step; so a run resumed from a
checkpoint repeats the unbroken run's steps bit for bit on the same device, and N processes with
batch b compute the step one process with batch N*b computes (up to float summation order).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.checkpoint import checkpoint

from stillmotion.diffusion.tiny import tiny_components
from stillmotion.errors import UserInputError
from stillmotion.io.atomic import atomic_path
from stillmotion.progress import progress_bar
from stillmotion.sampling.parameterization import EDM

from .checkpoint import TrainState, gather_rng_states, load_checkpoint, save_checkpoint
from .config import config_to_dict, load_config
from .runlog import BASE_FIELDS, CsvLog, StepTimer, start_output_dir

# ----------------------------------------------------------------------------------------- config


@dataclass
class DiffusionConfig:
    # --- data -----------------------------------------------------------------------------------
    data: list[str] = field(default_factory=list)  # clip caches (`stillmotion prepare`), one or more
    num_frames: int = 14  # frames per training clip (SVD img2vid: 14, -xt: 25; the paper: 25)
    frame_step: int = 1  # take every k-th cached frame
    flip: bool = True  # random horizontal flip (flow x negated); not with cached latents
    use_latents: bool = False  # read cached latents instead of encoding frames every step
    static_only: bool = False  # train on static-camera clips only (the LoRA trainer sets it)
    holdout_clips: int = 0  # clips kept out of training for the held-out evaluation loss
    workers: int = 2  # DataLoader worker processes (0: load in the training process)
    # --- model ----------------------------------------------------------------------------------
    pretrained: str | None = None  # StillMotionPipeline folder, or stock SVD (folder / cached hub id)
    tiny: bool = False  # build tiny random components instead (tests, from-scratch experiments)
    tiny_autoencoder: str = "kl"  # with tiny: "kl" (tiny VAE) or "space_to_depth"
    tiny_downscale: int = 2  # with tiny + space_to_depth: the block size
    unet_trainable: str = "paper"  # paper | temporal | all | none (see the module docstring)
    train_motion: bool = True  # train motion encoder + adapter (strength embedding included)
    # --- objective ------------------------------------------------------------------------------
    p_mean: float = 0.7  # log-normal sigma sampling: mean of log sigma
    p_std: float = 1.6  # ... and its standard deviation
    cond_aug_mean: float = -3.0  # log-normal noise augmentation of the image: mean of its log
    cond_aug_std: float = 0.5  # ... and its standard deviation
    drop_image_embed: float = 0.1  # P(zero CLIP image embedding)
    drop_image_latent: float = 0.1  # P(zero image latent); shares its draw with drop_image_embed
    drop_motion: float = 0.05  # P(step without motion features)
    drop_strength: float = 0.05  # P(step without the strength term)
    # Addition (not the paper): per-frame image latents warped along the clip's mean flow
    # (stillmotion.diffusion.warp_condition); saved in the model, used by inference when set.
    warped_image_condition: bool = False
    # Addition (not the paper): the model denoises the clip minus its conditioning latents and adds them
    # back (stillmotion.diffusion.denoiser, "Condition residual").
    condition_residual: bool = False
    drop_warp: float = 0.2  # P(sample keeps SVD's still image latent although the motion is given)
    fps: int = 7  # constant fps id (fps - 1 is fed, as the pipeline does)
    motion_bucket_id: int = 127  # constant motion bucket id (the pipeline's default)
    # --- optimisation ---------------------------------------------------------------------------
    lr: float = 3e-5  # AdamW, constant (the paper's 3e-5)
    warmup_steps: int = 0  # linear warm-up from 0 over this many steps
    lr_decay: str = "none"  # none | cosine (from lr after warm-up down to min_lr at max_steps)
    min_lr: float = 0.0  # floor of the cosine decay
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0  # gradient clipping (0: off)
    batch_size: int = 1  # clips per process per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 1000  # optimizer steps
    # --- run ------------------------------------------------------------------------------------
    output_dir: str = "runs/diffusion"
    seed: int = 0
    mixed_precision: str = "auto"  # auto (CUDA: bf16 if supported else fp16; CPU: no) | no | fp16 | bf16
    gradient_checkpointing: str | bool = "auto"  # auto (on CUDA) | true | false
    device: str = "auto"  # auto | cpu | cuda (accelerate picks the GPU of each process)
    cpu_threads: int = 0  # torch CPU threads when training on the CPU (0: torch's default)
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept (0: all)
    eval_every: int = 0  # steps between held-out evaluations (0: at the start and the end only)
    eval_batch_size: int = 4  # clips in the fixed held-out batch
    save_pipeline: bool = True  # write the trained pipeline to OUTPUT/model at the end
    overwrite: bool = False  # start over in an output_dir that holds checkpoints
    progress: bool = True  # progress bar on stderr

    def validate(self) -> None:
        if not self.data:
            raise UserInputError("config: data must name at least one clip cache (`stillmotion prepare`)")
        if (self.pretrained is None) == (not self.tiny):
            raise UserInputError("config: give either pretrained: DIR (pipeline or SVD folder) or tiny: true")
        choices = {"unet_trainable": ("paper", "temporal", "all", "none"),
                   "mixed_precision": ("auto", "no", "fp16", "bf16"),
                   "gradient_checkpointing": ("auto", "true", "false"), "device": ("auto", "cpu", "cuda"),
                   "tiny_autoencoder": ("kl", "space_to_depth"), "lr_decay": ("none", "cosine")}
        for key, allowed in choices.items():
            if str(getattr(self, key)).lower() not in allowed:
                got = getattr(self, key)
                raise UserInputError(f"config: {key} must be one of {', '.join(allowed)}, got {got!r}")
        for key in ("drop_image_embed", "drop_image_latent", "drop_motion", "drop_strength", "drop_warp"):
            if not 0 <= getattr(self, key) <= 1:
                raise UserInputError(f"config: {key} must be in [0, 1], got {getattr(self, key)}")
        for key in ("num_frames", "batch_size", "grad_accum", "max_steps", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise UserInputError(f"config: {key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise UserInputError(f"config: lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise UserInputError(f"config: min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.flip and self.use_latents:
            raise UserInputError("config: flip cannot be used with use_latents (set flip: false)")
        if self.warped_image_condition and self.use_latents:
            raise UserInputError("config: warped_image_condition needs the frames (set use_latents: false)")


def learning_rate(cfg: DiffusionConfig, step: int) -> float:
    """The rate of optimizer step ``step``: a pure function of the step, so a resumed run repeats it."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_decay == "cosine":
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
    return cfg.lr


# ------------------------------------------------------------------------------------------ model


def build_pipeline(cfg: DiffusionConfig):
    """The StillMotionPipeline to train: from a folder, or tiny random components."""
    # lazy: diffusers (an optional extra) and numba load only on this path
    from stillmotion.diffusion.pipeline import StillMotionPipeline

    if cfg.tiny:
        s2d = cfg.tiny_autoencoder == "space_to_depth"
        ae_kwargs = {"downscale_factor": cfg.tiny_downscale} if s2d else {}
        parts = tiny_components(cfg.seed, autoencoder=cfg.tiny_autoencoder, num_frames=cfg.num_frames,
                                **ae_kwargs)
        return StillMotionPipeline(**parts)
    return StillMotionPipeline.from_pretrained(cfg.pretrained, load_lora=False)


# Frozen under unet_trainable="paper": the spatial layers (see the module docstring).
SPATIAL = re.compile(
    r"^(conv_in|conv_norm_out|conv_out)\."
    r"|\.spatial_res_block\."
    r"|(^|\.)transformer_blocks\."
    r"|\.attentions\.\d+\.(norm|proj_in|proj_out)\."
    r"|\.(downsamplers|upsamplers)\."
)
TEMPORAL = re.compile(r"temporal_res_block|temporal_transformer_blocks|time_pos_embed|time_mixer")


def unet_trainable_names(unet: nn.Module, mode: str) -> set[str]:
    """Names of the UNet parameters that train under ``mode`` (paper | temporal | all | none)."""
    names = [n for n, _ in unet.named_parameters()]
    if mode == "all":
        return set(names)
    if mode == "none":
        return set()
    if mode == "temporal":
        return {n for n in names if TEMPORAL.search(n)}
    return {n for n in names if not SPATIAL.search(n)}


def make_trainable(pipe, cfg: DiffusionConfig) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze what this trainer trains; returns those parameters."""
    for module in (pipe.unet, pipe.vae, pipe.image_encoder, pipe.motion_encoder, pipe.motion_adapter):
        module.requires_grad_(False)
    keep = unet_trainable_names(pipe.unet, cfg.unet_trainable)
    params = []
    for name, p in pipe.unet.named_parameters():
        if name in keep:
            p.requires_grad_(True)
            params.append(p)
    if cfg.train_motion:
        for module in (pipe.motion_encoder, pipe.motion_adapter):
            module.requires_grad_(True)
            params += list(module.parameters())
    if not params:
        raise UserInputError("config: nothing to train (unet_trainable: none and train_motion: false)")
    return params


def enable_block_checkpointing(unet: nn.Module) -> None:
    """Gradient checkpointing per UNet block: each down, mid and up block is recomputed in backward.

    Used instead of diffusers' ``enable_gradient_checkpointing``, which checkpoints the spatial
    transformer blocks *inside* each spatio-temporal transformer: their recomputation runs without
    the transformer's forward pre-hook, so the motion adapter's hooks would read the resolution
    recorded last (another layer's). A whole block recomputes with all its hooks in order, so the
    motion attention sees the right features; memory keeps only the blocks' inputs and outputs.
    The instance's ``forward`` is wrapped; weights and state-dict keys are untouched.
    """
    for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
        plain = type(block).forward.__get__(block)

        def run(*args: Any, _plain=plain, **kwargs: Any) -> Any:
            if torch.is_grad_enabled():
                return checkpoint(_plain, *args, use_reentrant=False, **kwargs)
            return _plain(*args, **kwargs)

        block.forward = run


class MotionUNet(nn.Module):
    """The trained forward: motion encoder -> adapter hooks -> UNet. DDP wraps this one module.

    The adapter's conditioning stays set after ``forward`` returns: with gradient checkpointing the
    UNet recomputes its blocks during backward and needs it; the loop clears it after backward.
    """

    def __init__(self, unet: nn.Module, motion_encoder: nn.Module, motion_adapter: nn.Module) -> None:
        super().__init__()
        self.unet, self.motion_encoder, self.motion_adapter = unet, motion_encoder, motion_adapter

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        embeds: torch.Tensor,
        added_time_ids: torch.Tensor,
        flows: torch.Tensor | None,
        strength: torch.Tensor | None,
    ) -> torch.Tensor:
        feats = None
        if flows is not None:  # already normalised to the encoder's input size
            feats = self.motion_encoder(flows)
        self.motion_adapter.attach(self.unet)
        self.motion_adapter.set_conditioning(feats, strength)
        return self.unet(sample, timestep, encoder_hidden_states=embeds, added_time_ids=added_time_ids,
                         return_dict=False)[0]


# ------------------------------------------------------------------------------------ the objective


class SampleNoise:
    """Per-sample random draws: sample i's noise comes from a generator seeded by its own seed.

    The batch's samples each carry a seed (from the data sampler: a function of the run's seed and
    the sample's global number), so a sample gets the same sigma, noise and dropout whether it is
    trained alone, in a batch of 4, on rank 1 of 2, or after a resume: one GPU with batch 2 and two
    GPUs with batch 1 compute the same step.
    """

    def __init__(self, seeds: torch.Tensor, device: torch.device | str, salt: int = 0) -> None:
        self.device = torch.device(device)
        self.gens = [torch.Generator(device=self.device).manual_seed((int(s) + salt) % (2**63 - 1))
                     for s in seeds.tolist()]

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in self.gens])

    def gens_randn(self, i: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Normal noise of ``shape`` from sample i's own generator."""
        return torch.randn(shape, generator=self.gens[i], device=self.device)

    def rand(self) -> torch.Tensor:
        return torch.stack([torch.rand((), generator=g, device=self.device) for g in self.gens])

    def lognormal(self, mean: float, std: float) -> torch.Tensor:
        return (mean + std * self.randn()).exp()


def conditioning_inputs(pipe, batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """Clean scaled latents z [B, F, C, h, w], first frame pixels [B, 3, H, W] in [-1, 1], flows."""
    scale = pipe.vae.config.scaling_factor
    if "latents" in batch:
        z = batch["latents"].to(device, torch.float32) * scale
        first = batch["image"].to(device).float() / 127.5 - 1
    else:
        pixels = batch["frames"].to(device).float() / 127.5 - 1  # [B, F, 3, H, W]
        b, f = pixels.shape[:2]
        with torch.no_grad():
            z = pipe.encode_latents(pixels.flatten(0, 1)).float().unflatten(0, (b, f)) * scale
        first = pixels[:, 0]
    flows = batch["flows"].to(device).float()  # [B, F-1, 2, H, W] px/frame
    flows = torch.cat([flows, flows[:, -1:]], 1)  # the last frame repeats the flow before it
    return {"z": z, "first": first, "flows": flows}


def diffusion_loss(
    model: nn.Module,
    pipe,
    batch: dict[str, torch.Tensor],
    cfg: DiffusionConfig,
    step_seed: int,
    *,
    train: bool = True,
    sigmas: torch.Tensor | None = None,
) -> torch.Tensor:
    """SVD's weighted denoising loss for one batch (see the module docstring).

    Per-sample draws come from the samples' own seeds (:class:`SampleNoise`); the per-step draws
    (motion / strength dropout) from ``step_seed``, the same on every process. ``train=False`` is
    the evaluation variant: no conditioning dropout, the inference noise augmentation (0.02) and
    the given fixed ``sigmas``.
    """
    device = pipe.unet.device
    inp = conditioning_inputs(pipe, batch, device)
    z, first, flows = inp["z"], inp["first"], inp["flows"]
    b, f = z.shape[:2]
    frame_size = tuple(first.shape[-2:])
    rnd = SampleNoise(batch["seed"], device)

    # Conditioning image: CLIP embedding of the clean frame, VAE latent of the noise-augmented frame.
    with torch.no_grad():
        embeds = pipe.encode_image_embeddings(first).to(device, torch.float32)
        if train:
            aug = rnd.lognormal(cfg.cond_aug_mean, cfg.cond_aug_std)
        else:
            aug = torch.full((b,), 0.02, device=device)
        noisy_first = first + aug.view(b, 1, 1, 1) * rnd.randn(*first.shape[1:])
        image_latent = pipe.encode_latents(noisy_first).to(device, torch.float32)
    motion_on = strength_on = True
    if train:
        u = rnd.rand()
        embeds = embeds * (u >= cfg.drop_image_embed).float().view(b, 1, 1)
        step_draws = torch.rand(2, generator=torch.Generator().manual_seed(step_seed))
        motion_on = bool(step_draws[0] >= cfg.drop_motion)
        strength_on = bool(step_draws[1] >= cfg.drop_strength)

    # Noise the clip: sigma ~ LogNormal(P_mean, P_std), unless fixed sigmas are given.
    param = EDM  # SVD's v-prediction (sampling.parameterization): one source of truth with inference
    if sigmas is None:
        sigmas = param.training_sigma(rnd.randn(), cfg.p_mean, cfg.p_std)
    sigmas = sigmas.to(device)
    sigma = sigmas.view(b, 1, 1, 1, 1)
    noisy = param.noised(z, rnd.randn(*z.shape[1:]), sigma)

    _, _, c_in = param.scalings(sigma)
    c_noise = param.timestep(sigmas)
    cond = image_latent.unsqueeze(1).expand(b, f, *image_latent.shape[1:])
    if getattr(pipe.motion_adapter.config, "warped_image_condition", False):
        cond = _warped_condition(pipe, batch, cond, aug, rnd, cfg, motion_on, train, device)
    ref = None
    if getattr(pipe.motion_adapter.config, "condition_residual", False):
        # Taken before the dropout: inference's unconditional branch shares the conditional branch's r.
        ref = cond * pipe.vae.config.scaling_factor
        noisy = noisy - ref  # the model sees, and denoises, what the clip adds to its conditioning
    if train:
        cond = cond * (u >= cfg.drop_image_latent).float().view(b, 1, 1, 1, 1)
    model_in = torch.cat([noisy * c_in, cond], 2)
    ids = torch.stack([torch.full((b,), float(cfg.fps - 1), device=device),
                       torch.full((b,), float(cfg.motion_bucket_id), device=device), aug.float()], 1)

    motion_in = None
    if motion_on:
        # lazy: diffusers is an optional extra, imported only on this path
        from stillmotion.diffusion.motion_encoder import normalize_flows

        latent_size = tuple(z.shape[-2:])
        motion_in = normalize_flows(flows, frame_size, pipe.motion_encoder.input_size(latent_size))
    strength = batch["strength"].to(device).float() if strength_on else None

    v = model(model_in, c_noise, embeds, ids, motion_in, strength).float()
    x0 = param.train_denoised(noisy, v, sigma)
    if ref is not None:
        x0 = x0 + ref
    return param.loss(x0, z, sigma)


@torch.no_grad()
def _warped_condition(pipe, batch, still, aug, rnd, cfg, motion_on, train, device) -> torch.Tensor:
    """Per-frame image latents ``[B, F, C, h, w]``: each clip's first frame warped along its mean flow
    (the inference path's function), noise-augmented like the first frame; ``still`` (SVD's repeated
    image latent) for the samples drawn to keep it (``drop_warp``) and on steps without motion."""
    # lazy: numba takes about a second to import (start-up); only this path needs it
    from stillmotion.diffusion.warp_condition import static_field, to_pixels, warped_image_frames

    if "frames" not in batch:
        raise UserInputError("warped_image_condition needs the clips' frames (use_latents: false)")
    if not motion_on:  # a step without motion keeps SVD's still latent; nothing random is drawn after this
        return still
    b, f = still.shape[:2]
    frames = batch["frames"]  # [B, F, 3, H, W] uint8
    out = []
    for i in range(b):
        first = frames[i, 0].permute(1, 2, 0).contiguous().cpu().numpy()
        warped = to_pixels(warped_image_frames(first, static_field(batch["flows"][i]), f)).to(device)
        warped = warped + aug[i] * rnd.gens_randn(i, warped.shape)
        out.append(pipe.encode_latents(warped).to(device, torch.float32))
    warped = torch.stack(out)
    keep = rnd.rand() >= cfg.drop_warp if train else torch.ones(b, dtype=torch.bool, device=device)
    return torch.where(keep.view(b, 1, 1, 1, 1), warped, still)


def eval_sigmas(n: int, cfg: DiffusionConfig) -> torch.Tensor:
    """n fixed noise levels at evenly spaced quantiles of the training LogNormal(P_mean, P_std)."""
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    normal = torch.distributions.Normal(0.0, 1.0).icdf(q)
    return (cfg.p_mean + cfg.p_std * normal).exp().float()


@torch.no_grad()
def evaluate(model: nn.Module, pipe, batch: dict[str, torch.Tensor], cfg: DiffusionConfig) -> float:
    """Loss on a fixed batch with fixed sigmas and fixed noise: comparable across steps and runs."""
    n = batch["strength"].shape[0]
    loss = diffusion_loss(model, pipe, batch, cfg, 0, train=False, sigmas=eval_sigmas(n, cfg))
    pipe.motion_adapter.clear_conditioning()
    return float(loss)


# -------------------------------------------------------------------------------------------- loop


def _mixed_precision(cfg: DiffusionConfig, use_cuda: bool) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if not use_cuda:
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _save_config(cfg: Any, out: Path) -> None:
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def export_pipeline(pipe, cfg: DiffusionConfig, out: Path) -> Path | None:
    """Write the trained pipeline to OUTPUT/model (loads with StillMotionPipeline.from_pretrained)."""
    if not cfg.save_pipeline:
        return None
    target = out / "model"
    pipe.save_pretrained(target)
    return target


def train(
    cfg: DiffusionConfig,
    resume: bool = False,
    *,
    make_trainable: Callable[[Any, Any], list[nn.Parameter]] = make_trainable,
    export: Callable[[Any, Any, Path], Path | None] = export_pipeline,
    name: str = "diffusion",
) -> Path:
    """Run (or resume) a training run; returns the output directory."""
    # lazy: accelerate is an optional extra, imported only on this path
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from .dataset import ClipDataset, _mix, fixed_batch, make_loader

    # --- processes and precision ----------------------------------------------------------------
    use_cuda = cfg.device != "cpu" and torch.cuda.is_available()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("config: device cuda was asked for but CUDA is not available")
    accelerator = Accelerator(
        mixed_precision=_mixed_precision(cfg, use_cuda),
        cpu=not use_cuda,
        gradient_accumulation_steps=cfg.grad_accum,
        # Steps without motion / strength leave those weights without gradients.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    if not use_cuda and cfg.cpu_threads > 0:
        # Tiny models on a busy 2-core CPU: 2 threads measured 25x slower than 1 (benchmarks/bench_train.py).
        torch.set_num_threads(cfg.cpu_threads)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    main_proc = accelerator.is_main_process
    out = Path(cfg.output_dir)
    ckpt = start_output_dir(out, resume=resume, overwrite=cfg.overwrite, clean=main_proc)
    accelerator.wait_for_everyone()

    # --- model ----------------------------------------------------------------------------------
    with torch.random.fork_rng(devices=[]):  # new weights (tiny parts, LoRA A) depend on the seed only
        torch.manual_seed(cfg.seed)
        pipe = build_pipeline(cfg)
        if cfg.warped_image_condition:  # saved with the model: inference then warps the image too
            pipe.motion_adapter.register_to_config(warped_image_condition=True)
        if cfg.condition_residual:  # saved with the model: inference takes the same residual
            pipe.motion_adapter.register_to_config(condition_residual=True)
        params = make_trainable(pipe, cfg)
    half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision)
    for module in (pipe.unet, pipe.motion_encoder, pipe.motion_adapter, pipe.vae, pipe.image_encoder):
        module.to(device)
    if half is not None:  # frozen encoders: half precision is enough on CUDA
        pipe.vae.to(dtype=half)
        pipe.image_encoder.to(dtype=half)
    gc = str(cfg.gradient_checkpointing).lower()
    checkpointing = gc == "true" or (gc == "auto" and use_cuda)
    if checkpointing:
        enable_block_checkpointing(pipe.unet)
    model = MotionUNet(pipe.unet, pipe.motion_encoder, pipe.motion_adapter)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    n_train = sum(p.numel() for p in params)
    n_all = sum(p.numel() for m in (pipe.unet, pipe.motion_encoder, pipe.motion_adapter)
                for p in m.parameters())

    # --- resume ---------------------------------------------------------------------------------
    models = {"unet": pipe.unet, "motion_encoder": pipe.motion_encoder,
              "motion_adapter": pipe.motion_adapter}
    state = TrainState()
    if ckpt is not None:
        state = load_checkpoint(ckpt, models=models, optimizers={"adamw": optimizer}, rank=rank)
        if state.extra.get("world_size", world) != world or state.extra.get("batch_size") != cfg.batch_size:
            accelerator.print(
                f"note: resuming with {world} process(es) x batch {cfg.batch_size}; the checkpoint was "
                f"written with {state.extra.get('world_size')} x {state.extra.get('batch_size')}: "
                "the data order changes"
            )
    if ckpt is not None and accelerator.scaler is not None and "grad_scaler" in state.extra:
        accelerator.scaler.load_state_dict(state.extra["grad_scaler"])
    model, optimizer = accelerator.prepare(model, optimizer)

    # --- data -----------------------------------------------------------------------------------
    probe = ClipDataset(cfg.data, num_frames=cfg.num_frames, frame_step=cfg.frame_step, flip=False,
                        static_only=cfg.static_only, use_latents=cfg.use_latents)
    all_ids = probe.clip_ids
    held = set(sorted(all_ids, key=lambda c: _mix(cfg.seed, hash_id(c)))[: cfg.holdout_clips])
    if cfg.holdout_clips and len(held) >= len(all_ids):
        raise UserInputError(f"config: holdout_clips {cfg.holdout_clips} leaves no clip to train on")
    dataset = ClipDataset(cfg.data, num_frames=cfg.num_frames, frame_step=cfg.frame_step, flip=cfg.flip,
                          static_only=cfg.static_only, use_latents=cfg.use_latents, exclude_ids=held or None)
    eval_set = ClipDataset(cfg.data, num_frames=cfg.num_frames, frame_step=cfg.frame_step, flip=False,
                           static_only=cfg.static_only, use_latents=cfg.use_latents, clip_ids=held or None)
    eval_batch = fixed_batch(eval_set, cfg.eval_batch_size, seed=cfg.seed + 17) if main_proc else None
    loader = make_loader(dataset, cfg.batch_size, seed=cfg.seed, start_step=state.step * cfg.grad_accum,
                         rank=rank, world_size=world, workers=cfg.workers, pin_memory=use_cuda)
    if main_proc:  # only once the data is known to be usable: a data error leaves no output behind
        out.mkdir(parents=True, exist_ok=True)
        _save_config(cfg, out)

    # --- logs -----------------------------------------------------------------------------------
    fields = list(BASE_FIELDS)
    log = CsvLog(out / "train_log.csv", fields, resume_step=state.step if ckpt else None, enabled=main_proc)
    eval_log = CsvLog(out / "eval_log.csv", ("step", "eval_loss"),
                      resume_step=state.step if ckpt else None, enabled=main_proc)
    accelerator.print(
        f"{name}: {len(dataset)} training clips ({len(held)} held out), {n_train:,} of {n_all:,} "
        f"parameters train; {world} process(es) on {device}, precision {accelerator.mixed_precision}, "
        f"gradient checkpointing {'on' if checkpointing else 'off'}; "
        f"{'resuming at step ' + str(state.step) if ckpt else 'starting'} -> {cfg.max_steps} steps"
    )
    if main_proc and ckpt is None:
        first = evaluate(accelerator.unwrap_model(model), pipe, eval_batch, cfg)
        eval_log.write(step=0, eval_loss=first)

    def checkpoint() -> None:
        rngs = gather_rng_states(accelerator)
        if main_proc:
            state.extra.update({"world_size": world, "batch_size": cfg.batch_size})
            if accelerator.scaler is not None:  # fp16 loss scale: plain numbers, JSON in state.json
                state.extra["grad_scaler"] = {k: (float(v) if hasattr(v, "item") else v)
                                              for k, v in accelerator.scaler.state_dict().items()}
            save_checkpoint(out, state, models=models, optimizers={"adamw": optimizer},
                            config=config_to_dict(cfg), rng_states=rngs, keep=cfg.keep_checkpoints,
                            world_size=world)
        accelerator.wait_for_everyone()

    # --- the loop -------------------------------------------------------------------------------
    timer = StepTimer()
    batches = iter(loader)
    bar = progress_bar(total=cfg.max_steps, desc=f"train {name}", enabled=cfg.progress and main_proc,
                       unit="step")
    bar.update(state.step)
    model.train()
    try:
        while state.step < cfg.max_steps:
            lr = learning_rate(cfg, state.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            total = 0.0
            for micro in range(cfg.grad_accum):
                batch = timer.fetch(batches)
                step_seed = _mix(cfg.seed, state.step * cfg.grad_accum + micro, 0x57E9)
                with accelerator.accumulate(model), accelerator.autocast():
                    loss = diffusion_loss(model, pipe, batch, cfg, step_seed)
                    accelerator.backward(loss)
                    pipe.motion_adapter.clear_conditioning()
                    if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                total += loss.detach().float() / cfg.grad_accum
            state.step += 1
            state.samples_seen += cfg.batch_size * cfg.grad_accum * world
            state.epoch = state.samples_seen // len(dataset)
            loss_value = float(accelerator.reduce(total.reshape(1), "mean")) if world > 1 else float(total)
            steps_per_s, wait = timer.end_step()
            log.write(step=state.step, loss=loss_value, lr=lr, steps_per_s=steps_per_s, data_wait=wait)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", steps_s=f"{steps_per_s:.2f}", wait=f"{wait:.0%}")
            if not math.isfinite(loss_value):
                raise RuntimeError(f"loss became {loss_value} at step {state.step}: lower lr, check the data")
            due = cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < cfg.max_steps
            if due and main_proc:
                value = evaluate(accelerator.unwrap_model(model), pipe, eval_batch, cfg)
                eval_log.write(step=state.step, eval_loss=value)
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.max_steps:
                checkpoint()
    finally:
        bar.close()
        log.close()

    # --- the end --------------------------------------------------------------------------------
    if main_proc:
        final = evaluate(accelerator.unwrap_model(model), pipe, eval_batch, cfg)
        eval_log.write(step=state.step, eval_loss=final)
        eval_log.close()
        summary = timer.summary()
        accelerator.print(f"{name}: step {state.step}, held-out loss {final:.4f}, "
                          f"{summary['steps_per_s']:.2f} steps/s, data wait {summary['data_wait']:.1%}")
        _write_json(out / "train_summary.json", {
            "step": state.step, "held_out_loss": final, "processes": world,
            "this_run": summary, "this_run_after_first_step": timer.summary(skip=1)})
        if half is not None:
            pipe.vae.to(dtype=torch.float32)
            pipe.image_encoder.to(dtype=torch.float32)
        target = export(pipe, cfg, out)
        if target is not None:
            accelerator.print(f"{name}: model written to {target}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def hash_id(clip_id: str) -> int:
    return int.from_bytes(hashlib.sha1(clip_id.encode()).digest()[:4], "little")


def main(config: str | None, overrides: list[str], resume: bool) -> Path:
    """``stillmotion train diffusion CONFIG [key=value ...] [--resume]``."""
    cfg = load_config(DiffusionConfig, config, overrides)
    return train(cfg, resume)


if __name__ == "__main__":  # python -m stillmotion.training.diffusion CONFIG [key=value ...] [--resume]
    import sys

    args = sys.argv[1:]
    main(next((a for a in args if "=" not in a and not a.startswith("--")), None),
         [a for a in args if "=" in a], "--resume" in args)
