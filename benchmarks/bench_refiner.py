"""How much closer to real motion does the refinement model T bring the Gaussian arrow field?

On real motion fields that T never saw in training (by default the StyleCineGAN sample 0002268 and
the DynTex flag video's clip-mean DIS flow), arrows are drawn as in training (1-8 arrows at fast
points, vector x 24 steps), and at the field's full resolution we compare against the real field:

  (a) the raw dense field ``dense_flow_from_arrows(arrows, W, H, mask=mask)`` (paper eqs. 5-7)
  (b) ``FlowRefiner.refine(dense, image, mask)`` (the path the diffusion pipeline runs)

Metrics over the pixels where the real field moves (> 10% of its peak speed): EPE (px/frame),
EPE relative to the mean real speed there, and the mean cosine between the vectors.

    python benchmarks/bench_refiner.py --model runs/refiner_tiny/refiner
    python benchmarks/bench_refiner.py --model DIR --draws 8 --no-mask
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from stillmotion.motion.dense import dense_flow_from_arrows
from stillmotion.motion.refiner import FlowRefiner
from stillmotion.training.refiner_data import load_stylecinegan, load_video_fields, sample_arrows

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def metrics(pred: np.ndarray, real: np.ndarray, moving_fraction: float = 0.1) -> tuple[float, float, float]:
    speed = np.hypot(real[..., 0], real[..., 1])
    moving = speed > moving_fraction * speed.max()
    err = np.hypot(*(pred - real).transpose(2, 0, 1))[moving]
    norm = np.hypot(pred[..., 0], pred[..., 1])[moving] * speed[moving]
    cos = np.where(norm > 1e-12, (pred * real).sum(-1)[moving] / np.maximum(norm, 1e-12), 0.0)
    return float(err.mean()), float(err.mean() / speed[moving].mean()), float(cos.mean())


def row(name: str, n: int, m: np.ndarray) -> str:
    return f"{name:32s} {n:3d} | {m[0]:9.3f} {m[3]:9.3f} | {m[1]:12.3f} {m[4]:9.3f} | {m[2]:9.3f} {m[5]:7.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="FlowRefiner directory (e.g. runs/refiner_tiny/refiner)")
    ap.add_argument("--stylecinegan", default=str(DATA / "images" / "stylecinegan"))
    ap.add_argument("--ids", nargs="*", default=["0002268"], help="held-out StyleCineGAN ids")
    ap.add_argument(
        "--videos", nargs="*", default=[str(DATA / "videos" / "dyntex" / "dyntex_flag_571c110.avi")]
    )
    ap.add_argument("--clip-every", type=int, default=4, help="use every k-th clip of a video")
    ap.add_argument("--draws", type=int, default=6, help="arrow sets drawn per field")
    ap.add_argument("--no-mask", action="store_true", help="give T (and the dense field) no mask")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--field-cache", default=None, help="reuse cached video fields (runs/field_cache)")
    args = ap.parse_args()

    model = FlowRefiner.from_pretrained(args.model).eval()
    samples = load_stylecinegan(args.stylecinegan, ids=args.ids) if args.ids else []
    for video in args.videos:
        samples += load_video_fields(video, cache_dir=args.field_cache)[:: args.clip_every]
    print(
        f"model {args.model}: sample_size {model.config.sample_size}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters"
    )
    mask_note = "off" if args.no_mask else "on"
    print(f"{len(samples)} held-out fields, {args.draws} arrow draws each, mask {mask_note}")

    rows: dict[str, list] = {}
    refine_time = 0.0
    calls = 0
    for si, s in enumerate(samples):
        h, w = s.field.shape[:2]
        mask = None if args.no_mask else s.mask
        for d in range(args.draws):
            rng = np.random.default_rng([args.seed, si, d])
            arrows = sample_arrows(s.field, s.mask, rng)
            dense = dense_flow_from_arrows(arrows, w, h, mask=mask)
            t = time.perf_counter()
            refined = model.refine(dense, s.image, mask)
            refine_time += time.perf_counter() - t
            calls += 1
            rows.setdefault(s.source, []).append((*metrics(dense, s.field), *metrics(refined, s.field)))

    print()
    header = (
        f"{'held-out source':32s} {'n':>3s} | {'EPE dense':>9s} {'EPE T':>9s} | {'relEPE dense':>12s} "
        f"{'relEPE T':>9s} | {'cos dense':>9s} {'cos T':>7s}"
    )
    print(header)
    print("-" * len(header))
    everything = []
    for source, vals in rows.items():
        v = np.asarray(vals)
        everything.append(v)
        m = v.mean(0)
        print(row(source, len(v), m))
    m = np.concatenate(everything).mean(0)
    print(row("all", sum(len(v) for v in everything), m))
    print(f"\nrefine(): {1000 * refine_time / max(calls, 1):.1f} ms per call (resize + U-Net + resize back)")


if __name__ == "__main__":
    main()
