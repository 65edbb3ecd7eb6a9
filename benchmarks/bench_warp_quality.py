"""Warp engine quality on real photos: detail kept, arrows followed, seamless, still pixels exact,
and forward motion that keeps flowing; the engine of an earlier revision alongside.

    .venv/bin/python benchmarks/bench_warp_quality.py                      # everything below
    .venv/bin/python benchmarks/bench_warp_quality.py --quick              # fewer photos and frames
    .venv/bin/python benchmarks/bench_warp_quality.py --picture docs/images/warp-quality.png

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
BASELINE = "25cc021"  # the splatting engine (bilinear softmax splatting, push-pull holes)


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
        shown.check_returncode()
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
    speeds, previous = [], None
    for frame in engine(image, field, frames=frames, loop=False, mask=mask).frames():
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if previous is not None:
            flow = dis.calc(previous, grey, None)
            speeds.append(np.mean([float((flow[sel] @ d).mean()) for sel, d in tails]))
        previous = grey
    speeds = np.array(speeds)
    thirds = [float(part.mean()) for part in np.array_split(speeds, 3)]
    return {"thirds": thirds, "ratios": [t / thirds[0] for t in thirds], "backward": int((speeds < 0).sum()),
            "field_max": float(np.hypot(field[..., 0], field[..., 1]).max())}  # fmt: skip


# ---------------------------------------------------------------------------------------- picture
def picture(path: Path, item: dict, new: dict, old: dict | None, frames: int) -> None:
    """Frames 0, N/4, N/2 of the new engine (top row) and the baseline (bottom row)."""
    rows = [new] + ([old] if old else [])
    picks = (0, frames // 4, frames // 2)
    h, w = item["image"].shape[:2]
    scale = min(1.0, 640 / w)
    tiles = []
    for row in rows:
        size = (round(w * scale), round(h * scale))
        cells = [cv2.resize(row["kept"][t], size, interpolation=cv2.INTER_AREA) for t in picks]
        tiles.append(np.concatenate(cells, 1))
    sheet = np.concatenate(tiles, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    # and a 1:1 crop of the moving region, where the difference in detail is visible
    ys, xs = np.nonzero(item["mask"])
    cy, cx = int(np.median(ys)), int(np.median(xs))
    size = min(200, h, w)
    y0, x0 = max(0, min(cy - size // 2, h - size)), max(0, min(cx - size // 2, w - size))
    crops = [
        np.concatenate([row["kept"][t][y0 : y0 + size, x0 : x0 + size] for t in picks], 1) for row in rows
    ]
    crop_path = path.with_name(path.stem + "-crop" + path.suffix)
    cv2.imwrite(str(crop_path), cv2.cvtColor(np.concatenate(crops, 0), cv2.COLOR_RGB2BGR))
    print(f"\npicture: {path} and {crop_path} (columns: frames {', '.join(map(str, picks))}; "
          f"rows: this engine{', then the baseline' if old else ''})")  # fmt: skip


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
    parser.add_argument("--skip-forward", action="store_true")
    args = parser.parse_args()
    frames = 48 if args.quick else args.frames
    old_engine = None if args.baseline == "none" else load_baseline(args.baseline)
    engines = [("this engine", EulerianWarp)] + (
        [(f"baseline {args.baseline}", old_engine)] if old_engine else []
    )

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
    if args.picture:
        old = pictured.get(engines[-1][0]) if old_engine else None
        picture(args.picture, items[0], pictured["this engine"], old, frames)
    if not args.skip_forward:
        print(
            "\n## Forward motion (no loop), 176x176 waterfall, two arrows: along-arrow speed at the tails\n"
        )
        print("| engine | frames | px/frame per third | ratio to the first third | backward steps |")
        print("| --- | ---: | --- | --- | ---: |")
        for name, engine in engines:
            for n in (125, 500) if not args.quick else (125,):
                r = forward_speeds(engine, n)
                if r is None:
                    print("(../shared/data is absent: no forward figures)")
                    break
                thirds = " / ".join(f"{v:.2f}" for v in r["thirds"])
                ratios = " / ".join(f"{v:.2f}" for v in r["ratios"])
                print(f"| {name} | {n} | {thirds} | {ratios} | {r['backward']} |", flush=True)


if __name__ == "__main__":
    main()
