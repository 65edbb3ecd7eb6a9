"""``stillmotion animate``: a still image plus arrows (or a motion field) -> a video file."""

from __future__ import annotations

from pathlib import Path

import click

from stillmotion.api import animate_to_file, parse_size
from stillmotion.cli.options import finite, scene_options
from stillmotion.engines.registry import engine_names, get_engine

_ENGINE_HELP = (
    "warp: Eulerian animation with softmax splatting (Holynski et al. 2021), no weights, fast on a CPU, "
    "seamless loops. diffusion: a video diffusion model: the motion-conditioned SVD model (--model, or the "
    "bundled one) or a Wan 2.1 / 2.2 image-to-video folder in diffusers' layout (--model; text prompt, "
    "no motion control yet). Options below say which backbone they apply to: 'diffusion' both, 'svd' or "
    "'wan' one."
)


@click.command(
    "animate",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Examples:\n\n\b\n"
    "  stillmotion animate photo.jpg --arrows arrows.json --mask mask.png -o loop.mp4\n"
    "  stillmotion animate photo.jpg --motion field.npz --frames 150 --strength 2 -o loop.webp\n"
    "  stillmotion animate photo.jpg --arrow 100,200,160,210 --no-loop --frames 48 -o frames/\n",
)
@click.argument("image", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=str,
    metavar="OUT",
    help="Output: .mp4 (H.264, plays in browsers), .gif, .webp (animated), or a folder of PNG frames "
    "(a path ending with '/' or without an extension).",
)
@click.option(
    "--engine", type=click.Choice(list(engine_names())), default="warp", show_default=True, help=_ENGINE_HELP
)
@scene_options
@click.option(
    "--motion",
    "motion_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Animate this motion field instead of arrows: .npy/.npz ((H,W,2), (2,H,W) or (1,2,H,W); npz key "
    "'motion', 'flow' or 'field') or .flo. Values are pixels per frame on the file's own grid; resizing to "
    "the image scales them (StyleCineGAN's normalised fields thus move <= 1 px/frame at 512 px). A sequence "
    "(F,H,W,2), e.g. `stillmotion flow VIDEO -o flows.npz`, moves each frame step along its own field "
    "(a real video's motion; the last field repeats; warp: with --no-loop).",
)
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=None,
    help="Number of frames (for a loop: its period). Default 90 (warp), 25 (diffusion).",
)
@click.option(
    "--fps",
    type=finite(0, 1000, min_open=True),
    default=None,
    help="Frames per second of the video. Default 30 (warp), 8 (diffusion).",
)
@click.option(
    "--strength",
    type=finite(0, 1e4),
    default=1.0,
    show_default=True,
    help="Speed factor: multiplies the motion field (both engines; diffusion measures M_s on the result).",
)
@click.option(
    "--loop/--no-loop",
    default=True,
    show_default=True,
    help="warp (and diffusion's warp-guided reference): symmetric splatting for a seamless loop (frame N "
    "equals frame 0), or plain forward motion.",
)
@click.option(
    "--size",
    "size_text",
    metavar="WxH",
    default=None,
    help="Resize the image (and mask, arrows, field with it) to W x H pixels before animating.",
)
@click.option(
    "--save-motion",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FIELD.png",
    help="Also write the motion field as a colour-wheel picture (hue = direction, saturation = speed).",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    default=None,
    metavar="REPORT.json",
    help="Write a JSON report: engine, frames, width, height, fps, seconds_total, seconds_render, "
    "seconds_encode, peak_memory_mb and the engine's own figures.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    default=False,
    help="Replace an existing PNG-frames folder -o even when it holds files stillmotion did not write "
    "(by default only an empty folder or one holding nothing but frame_*.png is replaced).",
)
@click.option(
    "--model",
    default=None,
    metavar="DIR_OR_ID",
    help="diffusion: model directory or Hugging Face id (local files or the HF cache only): a StillMotion or "
    "SVD img2vid folder, or a Wan image-to-video one (Wan2.1-I2V-14B-480P/720P-Diffusers, "
    "Wan2.2-I2V-A14B-Diffusers, Wan2.2-TI2V-5B-Diffusers; recognised from model_index.json); or 'bundled' "
    "(the default when present) or 'plain' (the plain tiny image-to-video model, untrained motion modules).",
)
@click.option(
    "--control",
    type=click.Choice(["auto", "trained", "warp-guided", "none"]),
    default="auto",
    show_default=True,
    help="diffusion: what makes the arrows steer the model. trained: its motion modules; warp-guided: the "
    "warp engine's animation guides the sampler (any image-to-video model, e.g. stock SVD, no training; "
    "--loop/--no-loop picks a loop or forward motion); none: plain image-to-video, arrows ignored; auto: "
    "trained when the model's motion modules are trained, else warp-guided.",
)
@click.option(
    "--follow",
    type=click.FloatRange(0, 1),
    default=None,
    help="diffusion, warp-guided: how closely the motion follows the arrows, 0-1: the share of the steps "
    "the moving region is held to the warp (0: only the start; 1: exactly the warp). Default 0.75.",
)
@click.option(
    "--freedom",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="diffusion, warp-guided: how free the rest of the frame is, 0-1: the share of the denoising run "
    "(1: from pure noise, the model invents freely; low: stays close to the warp). Default 0.45.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="diffusion: denoising steps (default: svd 25, wan 40).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="diffusion: random seed.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="diffusion: where to run (auto: CUDA when available).",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
    help="diffusion: number format (auto: on CUDA fp16 for svd, bf16 for wan; fp32 on CPU; wan's VAE "
    "always fp32).",
)
@click.option("--offload", is_flag=True, default=False, help="diffusion: model CPU offload for small GPUs.")
@click.option(
    "--refine/--no-refine",
    default=True,
    show_default=True,
    help="svd: refine the arrow field with the refinement model T when its weights exist.",
)
@click.option(
    "--long-method",
    type=click.Choice(["phased", "direct", "freenoise", "gen-l-video"]),
    default=None,
    help="diffusion: how videos longer than one clip are made (default phased).",
)
@click.option(
    "--gamma",
    type=finite(0, 1),
    default=0.8,
    show_default=True,
    help="diffusion, phased: share of the steps later segments reuse from the first.",
)
@click.option(
    "--omega",
    type=finite(0, 1e4),
    default=0.2,
    show_default=True,
    help="diffusion, phased: weight of the shared noise reschedule n + omega * eps.",
)
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=None,
    help="diffusion, phased: frames each segment shares with the previous one, cross-faded "
    "(default 1: one hard anchor frame; 5 video frames under warp-guided control and for a model "
    "continuing its own motion; 0 = plain cut).",
)
@click.option(
    "--branch-sigma",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="diffusion, phased: later segments branch off at this noise level instead of at --gamma's step.",
)
@click.option(
    "--carry",
    type=click.Choice(["motion", "reference", "appearance", "own", "copy"]),
    default="motion",
    show_default=True,
    help="diffusion, phased: how later segments continue the first: whichever fits the model (motion: "
    "reference under warp-guided control, appearance for a model with trained motion input, own without "
    "motion input), along the motion reference with the first segment's per-frame difference from it "
    "(reference), the motion reference with only its mean difference, moved along (appearance: none of "
    "the model's per-frame jitter replayed), the model's own motion from where the previous segment "
    "ended (own), or (copy) the first as it is (the paper's literal variant).",
)
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    default=None,
    help="diffusion, freenoise / gen-l-video: window stride (default L // 4).",
)
@click.option(
    "--prompt",
    default=None,
    help="wan: text prompt (default: a prompt asking for natural motion and a still camera).",
)
@click.option(
    "--negative-prompt", default=None, help="wan: negative prompt (default: static, flicker, blur, ...)."
)
@click.option(
    "--guidance",
    type=click.FloatRange(min=0),
    default=None,
    help="wan: classifier-free guidance scale (default 5; Wan 2.2 A14B 3.5; <= 1: no guidance).",
)
@click.option(
    "--guidance-2",
    type=click.FloatRange(min=0),
    default=None,
    help="wan 2.2 A14B: guidance of the low-noise expert (default: --guidance).",
)
@click.option(
    "--flow-shift",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="wan: flow-matching time shift (default: the model's scheduler config).",
)
@click.option(
    "--vae-tiling", is_flag=True, default=False, help="wan: decode in spatial tiles (less GPU memory)."
)
def animate(
    image: Path,
    output: str,
    engine: str,
    arrow: tuple[str, ...],
    arrows_file: Path | None,
    mask: Path | None,
    motion_file: Path | None,
    frames: int | None,
    fps: float | None,
    strength: float,
    loop: bool,
    size_text: str | None,
    save_motion: Path | None,
    report: Path | None,
    overwrite: bool,
    model: str | None,
    control: str,
    follow: float | None,
    freedom: float | None,
    steps: int | None,
    seed: int,
    device: str,
    dtype: str,
    offload: bool,
    refine: bool,
    long_method: str | None,
    gamma: float,
    omega: float,
    overlap: int | None,
    branch_sigma: float | None,
    carry: str,
    stride: int | None,
    prompt: str | None,
    negative_prompt: str | None,
    guidance: float | None,
    guidance_2: float | None,
    flow_shift: float | None,
    vae_tiling: bool,
) -> None:
    """Animate IMAGE along arrows (or a given motion field) and write the video to --output.

    Arrows: --arrow X0,Y0,X1,Y1[,STRENGTH] (repeatable) or --arrows FILE; the content under an arrow's
    tail reaches its head after 25 frames at strength 1. Pixels outside --mask never change.
    """
    size = parse_size(size_text) if size_text is not None else None
    given = dict(
        model=model, steps=steps, seed=seed, device=device, dtype=dtype, offload=offload,
        refine=refine, long_method=long_method, gamma=gamma, omega=omega, overlap=overlap,
        branch_sigma=branch_sigma, carry=carry, stride=stride,
        control=control, follow=follow, freedom=freedom,
    )  # fmt: skip
    wan = dict(prompt=prompt, negative_prompt=negative_prompt, guidance=guidance, guidance_2=guidance_2,
               flow_shift=flow_shift, vae_tiling=vae_tiling or None)  # fmt: skip
    given.update({k: v for k, v in wan.items() if v is not None})
    takes = get_engine(engine).options  # the options the chosen engine takes (the warp engine: none)
    engine_options = {k: v for k, v in given.items() if k in takes}
    result = animate_to_file(
        image, output, arrow, arrows_file=arrows_file, mask=mask, motion=motion_file, engine=engine,
        frames=frames, fps=fps, strength=strength, loop=loop, size=size, save_motion=save_motion,
        report=report, progress=True, overwrite=overwrite, **engine_options,
    )  # fmt: skip
    fps_render = result["frames"] / result["seconds_render"] if result["seconds_render"] > 0 else float("inf")
    click.echo(
        f"wrote {result['output']}: {result['frames']} frames, {result['width']}x{result['height']} at "
        f"{result['fps']:g} fps (render {result['seconds_render']:.2f} s = {fps_render:.1f} frames/s, "
        f"encode {result['seconds_encode']:.2f} s, total {result['seconds_total']:.2f} s)",
        err=True,
    )
