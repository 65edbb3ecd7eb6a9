"""Reproduce the bundled model ``stillmotion-tiny``: ``make train-tiny`` or ``python scripts/train_tiny.py``.

Run from the repository root of a checkout: it reads ``configs/``, writes ``runs/`` and the model
folders under ``src/stillmotion/assets/models/``, so it lives here rather than in the package.

Stages, in order (each prints the exact command it runs and its wall time; run one with ``--stage``):

1. ``data``: clip caches with ``stillmotion prepare`` (16 frames, 128x128):
   the DynTex videos (real motion; "free for research use", read from the data folder, never copied);
   the StyleCineGAN photos animated by the warp engine along their own real motion fields
   (``stillmotion animate --motion``, several speeds, frame folders) then cut by ``prepare``;
   the same photos and scikit-image's photos animated along random arrow fields
   (``prepare --synthetic``). Held out for ``benchmarks/bench_embedded.py``: StyleCineGAN
   ``HOLDOUT`` and every other image under ``images/`` (cinemagraphy3d, animating_landscape).
   Not used: dynca and two_stream_flames (CC BY-NC-SA / no licence: the shipped weights would derive
   from them).
2. ``refiner``: ``stillmotion train refiner configs/tiny_default_refiner.yaml``.
3. ``init``: the untrained pipeline of ``configs/tiny_default_model.yaml`` (SpaceToDepth autoencoder,
   UNet, tiny frozen CLIP encoder, zero-initialised motion modules) -> ``runs/tiny_default/init``.
4. ``diffusion``: ``stillmotion train diffusion configs/tiny_default.yaml``.
5. ``assemble``: trained pipeline + refiner T, weights cast to ``save_dtype`` (not the
   autoencoder's fixed basis), inference defaults in ``stillmotion_defaults.json`` ->
   ``src/stillmotion/assets/models/stillmotion-tiny``.

``--variant plain`` trains the plain tiny image-to-video model ``stillmotion-tiny-plain`` instead
(``make train-tiny-plain``): a stand-in for stock SVD at toy scale, with ``configs/tiny_plain.yaml``
(the same data, size and optimisation; motion modules never fed, left at zero; no warped conditioning;
no refiner). It reuses the data stage's caches and runs stages data, init, diffusion, assemble.

``key=value`` arguments after ``--`` are passed to both trainers' overrides only for trials
(e.g. ``-- max_steps=20``); the shipped weights come from the committed configs as they are.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "src" / "stillmotion" / "assets" / "models"
DATA_RUN = Path("runs/tiny_default")  # the clip caches every variant trains on
# variant -> (model folder, run folder, diffusion config, stages)
VARIANTS = {
    "default": ("stillmotion-tiny", Path("runs/tiny_default"), "configs/tiny_default.yaml",
                ("data", "refiner", "init", "diffusion", "assemble")),
    "plain": ("stillmotion-tiny-plain", Path("runs/tiny_plain"), "configs/tiny_plain.yaml",
              ("data", "init", "diffusion", "assemble")),
}
# The plain model starts from the bundled model's UNet (same architecture; its motion modules and warped
# conditioning are dropped) and is then trained as a plain image-to-video model: a from-scratch run needs
# ~1200 steps (docs/training.md), this one 400.
INIT_UNET = {"plain": MODELS / "stillmotion-tiny" / "unet"}
MODEL_DIR = MODELS / VARIANTS["default"][0]
RUN = VARIANTS["default"][1]
CONFIG = VARIANTS["default"][2]
MODEL_CONFIG = Path("configs/tiny_default_model.yaml")
HOLDOUT = ("0002268", "0000008")  # StyleCineGAN photos the model never sees (benchmark inputs)
SPEEDS = (4.0, 10.0)  # StyleCineGAN fields (|v| <= 1 px/frame at 512 px) -> up to 1 and 2.5 px/frame at 128
# Random-arrow clips: 3-14 px/frame at 512 px = 0.75-3.5 px/frame at 128. The default 0.5-4 gives
# 0.1-1 px/frame at 128, motion a 128-px model barely sees: after 200 steps it had learnt no control.
SYNTH_SPEED = "3,14"
SYNTH_CLIPS = "24"
STAGES = ("data", "refiner", "init", "diffusion", "assemble")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str]) -> None:
    """Run a stillmotion command, echoing it; a failure stops the whole recipe."""
    log("$ " + " ".join(cmd))
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    log(f"  done in {time.perf_counter() - started:.0f} s")


def stillmotion() -> list[str]:
    return [sys.executable, "-m", "stillmotion.cli"]


def model_config() -> dict:
    return yaml.safe_load(MODEL_CONFIG.read_text())


def stage_data(data: Path, mc: dict) -> None:
    size, frames = str(mc["resolution"]), str(mc["num_frames"])
    common = ["--frames", frames, "--size", size]
    out = DATA_RUN / "data"
    run(stillmotion() + ["prepare", str(data / "videos" / "dyntex"), "-o", str(out / "dyntex"), *common,
                         "--stride", "8"])
    # StyleCineGAN: the warp engine moves each training photo along its real field, at two speeds.
    scg = data / "images" / "stylecinegan"
    frames_root = out / "stylecinegan_frames"
    photos = out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for folder in sorted(p for p in scg.iterdir() if p.is_dir() and p.name not in HOLDOUT):
        sid = folder.name
        link = photos / f"{sid}.png"
        if not link.exists():
            link.symlink_to((folder / f"{sid}.png").resolve())
        for speed in SPEEDS:
            target = frames_root / f"{sid}_x{speed:g}"
            if len(list(target.glob("*.png"))) > int(frames):  # already rendered
                continue
            run(stillmotion() + ["animate", str(folder / f"{sid}.png"),
                                 "--motion", str(folder / f"{sid}_motion_fp16.npz"),
                                 "--mask", str(folder / f"{sid}_mask.png"),
                                 "--engine", "warp", "--no-loop", "--frames", str(int(frames) + 1), "--size",
                                 f"{size}x{size}", "--strength", f"{speed:g}", "-o", f"{target}/"])
    run(stillmotion() + ["prepare", str(frames_root), "-o", str(out / "stylecinegan"), *common])
    synth = ["--clips-per-photo", SYNTH_CLIPS, "--speed", SYNTH_SPEED]
    run(stillmotion() + ["prepare", "--synthetic", str(photos), "-o", str(out / "synth_photos"), *common,
                         *synth, "--seed", "1"])
    run(stillmotion() + ["prepare", "--synthetic", "skimage", "-o", str(out / "synth_skimage"), *common,
                         *synth, "--seed", "2"])


def stage_refiner(data: Path, overrides: list[str]) -> None:
    scg = data / "images" / "stylecinegan"
    videos = [str(data / "videos" / "dyntex" / n) for n in
              ("dyntex_fountain_6486110.avi", "dyntex_flag_571c110.avi", "campfire_pot_fire.avi")]
    run(stillmotion() + ["train", "refiner", "configs/tiny_default_refiner.yaml", f"stylecinegan_dir={scg}",
                         f"videos={json.dumps(videos)}", *overrides])


def training_frames(caches: list[Path], *, batch: int = 64):
    """Pixel batches ``[N, 3, H, W]`` in [-1, 1]: the first and the last frame of every cached clip."""
    from stillmotion.diffusion.warp_condition import to_pixels
    from stillmotion.training.cache import ClipCache

    pending = []
    for path in caches:
        cache = ClipCache(path)
        for i in range(len(cache)):
            clip = cache.read(i, "frames")
            pending += [clip[0], clip[-1]]
            if len(pending) >= batch:
                yield to_pixels(np.stack(pending))
                pending = []
    if pending:
        yield to_pixels(np.stack(pending))


def build_init(mc: dict, target: Path, caches: list[Path] | None = None,
               unet_from: Path | None = None) -> Path:
    """The untrained pipeline of ``mc`` (configs/tiny_default_model.yaml) saved to ``target``; with
    ``latent_normalization: per_channel`` the autoencoder's channel statistics come from ``caches``.
    ``unet_from`` (a saved UNet folder of the same architecture) replaces the random UNet weights; the
    motion modules are new and zero either way."""
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    from stillmotion.diffusion.autoencoder import SpaceToDepthAutoencoder, latent_statistics
    from stillmotion.diffusion.motion_adapter import MotionAdapter
    from stillmotion.diffusion.motion_encoder import MotionEncoder
    from stillmotion.diffusion.pipeline import StillMotionPipeline
    from stillmotion.diffusion.tiny import svd_scheduler, tiny_image_encoder

    seed, u = int(mc["seed"]), mc["unet"]
    vae = SpaceToDepthAutoencoder(downscale_factor=int(mc["downscale_factor"]),
                                  latent_channels=mc.get("latent_channels"),
                                  scaling_factor=mc.get("latent_scaling"))
    norm = mc.get("latent_normalization")
    if norm not in (None, "none", "per_channel"):
        raise ValueError(f"latent_normalization must be none or per_channel, got {norm!r}")
    if norm == "per_channel":
        if not caches:
            raise ValueError(
                "latent_normalization per_channel needs the training clip caches (run the data stage)"
            )
        mean, std = latent_statistics(vae, training_frames(caches))
        vae = SpaceToDepthAutoencoder(downscale_factor=vae.config.downscale_factor,
                                      latent_channels=vae.config.latent_channels,
                                      scaling_factor=vae.config.scaling_factor,
                                      latents_mean=mean, latents_std=std)
        log(f"autoencoder channel statistics from {len(caches)} caches: DC std {std[0]:.3f}, "
            f"finest kept std {min(std):.4f}")
    channels = vae.config.latent_channels
    levels = len(u["block_out_channels"])
    down = ("CrossAttnDownBlockSpatioTemporal",) * (levels - 1) + ("DownBlockSpatioTemporal",)
    up = ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (levels - 1)
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=int(mc["resolution"]) // int(mc["downscale_factor"]),
        in_channels=2 * channels,
        out_channels=channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(u["block_out_channels"]),
        addition_time_embed_dim=int(u["addition_time_embed_dim"]),
        projection_class_embeddings_input_dim=3 * int(u["addition_time_embed_dim"]),
        layers_per_block=int(u["layers_per_block"]),
        cross_attention_dim=int(u["cross_attention_dim"]),
        num_attention_heads=int(u["num_attention_heads"]),
        num_frames=int(mc["num_frames"]),
    )
    if unet_from is not None:
        trained = UNetSpatioTemporalConditionModel.from_pretrained(unet_from, torch_dtype=torch.float32)
        unet.load_state_dict(trained.state_dict())  # strict: the architecture must be the same
    image_encoder, feature_extractor = tiny_image_encoder(seed + 1)
    if image_encoder.config.projection_dim != int(u["cross_attention_dim"]):
        raise ValueError("unet.cross_attention_dim must equal the tiny CLIP encoder's projection_dim (32)")
    torch.manual_seed(seed + 3)
    encoder = MotionEncoder.for_unet(unet, base_channels=int(mc["motion_encoder_base_channels"]),
                                     input_downsample=1)
    adapter = MotionAdapter.from_unet(unet, encoder)
    scheduler = svd_scheduler()
    if mc.get("sigma_max") is not None:
        scheduler.register_to_config(sigma_max=float(mc["sigma_max"]))
    pipe = StillMotionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler,
                               feature_extractor=feature_extractor, motion_encoder=encoder,
                               motion_adapter=adapter)
    pipe.save_pretrained(target)
    return target


def stage_init(mc: dict, unet_from: Path | None = None) -> None:
    target = RUN / "init"
    log(f"build the untrained pipeline of {MODEL_CONFIG} -> {target}"
        + (f" (UNet weights from {unet_from})" if unet_from else ""))
    caches = [Path(p) for p in yaml.safe_load(Path(CONFIG).read_text())["data"]]
    build_init(mc, target, caches, unet_from=unet_from)


def stage_diffusion(overrides: list[str]) -> None:
    run(stillmotion() + ["train", "diffusion", CONFIG, *overrides])


def assemble(trained: Path, refiner: Path | None, mc: dict, target: Path) -> Path:
    """Trained pipeline (+ refiner) -> the bundled model folder, weights in ``save_dtype``."""
    import torch

    from stillmotion.diffusion.pipeline import StillMotionPipeline
    from stillmotion.motion.refiner import FlowRefiner

    pipe = StillMotionPipeline.from_pretrained(trained)
    if refiner is not None and (refiner / "config.json").is_file():
        pipe.register_modules(refiner=FlowRefiner.from_pretrained(refiner))
    dtype = getattr(torch, mc.get("save_dtype", "float32"))
    for name in ("unet", "image_encoder", "motion_encoder", "motion_adapter", "refiner"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.to(dtype)  # the autoencoder keeps its float32 basis: it is what makes it lossless
    pipe.save_pretrained(target)
    (target / "stillmotion_defaults.json").write_text(json.dumps(mc["defaults"], indent=2) + "\n")
    return target


def stage_assemble(mc: dict) -> None:
    tmp = MODEL_DIR.with_name(MODEL_DIR.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    assemble(RUN / "diffusion" / "model", RUN / "refiner" / "refiner", mc, tmp)  # plain: no refiner there
    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    tmp.rename(MODEL_DIR)
    size = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    log(f"bundled model written to {MODEL_DIR} ({size / 1e6:.1f} MB)")
    if size > 25e6:
        raise SystemExit(f"the bundled model is {size / 1e6:.1f} MB, over the 25 MB limit")


def main(argv: list[str] | None = None) -> None:
    global MODEL_DIR, RUN, CONFIG
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--stage", choices=STAGES + ("all",), default="all")
    parser.add_argument("--variant", choices=tuple(VARIANTS), default="default",
                        help="default: the bundled stillmotion-tiny; plain: stillmotion-tiny-plain "
                        "(motion modules left at zero)")
    parser.add_argument("overrides", nargs="*", help="key=value for both trainers (trials only)")
    args = parser.parse_args(argv)
    if not (args.data / "videos" / "dyntex").is_dir():
        raise SystemExit(f"data folder {args.data} has no videos/dyntex (pass --data)")
    name, RUN, CONFIG, stages = VARIANTS[args.variant]
    MODEL_DIR = MODELS / name
    if args.stage not in stages + ("all",):
        raise SystemExit(f"variant {args.variant} has no stage {args.stage} "
                         f"(its stages: {', '.join(stages)})")
    mc = model_config()
    started = time.perf_counter()
    log(f"make train-tiny: variant {args.variant}, stage {args.stage}, data {args.data}, "
        f"overrides {args.overrides or 'none'}")
    for stage in stages if args.stage == "all" else (args.stage,):
        t = time.perf_counter()
        log(f"=== stage {stage}")
        if stage == "data":
            stage_data(args.data, mc)
        elif stage == "refiner":
            stage_refiner(args.data, args.overrides)
        elif stage == "init":
            stage_init(mc, INIT_UNET.get(args.variant))
        elif stage == "diffusion":
            stage_diffusion(args.overrides)
        else:
            stage_assemble(mc)
        log(f"=== stage {stage} took {time.perf_counter() - t:.0f} s")
    log(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
