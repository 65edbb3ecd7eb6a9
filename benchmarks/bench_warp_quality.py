"""Warp engine quality on real photos: detail kept, arrows followed, seamless, still pixels exact,
and forward motion that keeps flowing; the engine of an earlier revision alongside.

    .venv/bin/python benchmarks/bench_warp_quality.py                      # everything below
    .venv/bin/python benchmarks/bench_warp_quality.py --quick              # fewer photos and frames
    .venv/bin/python benchmarks/bench_warp_quality.py --picture docs/images/warp-quality.png
    .venv/bin/python benchmarks/bench_warp_quality.py --spacing    # trace nodes 1 vs 2 px at 512x512

Inputs (each a 125-frame seamless loop unless ``--frames``):

- the bundled example (``src/stillmotion/assets/examples/waterfall.jpg``, 640x360, its arrows and mask);
- the shared StyleCineGAN photos (``../shared/data/images/stylecinegan/<id>``, 1024x1024, their own
  mask and Eulerian motion field, |v| = 1 taken as ``--speed`` px/frame at 1024 px);
- a 1920x1080 photo: there is none in the shared data, so the cinemagraphy3d waterfall (1280x720,
  five user-drawn arrows and a mask) is upscaled to 1920x1080 (Lanczos), arrows and mask with it.

Figures per input and engine: **detail**, the Laplacian energy of each frame's moving region (the
mask eroded by 7 px, grey levels) relative to the photo's, min and median over frames 1..N-1;
**DIS cosine**, the median cosine between OpenCV DIS optical flow of consecutive frames (mean over
every 5th pair) and the field, where the field is faster than half its maximum; **closure**,
frame N equals frame 0 bit for bit; **still exact**, every frame equals the photo outside the mask.

Stretched areas (the bundled example, frame N/2): the region where both of a loop's branches
magnify the photo (each map's smaller Jacobian singular value below 0.5, smoothed by 2 px; the
maps traced here independently of any engine, within the eroded mask). Printed per engine:
**periodicity**, the largest normalised autocorrelation of the frame's Laplacian at lags of 2-8
px within that region (a ladder or stair pattern repeats: high; the photo's own texture: low);
**coherence**, the median structure-tensor coherence there (0: isotropic, 1: all gradients
one way, streaks); **Laplacian energy** there relative to the photo's in the same region (above
1: edges the photo does not have). ``--before`` names the revision of the previous renderer
(before its ladder fix), timed alongside.

Forward motion: the cinemagraphy3d waterfall at 176x176 with its first two arrows, 125 and 500
frames (not a loop): the along-arrow speed of DIS flow within 6 px of each arrow's tail, mean per
third of the video, its ratio to the first third, and the number of frame steps whose along-arrow
speed is negative (backward steps).

The earlier engine is loaded from the git revision ``--baseline`` (default: the last commit with
the splatting engine) by ``git show``; pass ``--baseline none`` to skip it.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stillmotion.evaluation import warp_quality  # noqa: E402
from stillmotion.inputs.arrows import Arrow  # noqa: E402
from stillmotion.inputs.scene import load_scene  # noqa: E402
from stillmotion.motion.dense import dense_flow_from_arrows  # noqa: E402
from stillmotion.motion.eulerian import EulerianWarp  # noqa: E402

# the shared data sit next to the checkout (../shared/data), or next to the folder of worktrees
SHARED = next(
    (p / "shared" / "data" / "images" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared").is_dir()),
    ROOT.parent / "shared" / "data" / "images",
)
EXAMPLES = ROOT / "src" / "stillmotion" / "assets" / "examples"
FORWARD_BEFORE = "163f2d5"  # forward motion's restarts jumped (detail weighting, scatter switching on)
BASELINE = "25cc021"  # the splatting engine (bilinear softmax splatting, push-pull holes)
BEFORE = "06feea4"  # the gather renderer before its blend weights moved to cells (ladders at N/2)


def load_baseline(rev: str):
    """The ``EulerianWarp`` class of revision ``rev``, imported from ``git show`` into a temp package."""
    files = ("render.py", "kernels.py", "holes.py")  # holes.py: the splatting engine only
    package = "baseline_" + rev.replace("-", "_")
    tmp = Path(tempfile.mkdtemp(prefix="warp_baseline_")) / package
    tmp.mkdir()
    for name in files:
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:src/stillmotion/motion/eulerian/{name}"],
            capture_output=True, text=True,
        )  # fmt: skip
        if shown.returncode and name == "holes.py":
            continue
        if shown.returncode:  # a revision this clone lacks (or a typo): say which, no traceback
            print(f"Error: no warp renderer at git revision {rev!r} in {ROOT}: {shown.stderr.strip()}",
                  file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
        text = shown.stdout
        (tmp / name).write_text(text.replace("stillmotion.motion.eulerian", package))
    (tmp / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp.parent))
    spec = importlib.util.find_spec(f"{package}.render")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EulerianWarp


# ------------------------------------------------------------------------------------------ inputs
def scaled_arrows(arrows: list[Arrow], sx: float, sy: float) -> list[Arrow]:
    return [Arrow(points=tuple((x * sx, y * sy) for x, y in a.points), strength=a.strength, name=a.name)
            for a in arrows]  # fmt: skip


def bundled() -> dict:
    scene = load_scene(EXAMPLES / "waterfall.jpg", arrows_file=EXAMPLES / "waterfall_arrows.json")
    field = dense_flow_from_arrows(scene.arrows, scene.width, scene.height, mask=scene.mask)
    return {"name": "bundled waterfall 640x360", "image": scene.image, "field": field, "mask": scene.mask}


def hd_waterfall(width: int = 1920, height: int = 1080) -> dict | None:
    folder = SHARED / "cinemagraphy3d"
    if not (folder / "0_waterfall.png").is_file():
        return None
    scene = load_scene(folder / "0_waterfall.png", arrows_file=folder / "0_labelme.json")
    image = cv2.resize(scene.image, (width, height), interpolation=cv2.INTER_LANCZOS4)
    mask = cv2.resize(scene.mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    arrows = scaled_arrows(scene.arrows, width / scene.width, height / scene.height)
    field = dense_flow_from_arrows(arrows, width, height, mask=mask)
    return {"name": f"waterfall upscaled to {width}x{height}", "image": image, "field": field, "mask": mask,
            "arrows": arrows}  # fmt: skip


def stylecinegan(speed: float, ids: list[str] | None = None) -> list[dict]:
    folder = SHARED / "stylecinegan"
    out = []
    for path in sorted(folder.glob("*/*_motion_fp16.npz")):
        sid = path.parent.name
        if ids and sid not in ids:
            continue
        image = cv2.cvtColor(cv2.imread(str(path.parent / f"{sid}.png")), cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        mask = cv2.resize(cv2.imread(str(path.parent / f"{sid}_mask.png"), 0), (w, h)) > 127
        with np.load(path) as data:
            motion = data["motion"][0].astype(np.float32).transpose(1, 2, 0)
        field = cv2.resize(motion, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(speed * w / 1024)
        field[~mask] = 0
        out.append({"name": f"StyleCineGAN {sid} {w}x{h}", "image": image, "field": field, "mask": mask})
    return out


# ----------------------------------------------------------------------------------------- metrics
def laplacian_energy(frame: np.ndarray, region: np.ndarray) -> float:
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float((cv2.Laplacian(grey, cv2.CV_32F)[region] ** 2).mean())


def stretched_region(item: dict, frames: int) -> np.ndarray:
    """Where both branches of frame N/2 magnify the photo (smaller singular value < 0.5)."""
    return warp_quality.stretched_region(item["field"], item["mask"], frames)


def periodicity(frame: np.ndarray, region: np.ndarray, lags: tuple[int, int] = (2, 8)) -> float:
    """The largest normalised autocorrelation of the Laplacian within ``region`` at distances
    lags[0]..lags[1] px (over shifts where at least a quarter of the region overlaps itself)."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = cv2.Laplacian(grey, cv2.CV_32F) * region
    h, w = region.shape
    size = (2 * h, 2 * w)  # zero-padded: no wrap-around
    spec, spec_m = np.fft.rfft2(lap, size), np.fft.rfft2(region.astype(np.float32), size)
    corr = np.fft.irfft2(spec * np.conj(spec), size)
    pairs = np.fft.irfft2(spec_m * np.conj(spec_m), size)
    corr = corr / np.maximum(pairs, 1.0)
    corr /= corr[0, 0]
    dy = np.minimum(np.arange(size[0]), size[0] - np.arange(size[0]))[:, None]
    dx = np.minimum(np.arange(size[1]), size[1] - np.arange(size[1]))[None]
    radius = np.hypot(dy, dx)
    ring = (radius >= lags[0]) & (radius <= lags[1]) & (pairs > 0.25 * pairs[0, 0])
    return float(corr[ring].max())


def coherence(frame: np.ndarray, region: np.ndarray) -> float:
    """Median structure-tensor coherence ((l1 - l2) / (l1 + l2), tensor smoothed by 3 px) in ``region``."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    jxx, jyy, jxy = (cv2.GaussianBlur(v, (0, 0), 3) for v in (gx * gx, gy * gy, gx * gy))
    spread = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2)
    return float(np.median((spread / np.maximum(jxx + jyy, 1e-6))[region]))


def measure(engine, item: dict, frames: int, keep: tuple[int, ...] = ()) -> dict:
    image, field, mask = item["image"], item["field"], item["mask"]
    region = cv2.erode(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    base = laplacian_energy(image, region)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    speed = np.hypot(field[..., 0], field[..., 1])
    fast = speed > 0.5 * speed.max()
    ratios, flows, kept = [], [], {}
    still = True
    previous = None
    start = time.perf_counter()
    first = last = None
    warp = engine(image, field, frames=frames, loop=True, mask=mask, include_end=True)
    for t, frame in enumerate(warp.frames()):
        if t in keep:
            kept[t] = frame
        still &= bool(np.array_equal(frame[~mask], image[~mask]))
        if 0 < t < frames:
            ratios.append(laplacian_energy(frame, region) / base)
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if previous is not None and t % 5 == 1 and t < frames:
            flows.append(dis.calc(previous, grey, None))
        previous = grey
        first = frame if t == 0 else first
        last = frame
    seconds = time.perf_counter() - start
    measured = np.mean(flows, axis=0)
    cos = (measured[fast] * field[fast]).sum(1) / (
        np.linalg.norm(measured[fast], axis=1) * np.linalg.norm(field[fast], axis=1) + 1e-6
    )
    ratios = np.array(ratios)
    return {
        "detail_min": float(ratios.min()), "detail_median": float(np.median(ratios)),
        "dis_cos": float(np.median(cos)), "closure": bool(np.array_equal(last, first)), "still": still,
        "seconds": seconds, "kept": kept,
    }  # fmt: skip


def forward_speeds(engine, frames: int) -> dict | None:
    folder = SHARED / "cinemagraphy3d"
    if not (folder / "0_waterfall.png").is_file():
        return None
    scene = load_scene(folder / "0_waterfall.png", arrows_file=folder / "0_labelme.json")
    size = 176
    image = cv2.resize(scene.image, (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(scene.mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
    arrows = scaled_arrows(scene.arrows[:2], size / scene.width, size / scene.height)
    field = dense_flow_from_arrows(arrows, size, size, mask=mask)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    yy, xx = np.mgrid[0:size, 0:size]
    tails = []
    for a in arrows:
        (x0, y0), (x1, y1) = a.points[0], a.points[-1]
        direction = np.array([x1 - x0, y1 - y0], np.float32)
        tails.append(((xx - x0) ** 2 + (yy - y0) ** 2 <= 36, direction / np.linalg.norm(direction)))
    speeds, changes, previous, last = [], [], None, None
    for frame in engine(image, field, frames=frames, loop=False, mask=mask).frames():
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if previous is not None:
            flow = dis.calc(previous, grey, None)
            speeds.append(np.mean([float((flow[sel] @ d).mean()) for sel, d in tails]))
            changes.append(float(np.abs(frame.astype(np.float32) - last)[mask].mean()))
        previous, last = grey, frame.astype(np.float32)
    speeds = np.array(speeds)
    # a phase restart that shows is a frame change far above the usual one (mean |difference| in the mask)
    jump = float(max(changes) / np.median(changes))
    thirds = [float(part.mean()) for part in np.array_split(speeds, 3)]
    return {"thirds": thirds, "ratios": [t / thirds[0] for t in thirds], "backward": int((speeds < 0).sum()),
            "jump": jump, "field_max": float(np.hypot(field[..., 0], field[..., 1]).max())}  # fmt: skip


# ---------------------------------------------------------------------------------------- picture
def _save_palette_png(path: Path, rgb: np.ndarray) -> None:
    """An 8-bit palette PNG (256 colours, median cut, no dithering): a fraction of a full-colour
    PNG's size for the docs."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )


def picture(
    path: Path, item: dict, rows: list[tuple[str, dict]], frames: int, focus: np.ndarray
) -> None:
    """Frames 0, N/4, N/2 of each engine (one row each, 480 px wide tiles), and a 1:1 crop of
    the same frames around ``focus`` (the stretched region) beside it."""
    picks = (0, frames // 4, frames // 2)
    h, w = item["image"].shape[:2]
    scale = min(1.0, 480 / w)
    size = (round(w * scale), round(h * scale))
    sheet = np.concatenate(
        [np.concatenate([cv2.resize(r["kept"][t], size, interpolation=cv2.INTER_AREA) for t in picks], 1)
         for _, r in rows], 0,
    )  # fmt: skip
    _save_palette_png(path, sheet)
    ys, xs = np.nonzero(focus if focus.any() else item["mask"])
    cy, cx = int(np.median(ys)), int(np.median(xs))
    side = min(160, h, w)
    y0, x0 = max(0, min(cy - side // 2, h - side)), max(0, min(cx - side // 2, w - side))
    crops = [np.concatenate([r["kept"][t][y0 : y0 + side, x0 : x0 + side] for t in picks], 1)
             for _, r in rows]  # fmt: skip
    crop_path = path.with_name(path.stem + "-crop" + path.suffix)
    _save_palette_png(crop_path, np.concatenate(crops, 0))
    kb = [round(p.stat().st_size / 1024) for p in (path, crop_path)]
    print(f"\npicture: {path} ({kb[0]} KB) and {crop_path} ({kb[1]} KB; 1:1, x {x0}-{x0 + side}, "
          f"y {y0}-{y0 + side}); columns: frames {', '.join(map(str, picks))}; rows: "
          f"{', '.join(name for name, _ in rows)}")  # fmt: skip


def spacing_check(speed: float, frames: int, size: int = 512) -> None:
    """Detail and arrows with trace nodes every pixel and every 2nd pixel (photos and fields
    resized to ``size``; the field scaled with the photo)."""
    import functools

    print(f"\n## Node spacing at {size}x{size}: {frames}-frame loops\n")
    print("| input | node spacing | detail min | detail median | DIS cosine | frame N == 0 | still exact |")
    print("| --- | ---: | ---: | ---: | ---: | :---: | :---: |")
    for item in stylecinegan(speed):
        w = item["image"].shape[1]
        image = cv2.resize(item["image"], (size, size), interpolation=cv2.INTER_AREA)
        field = cv2.resize(item["field"], (size, size), interpolation=cv2.INTER_AREA) * np.float32(size / w)
        mask = cv2.resize(item["mask"].astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
        mask = mask > 0
        field[~mask] = 0
        small = {"image": image, "field": field, "mask": mask}
        for spacing in (1, 2):
            r = measure(functools.partial(EulerianWarp, spacing=spacing), small, frames)
            closure, still = ("yes" if r[k] else "NO" for k in ("closure", "still"))
            print(f"| {item['name'].split(' ')[1]} at {size}x{size} | {spacing} | {r['detail_min']:.3f} | "
                  f"{r['detail_median']:.3f} | {r['dis_cos']:.3f} | {closure} | {still} |",
                  flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument(
        "--speed", type=float, default=2.0, help="px/frame at 1024 px of a |v| = 1 StyleCineGAN vector"
    )
    parser.add_argument(
        "--baseline", default=BASELINE, help="git revision of the engine to compare with, or 'none'"
    )
    parser.add_argument("--quick", action="store_true", help="two StyleCineGAN photos, no 1080p, 48 frames")
    parser.add_argument(
        "--picture", type=Path, default=None, help="write frames 0, N/4, N/2 of the bundled example"
    )
    parser.add_argument(
        "--before", default=BEFORE, help="git revision of the previous renderer (stretched areas), or 'none'"
    )
    parser.add_argument("--skip-forward", action="store_true")
    parser.add_argument("--forward-only", action="store_true", help="only the forward motion table")
    parser.add_argument(
        "--forward-before", default=FORWARD_BEFORE,
        help="git revision of the renderer whose forward restarts jumped, for the forward table, or 'none'",
    )  # fmt: skip
    parser.add_argument(
        "--spacing", action="store_true",
        help="only: trace nodes every pixel vs every 2nd, on the StyleCineGAN photos at 512x512",
    )  # fmt: skip
    args = parser.parse_args()
    frames = 48 if args.quick else args.frames
    if args.spacing:
        spacing_check(args.speed, frames)
        return
    old_engine = None if args.baseline == "none" else load_baseline(args.baseline)
    engines = [("this engine", EulerianWarp)] + (
        [(f"baseline {args.baseline}", old_engine)] if old_engine else []
    )
    if args.forward_only:
        forward_table(engines, args, args.quick)
        return

    items = [bundled()]
    items += stylecinegan(args.speed, ids=None) if not args.quick else stylecinegan(args.speed)[:2]
    if not args.quick:
        hd = hd_waterfall()
        if hd:
            items.append(hd)
    if len(items) == 1:
        print("(../shared/data is absent: only the bundled example)")
    print(f"\n## Loops of {frames} frames: detail, arrows, closure, still pixels\n")
    print(
        "| input | engine | detail min | detail median | DIS cosine | frame N == 0 | still exact | render s |"
    )
    print("| --- | --- | ---: | ---: | ---: | :---: | :---: | ---: |")
    pictured = {}
    for i, item in enumerate(items):
        for name, engine in engines:
            keep = (0, frames // 4, frames // 2) if i == 0 else ()
            r = measure(engine, item, frames, keep)
            if i == 0:
                pictured[name] = r
            closure, still = ("yes" if r[k] else "NO" for k in ("closure", "still"))
            print(f"| {item['name']} | {name} | {r['detail_min']:.3f} | {r['detail_median']:.3f} | "
                  f"{r['dis_cos']:.3f} | {closure} | {still} | {r['seconds']:.1f} |", flush=True)  # fmt: skip
    before = None if args.before == "none" else (f"before {args.before}", load_baseline(args.before))
    focus = stretched_region(items[0], frames)
    share = focus.sum() / max(int(items[0]["mask"].sum()), 1)
    print(f"\n## Stretched areas: {items[0]['name']}, frame {frames // 2} of {frames}, where both branches "
          f"magnify ({int(focus.sum())} px, {share:.0%} of the mask)\n")  # fmt: skip
    print("| engine | periodicity (lags 2-8 px) | coherence | Laplacian energy / photo's | detail min | "
          "detail median |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    grey = cv2.Laplacian(cv2.cvtColor(items[0]["image"], cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)
    base = float((grey[focus] ** 2).mean())
    photo = items[0]["image"]
    print(f"| the photo | {periodicity(photo, focus):.3f} | {coherence(photo, focus):.3f} | 1.000 | | |")
    for name, engine in engines[:1] + ([before] if before else []) + engines[1:]:
        r = pictured.get(name) or measure(engine, items[0], frames, (0, frames // 4, frames // 2))
        pictured[name] = r
        frame = r["kept"][frames // 2]
        lap = cv2.Laplacian(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)
        energy = float((lap[focus] ** 2).mean()) / base
        print(f"| {name} | {periodicity(frame, focus):.3f} | {coherence(frame, focus):.3f} | {energy:.3f} | "
              f"{r['detail_min']:.3f} | {r['detail_median']:.3f} |", flush=True)  # fmt: skip
    if args.picture:
        rows = [(name, pictured[name]) for name in pictured]
        picture(args.picture, items[0], rows, frames, focus)
    if not args.skip_forward:
        forward_table(engines, args, args.quick)


def forward_table(engines: list, args: argparse.Namespace, quick: bool) -> None:
    if args.forward_before != "none":
        before = (f"before {args.forward_before}", load_baseline(args.forward_before))
        engines = [engines[0], before, *engines[1:]]
    print("\n## Forward motion (no loop), 176x176 waterfall, two arrows: along-arrow speed at the tails\n")
    print("| engine | frames | px/frame per third | ratio to the first third | backward steps "
          "| largest frame change / median |")
    print("| --- | ---: | --- | --- | ---: | ---: |")
    for name, engine in engines:
        for n in (125, 500) if not quick else (125,):
            r = forward_speeds(engine, n)
            if r is None:
                print("(../shared/data is absent: no forward figures)")
                break
            thirds = " / ".join(f"{v:.2f}" for v in r["thirds"])
            ratios = " / ".join(f"{v:.2f}" for v in r["ratios"])
            row = f"| {name} | {n} | {thirds} | {ratios} | {r['backward']} | {r['jump']:.2f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
