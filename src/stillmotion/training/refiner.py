"""Train the flow refinement model T: ``stillmotion train refiner CONFIG [key=value ...] [--resume]``.

pix2pix on motion fields (Isola et al. 2017): the U-Net ``FlowRefiner`` maps the Gaussian dense
field of a few arrows (+ image + mask) to the real motion field; a PatchGAN discriminator judges
concat(condition, field). Generator loss ``lambda_gan * GAN + lambda_l1 * L1 + lambda_epe * EPE``,
all on fields in network units (divided by the input's peak speed, see ``FlowRefiner``). GAN loss
``lsgan`` (least squares, as pix2pix's code defaults to for stability) or ``bce`` (the paper's
vanilla GAN), ``none`` trains with the reconstruction terms only.

Reads top to bottom: config, data, models, optimizers, resume, one loop (checkpoint, eval, log),
save. Output directory::

    OUTPUT/refiner/               FlowRefiner.save_pretrained (what the pipeline loads as <model>/refiner)
    OUTPUT/checkpoints/step-N/    exact-resume checkpoints (both models, both optimizers, RNG)
    OUTPUT/train_log.csv          per step: loss (generator total), loss_d, gan, l1, epe, lr, speed
    OUTPUT/eval_log.csv           held-out pairs: EPE/cosine of the dense input and of T's output
    OUTPUT/config.yaml            the resolved config

Exact resume: pair ``i`` is a pure function of (seed, i) and step ``s`` reads pairs
``[s * B, (s + 1) * B)``; the torch RNG (dropout) is re-seeded from (seed, step, rank) at every step.
So a resumed run computes exactly what the unbroken run computes. Multi-GPU: ``accelerate launch``;
each process draws its own slice of the global batch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from stillmotion.errors import UserInputError
from stillmotion.io.atomic import atomic_path
from stillmotion.motion.refiner import FlowRefiner, PatchDiscriminator, field_scale
from stillmotion.progress import progress_bar
from stillmotion.training.checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from stillmotion.training.config import config_to_dict, load_config
from stillmotion.training.refiner_data import (
    MotionSample,
    PairConfig,
    RefinerPairs,
    fixed_pairs,
    load_stylecinegan,
    load_video_fields,
    read_prepared_cache,
)
from stillmotion.training.runlog import BASE_FIELDS, CsvLog, StepTimer, start_output_dir


# ----------------------------------------------------------------------------------------- config
@dataclass
class RefinerConfig:
    # run
    output_dir: str = "runs/refiner"  # the refiner lands in OUTPUT/refiner
    seed: int = 0
    max_steps: int = 2000
    batch_size: int = 16  # global batch (split over processes under accelerate)
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    eval_every: int = 100
    log_every: int = 1
    num_workers: int = 0
    mixed_precision: str = "no"  # no | fp16 | bf16 (accelerate)
    torch_threads: int = 0  # CPU threads for torch; 0 = torch's default (1 helps on a busy machine)
    overwrite: bool = False
    init_from: str = ""  # a FlowRefiner directory to fine-tune instead of a fresh model
    # data: real motion fields
    stylecinegan_dir: str = ""  # folder of <id>/<id>_motion_fp16.npz; "" = none
    stylecinegan_ids: list[str] = field(default_factory=list)  # [] = every sample in the folder
    stylecinegan_speed: float = 1.0  # px/frame at 512 px of a |v| = 1 StyleCineGAN vector
    videos: list[str] = field(default_factory=list)  # video files or frame folders
    prepared: list[str] = field(default_factory=list)  # caches written by `stillmotion prepare`
    holdout: list[str] = field(default_factory=list)  # source names held out for eval (see below)
    clip_frames: int = 25
    clip_stride: int = 12
    video_max_side: int = 512
    field_cache: str = ""  # where video fields are cached between runs; "" = OUTPUT/field_cache
    eval_pairs: int = 16
    # pairs
    min_arrows: int = 1
    max_arrows: int = 8
    crop_min: float = 0.4
    hflip: float = 0.5
    vflip: float = 0.2
    drop_image: float = 0.3
    drop_mask: float = 0.3
    # model (FlowRefiner)
    sample_size: int = 256
    num_downs: int = 8
    base_channels: int = 64
    max_channels: int = 512
    use_image: bool = True
    use_mask: bool = True
    norm: str = "group"
    dropout: float = 0.5
    dropout_blocks: int = 3
    peak_normalize: bool = True
    flow_scale: float = 0.01
    # discriminator (PatchGAN)
    disc_channels: int = 64
    disc_layers: int = 3
    # optimisation
    lr: float = 5e-3  # the paper's value
    lr_disc: float = 0.0  # 0 = same as lr
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 0.01
    gan_loss: str = "lsgan"  # lsgan | bce | none
    lambda_gan: float = 1.0
    lambda_l1: float = 100.0
    lambda_epe: float = 0.0
    grad_clip: float = 0.0  # 0 = off

    def validate(self) -> None:
        if self.gan_loss not in ("lsgan", "bce", "none"):
            raise UserInputError(f"gan_loss must be lsgan, bce or none, got {self.gan_loss!r}")
        if self.max_steps < 1 or self.batch_size < 1:
            raise UserInputError("max_steps and batch_size must be >= 1")
        if not (1 <= self.min_arrows <= self.max_arrows):
            raise UserInputError(
                f"need 1 <= min_arrows <= max_arrows, got {self.min_arrows}, {self.max_arrows}"
            )
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UserInputError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")


def load_samples(cfg: RefinerConfig, progress: bool = False) -> tuple[list[MotionSample], list[MotionSample]]:
    """(train, held-out) real motion fields. A source is held out when its name or its last part
    (``0002268``, ``dyntex_flag_571c110``) is in ``cfg.holdout``."""
    samples: list[MotionSample] = []
    if cfg.stylecinegan_dir:
        samples += load_stylecinegan(
            cfg.stylecinegan_dir, ids=cfg.stylecinegan_ids or None, speed=cfg.stylecinegan_speed
        )
    for video in cfg.videos:
        samples += load_video_fields(
            video,
            clip_frames=cfg.clip_frames,
            stride=cfg.clip_stride,
            max_side=cfg.video_max_side,
            cache_dir=cfg.field_cache or Path(cfg.output_dir) / "field_cache",
            progress=progress,
        )
    for cache in cfg.prepared:
        samples += read_prepared_cache(cache, clip_frames=cfg.clip_frames)
    held = set(cfg.holdout)
    is_held = [s.source in held or s.source.rsplit("/", 1)[-1] in held for s in samples]
    unknown = held - {s.source for s in samples} - {s.source.rsplit("/", 1)[-1] for s in samples}
    if unknown:
        raise UserInputError(f"holdout names {sorted(unknown)} match no loaded source")
    train = [s for s, h in zip(samples, is_held, strict=True) if not h]
    test = [s for s, h in zip(samples, is_held, strict=True) if h]
    if not train:
        raise UserInputError("no training motion fields: set stylecinegan_dir, videos or prepared")
    return train, test


class StepSampler(torch.utils.data.Sampler):
    """Indices of this process's share of steps ``start_step, start_step + 1, ...`` (never ends)."""

    def __init__(self, start_step: int, per_process: int, rank: int, world: int):
        self.start, self.b, self.rank, self.world = start_step, per_process, rank, world

    def __iter__(self):
        step = self.start
        while True:
            base = (step * self.world + self.rank) * self.b
            yield from range(base, base + self.b)
            step += 1


def gan_criterion(kind: str, logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.mse_loss(logits, target)


def end_point_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(pred - target, dim=1).mean()


@torch.no_grad()
def field_metrics(pred: torch.Tensor, target: torch.Tensor, moving_fraction: float = 0.1) -> dict[str, float]:
    """EPE (units of the inputs), EPE relative to the mean real speed, and mean cosine.

    Pixels count where the real field moves (speed > ``moving_fraction`` of its sample's peak), the
    region arrows describe; there the cosine is mean cos(angle(pred, real)) (0 where pred is 0).
    """
    speed = torch.linalg.vector_norm(target, dim=1)  # (B, H, W)
    peak = speed.flatten(1).amax(1).view(-1, 1, 1)
    moving = speed > moving_fraction * peak
    err = torch.linalg.vector_norm(pred - target, dim=1)
    cos = (pred * target).sum(1) / (torch.linalg.vector_norm(pred, dim=1) * speed).clamp_min(1e-8)
    n = moving.sum().clamp_min(1)
    epe = float(err[moving].sum() / n)
    return {
        "epe": epe,
        "rel_epe": epe / max(float(speed[moving].sum() / n), 1e-8),
        "cosine": float(cos[moving].sum() / n),
    }


def evaluate(refiner: FlowRefiner, pairs: list[dict], device: torch.device) -> dict[str, float]:
    """Held-out metrics of T's output and of the raw dense input, in px/frame at the working size."""
    if not pairs:
        return {}
    batch = {k: torch.stack([p[k] for p in pairs]).to(device) for k in pairs[0]}
    was = refiner.training
    refiner.eval()
    with torch.no_grad():
        scale = field_scale(
            batch["input"], peak_normalize=refiner.config.peak_normalize, flow_scale=refiner.config.flow_scale
        )
        out = refiner(batch["input"] / scale, batch["image"], batch["mask"]).float() * scale
    refiner.train(was)
    ref, base = field_metrics(out, batch["target"]), field_metrics(batch["input"], batch["target"])
    return {**{f"refined_{k}": v for k, v in ref.items()}, **{f"dense_{k}": v for k, v in base.items()}}


def main(
    config: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    progress: bool = True,
) -> Path:
    # lazy: accelerate is an optional extra, imported only on this path
    from accelerate import Accelerator

    # ------------------------------------------------------------------ config and output folder
    cfg = load_config(RefinerConfig, config, list(overrides))
    out_dir = Path(cfg.output_dir)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    if cfg.batch_size % world:
        raise UserInputError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
    per_process = cfg.batch_size // world
    ckpt = (
        start_output_dir(out_dir, resume=resume, overwrite=cfg.overwrite)
        if accelerator.is_main_process
        else None
    )
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        ckpt = latest_checkpoint(out_dir) if resume else None
    torch.manual_seed(cfg.seed)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)

    # ------------------------------------------------------------------ data
    train_samples, test_samples = load_samples(cfg, progress=progress and accelerator.is_main_process)
    if accelerator.is_main_process:  # only once the data loaded: a data error leaves no output behind
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    pair_cfg = PairConfig(
        size=cfg.sample_size,
        min_arrows=cfg.min_arrows,
        max_arrows=cfg.max_arrows,
        crop_min=cfg.crop_min,
        hflip=cfg.hflip,
        vflip=cfg.vflip,
        drop_image=cfg.drop_image,
        drop_mask=cfg.drop_mask,
    )
    dataset = RefinerPairs(train_samples, pair_cfg, seed=cfg.seed)
    eval_pairs = (
        fixed_pairs(test_samples, pair_cfg, cfg.eval_pairs, seed=cfg.seed + 1) if test_samples else []
    )

    # ------------------------------------------------------------------ models and optimizers
    if cfg.init_from:
        refiner = FlowRefiner.from_pretrained(cfg.init_from)
    else:
        refiner = FlowRefiner(
            sample_size=cfg.sample_size,
            num_downs=cfg.num_downs,
            base_channels=cfg.base_channels,
            max_channels=cfg.max_channels,
            use_image=cfg.use_image,
            use_mask=cfg.use_mask,
            norm=cfg.norm,
            dropout=cfg.dropout,
            dropout_blocks=cfg.dropout_blocks,
            peak_normalize=cfg.peak_normalize,
            flow_scale=cfg.flow_scale,
        )
    cond_channels = refiner.network_input(torch.zeros(1, 2, 4, 4)).shape[1]
    disc = PatchDiscriminator(
        in_channels=cond_channels + 2,
        base_channels=cfg.disc_channels,
        num_layers=cfg.disc_layers,
        norm=cfg.norm,
    )
    betas = (cfg.beta1, cfg.beta2)
    opt_g = torch.optim.AdamW(refiner.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    opt_d = torch.optim.AdamW(
        disc.parameters(), lr=cfg.lr_disc or cfg.lr, betas=betas, weight_decay=cfg.weight_decay
    )
    state = TrainState()
    if ckpt is not None:
        state = load_checkpoint(
            ckpt,
            models={"refiner": refiner, "disc": disc},
            optimizers={"refiner": opt_g, "disc": opt_d},
            rank=rank,
        )
        if accelerator.is_main_process:
            print(f"resuming from {ckpt} (step {state.step})")
    refiner, disc, opt_g, opt_d = accelerator.prepare(refiner, disc, opt_g, opt_d)
    core = accelerator.unwrap_model(refiner)
    # The generator's adversarial term goes through the unwrapped discriminator: its parameters are
    # frozen then, and a DDP wrapper would wait for gradients that never come.
    disc_core = accelerator.unwrap_model(disc)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=per_process,
        sampler=StepSampler(state.step, per_process, rank, world),
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
    )
    batches = iter(loader)

    # ------------------------------------------------------------------ logs
    main_proc = accelerator.is_main_process
    resume_step = state.step if ckpt is not None else None
    log = CsvLog(
        out_dir / "train_log.csv",
        (*BASE_FIELDS, "loss_d", "gan", "l1", "epe"),
        resume_step=resume_step,
        enabled=main_proc,
    )
    eval_fields = ["step"] + [f"{w}_{m}" for w in ("refined", "dense") for m in ("epe", "rel_epe", "cosine")]
    eval_log = CsvLog(
        out_dir / "eval_log.csv", eval_fields, resume_step=resume_step, enabled=main_proc and bool(eval_pairs)
    )
    timer = StepTimer()
    bar = progress_bar(total=cfg.max_steps, desc="train refiner", enabled=progress and main_proc, unit="step")
    bar.update(state.step)
    use_gan = cfg.gan_loss != "none" and cfg.lambda_gan > 0

    # ------------------------------------------------------------------ the loop
    refiner.train()
    disc.train()
    while state.step < cfg.max_steps:
        step = state.step + 1
        # Dropout draws from the global RNG: seeding it per step makes a resumed step identical.
        torch.manual_seed((cfg.seed * 1_000_003 + step * 9_176 + rank * 7_919_317) % (2**63 - 1))
        batch = {k: v.to(device) for k, v in timer.fetch(batches).items()}
        scale = field_scale(
            batch["input"], peak_normalize=core.config.peak_normalize, flow_scale=core.config.flow_scale
        )
        x, y = batch["input"] / scale, batch["target"] / scale
        image, mask = batch["image"], batch["mask"]
        cond = core.network_input(x, image, mask)

        with accelerator.autocast():
            fake = refiner(x, image, mask)

        loss_d = torch.zeros((), device=device)
        if use_gan:  # discriminator step: real pairs -> 1, refined pairs -> 0
            disc.requires_grad_(True)
            opt_d.zero_grad(set_to_none=True)
            with accelerator.autocast():
                loss_d = 0.5 * (
                    gan_criterion(cfg.gan_loss, disc(cond, y), True)
                    + gan_criterion(cfg.gan_loss, disc(cond, fake.detach()), False)
                )
            accelerator.backward(loss_d)
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(disc.parameters(), cfg.grad_clip)
            opt_d.step()
            disc.requires_grad_(False)

        with accelerator.autocast():  # generator step
            gan = (
                gan_criterion(cfg.gan_loss, disc_core(cond, fake), True)
                if use_gan
                else torch.zeros((), device=device)
            )
            l1 = F.l1_loss(fake.float(), y)
            epe = end_point_error(fake.float(), y)
            loss = cfg.lambda_gan * gan + cfg.lambda_l1 * l1 + cfg.lambda_epe * epe
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        disc.requires_grad_(True)  # frozen only for the generator's backward; checkpoints save trainables
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(refiner.parameters(), cfg.grad_clip)
        opt_g.step()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"refiner loss became {float(loss)} at step {step}: lower lr (now {cfg.lr})")

        loss, loss_d, gan, l1, epe = (t.detach() for t in (loss, loss_d, gan, l1, epe))
        state.step = step
        state.samples_seen += cfg.batch_size
        steps_per_s, wait = timer.end_step()
        if step % cfg.log_every == 0:
            log.write(
                step=step,
                loss=float(loss),
                lr=cfg.lr,
                steps_per_s=steps_per_s,
                data_wait=wait,
                loss_d=float(loss_d),
                gan=float(gan),
                l1=float(l1),
                epe=float(epe),
            )
        bar.set_postfix(
            loss=f"{float(loss):.3f}", d=f"{float(loss_d):.3f}", sps=f"{steps_per_s:.2f}", refresh=False
        )
        bar.update(1)

        if eval_pairs and main_proc and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            metrics = evaluate(core, eval_pairs, device)
            eval_log.write(step=step, **metrics)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            accelerator.wait_for_everyone()
            if main_proc:
                save_checkpoint(
                    out_dir,
                    state,
                    models={"refiner": core, "disc": accelerator.unwrap_model(disc)},
                    optimizers={"refiner": opt_g, "disc": opt_d},
                    config=config_to_dict(cfg),
                    keep=cfg.keep_checkpoints,
                    world_size=world,
                )

    # ------------------------------------------------------------------ save the model
    bar.close()
    log.close()
    eval_log.close()
    accelerator.wait_for_everyone()
    if main_proc:
        with atomic_path(out_dir / "refiner", directory=True) as tmp:
            core.save_pretrained(tmp, safe_serialization=True)
        if eval_pairs:
            final = evaluate(core, eval_pairs, device)
            with atomic_path(out_dir / "refiner_metrics.json") as tmp:
                tmp.write_text(
                    json.dumps(
                        {
                            "step": state.step,
                            "held_out": sorted({s.source for s in test_samples}),
                            "pairs": len(eval_pairs),
                            **final,
                        },
                        indent=2,
                    )
                )
    return out_dir


if __name__ == "__main__":  # python -m stillmotion.training.refiner CONFIG [key=value ...] [--resume]
    import sys

    args = [a for a in sys.argv[1:] if a != "--resume"]
    conf = args[0] if args and "=" not in args[0] else None
    main(conf, args[1:] if conf else args, resume="--resume" in sys.argv)
