"""Training pairs for the flow refinement model T: (Gaussian dense field from arrows, real field).

A pair imitates what a user does: a few arrows drawn where a real motion field moves fastest
(1 to 8, never closer than ``min_arrow_distance`` of the frame to each other), each arrow being the
field's per-frame vector there times the base clip's 24 steps (the project's arrow meaning, see
``stillmotion.inputs.arrows``). The input is ``dense_flow_from_arrows`` of those arrows (eqs. 5-7,
the project's own function), the target is the real field. Both are px/frame.

Real fields come from three sources, all held as :class:`MotionSample` (field, image, mask):

- the StyleCineGAN Eulerian motion fields (``<id>/<id>_motion_fp16.npz``, key ``motion``,
  (1, 2, 512, 512), |v| <= 1, with the photo and its animatable-region mask; MIT). Their unit is
  arbitrary; they are read as px/frame at 512x512 times ``speed`` (1.0: at most 1 px/frame, an arrow
  of at most 24 px, a typical cinemagraph speed). The scale does not matter to T when it normalises
  by the peak (the default) and EPE is reported relative to the mean real speed as well.
- real videos: per-frame DIS optical flow, averaged over each clip of ``clip_frames`` frames
  (an Eulerian field: the mean per-frame motion at each pixel over one base clip); the mask is where
  that mean speed exceeds ``mask_fraction`` of its 99th percentile. Flow comes from
  ``stillmotion.motion.flow`` when present, else OpenCV's DIS (medium preset) directly.
- clips prepared by ``stillmotion prepare`` (their stored per-frame flows, averaged the same way).

Augmentations (training only): a random crop of any aspect ratio holding moving pixels (which also
makes the Gaussian anisotropic after resizing, as it is for non-square photos at inference),
horizontal and vertical flips (flipping the vector components too), and dropping the image or the
mask (T must work without them). Every pair is a pure function of ``(seed, index)``, so a batch
is the same whatever the worker count or a resume point.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import BASE_CLIP_FRAMES, Arrow
from stillmotion.io.atomic import atomic_path
from stillmotion.motion.dense import dense_flow_from_arrows
from stillmotion.progress import progress_iter
from stillmotion.training.cache import ClipCache

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v"}
FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass
class MotionSample:
    """A real motion field (H, W, 2) px/frame with the image it moves and its moving region."""

    field: np.ndarray
    image: np.ndarray | None
    mask: np.ndarray | None
    name: str
    source: str  # samples of one source (a photo, a video) are grouped for sampling and hold-out


# ---------------------------------------------------------------------------------------- sources
def load_stylecinegan(
    root: str | Path, ids: Sequence[str] | None = None, speed: float = 1.0
) -> list[MotionSample]:
    """StyleCineGAN samples under ``root`` (``<id>/<id>.png``, ``_mask.png``, ``_motion_fp16.npz``)."""
    root = Path(root)
    paths = sorted(root.glob("*/*_motion_fp16.npz"))
    if ids is not None:
        wanted = set(ids)
        paths = [p for p in paths if p.parent.name in wanted]
        missing = wanted - {p.parent.name for p in paths}
        if missing:
            raise UserInputError(f"StyleCineGAN ids {sorted(missing)} not found under {root}")
    out = []
    for path in paths:
        sid = path.parent.name
        with np.load(path) as data:
            if "motion" not in data:
                raise UserInputError(f"{path} has no 'motion' array")
            motion = data["motion"].astype(np.float32)
        if motion.ndim != 4 or motion.shape[:2] != (1, 2):
            raise UserInputError(f"{path}: expected motion of shape (1, 2, H, W), got {motion.shape}")
        field = np.ascontiguousarray(motion[0].transpose(1, 2, 0)) * speed
        h, w = field.shape[:2]
        image = _read_rgb(path.parent / f"{sid}.png", (w, h))
        mask_rgb = _read_rgb(path.parent / f"{sid}_mask.png", (w, h))
        mask = mask_rgb[..., 0] > 127 if mask_rgb is not None else None
        if mask is not None:
            field[~mask] = 0.0  # the mask is the animatable region; the target is still outside it
        out.append(MotionSample(field, image, mask, f"stylecinegan/{sid}", f"stylecinegan/{sid}"))
    return out


def _read_rgb(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    if not path.is_file():
        return None
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserInputError(f"cannot read image {path}")
    return cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def read_frames(path: str | Path, max_side: int = 512) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video file or a folder of frames, downscaled to ``max_side``."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        frames: Iterator = (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files)
    else:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise UserInputError(f"cannot open video {path}")

        def _gen() -> Iterator[np.ndarray]:
            try:
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        return
                    yield frame
            finally:
                cap.release()

        frames = _gen()
    for bgr in frames:
        if bgr is None:
            raise UserInputError(f"cannot read a frame of {path}")
        h, w = bgr.shape[:2]
        k = max_side / max(h, w)
        if k < 1:
            bgr = cv2.resize(bgr, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _flow_function():
    """The project's flow extractor (``stillmotion.motion.flow``, DIS) when present, else OpenCV DIS."""
    try:
        # lazy, guarded: a part missing from this installation is reported, not an import error
        from stillmotion.motion.flow import FlowEstimator

        return FlowEstimator("dis")
    except ImportError:
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

        def _dis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b))
            return dis.calc(ga, gb, None).astype(np.float32)

        return _dis


class ClipMeans:
    """Streaming clip means: feed flow k->k+1 with frame k; memory holds only the clips in progress.

    A clip starts every ``stride`` frames and ends after ``clip_frames - 1`` flows; its field is the
    mean flow (an Eulerian field: the mean per-frame motion at each pixel over one base clip), its mask
    where that mean speed exceeds ``mask_fraction`` of its 99th percentile (closed by 9x9). A sequence
    shorter than one clip gives one field over all its flows. Still clips are dropped.
    """

    def __init__(
        self, name: str, clip_frames: int = BASE_CLIP_FRAMES, stride: int = 12, mask_fraction: float = 0.15
    ):
        self.name, self.steps, self.stride, self.mask_fraction = name, clip_frames - 1, stride, mask_fraction
        self.active: dict[int, list] = {}
        self.done: list[MotionSample] = []
        self.completed = 0

    def add(self, k: int, flow: np.ndarray, frame: np.ndarray | None) -> None:
        if k % self.stride == 0:
            self.active[k] = [np.zeros(flow.shape, np.float64), 0, frame]
        for start in list(self.active):
            acc = self.active[start]
            acc[0] += flow
            acc[1] += 1
            if acc[1] == self.steps:
                self._emit(start, self.active.pop(start))
                self.completed += 1

    def _emit(self, start: int, acc: list) -> None:
        field = (acc[0] / acc[1]).astype(np.float32)
        speed = np.hypot(field[..., 0], field[..., 1])
        p99 = float(np.percentile(speed, 99))
        if p99 <= 1e-3:
            return  # a still clip teaches nothing about arrows
        mask = speed > self.mask_fraction * p99
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8)) > 0
        field = np.where(mask[..., None], field, 0.0).astype(np.float32)
        self.done.append(MotionSample(field, acc[2], mask, f"{self.name}@{start}", self.name))

    def finish(self) -> list[MotionSample]:
        if self.completed == 0 and 0 in self.active:
            self._emit(0, self.active[0])
        self.active = {}
        return self.done


def fields_from_flows(
    flows: Sequence[np.ndarray],
    first_frames: Sequence[np.ndarray | None],
    name: str,
    *,
    clip_frames: int = BASE_CLIP_FRAMES,
    stride: int = 12,
    mask_fraction: float = 0.15,
) -> list[MotionSample]:
    """Clip-mean fields of a flow sequence (``flows[k]``: frame k -> k+1; ``first_frames[k]``: frame k)."""
    means = ClipMeans(name, clip_frames, stride, mask_fraction)
    for k, flow in enumerate(flows):
        means.add(k, flow, first_frames[k])
    return means.finish()


def load_video_fields(
    path: str | Path,
    *,
    clip_frames: int = BASE_CLIP_FRAMES,
    stride: int = 12,
    max_side: int = 512,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[MotionSample]:
    """Clip-mean flow fields of one video (file or frame folder), streamed frame by frame.

    With ``cache_dir`` the fields are kept in ``<cache_dir>/<stem>-<key>.npz`` (no pickles) and reused
    while the video and the settings are unchanged.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"video {path} does not exist")
    name = f"video/{path.stem}"
    cache = None
    if cache_dir is not None:
        st = path.stat()
        key = zlib.crc32(
            f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{clip_frames}|{stride}|{max_side}".encode()
        )
        cache = Path(cache_dir) / f"{path.stem}-{key:08x}.npz"
        if cache.is_file():
            return _read_field_cache(cache, name)
    flow = _flow_function()
    means = ClipMeans(name, clip_frames, stride)
    prev = None
    for k, frame in enumerate(
        progress_iter(read_frames(path, max_side), desc=f"flow {path.name}", enabled=progress)
    ):
        if prev is not None:
            means.add(k - 1, flow(prev, frame), prev)
        prev = frame
    if prev is None or means.completed == 0 and not means.active:
        raise UserInputError(f"video {path} has fewer than 2 readable frames")
    out = means.finish()
    if cache is not None and out:
        _write_field_cache(cache, out)
    return out


def _write_field_cache(path: Path, samples: list[MotionSample]) -> None:
    h, w = samples[0].field.shape[:2]
    with atomic_path(path) as tmp:
        np.savez(
            tmp,
            field=np.stack([s.field for s in samples]),
            mask=np.stack([s.mask for s in samples]),
            image=np.stack(
                [s.image if s.image is not None else np.zeros((h, w, 3), np.uint8) for s in samples]
            ),
            start=np.array([int(s.name.rsplit("@", 1)[1]) for s in samples]),
        )


def _read_field_cache(path: Path, name: str) -> list[MotionSample]:
    with np.load(path, allow_pickle=False) as d:
        return [
            MotionSample(d["field"][i], d["image"][i], d["mask"][i], f"{name}@{int(d['start'][i])}", name)
            for i in range(len(d["start"]))
        ]


def load_video_folder(root: str | Path, *, progress: bool = False, **kw) -> list[MotionSample]:
    """Every video file and frame folder under ``root`` (recursively); unreadable ones are skipped."""
    root = Path(root)
    items = [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    items += [
        p
        for p in sorted(root.rglob("*"))
        if p.is_dir() and sum(q.suffix.lower() in FRAME_SUFFIXES for q in p.iterdir()) >= 2
    ]
    out = []
    for p in items:
        try:
            out += load_video_fields(p, progress=progress, **kw)
        except UserInputError as exc:
            print(f"skipping {p}: {exc}")
    return out


# ---------------------------------------------------------------------------------------- pairs
def sample_arrows(
    field: np.ndarray,
    mask: np.ndarray | None,
    rng: np.random.Generator,
    *,
    min_arrows: int = 1,
    max_arrows: int = 8,
    min_fraction: float = 0.3,
    min_distance: float = 0.12,
    base_frames: int = BASE_CLIP_FRAMES,
) -> list[Arrow]:
    """1..8 arrows at fast points of ``field`` (inside ``mask``), each the local vector x 24 steps.

    Candidates are pixels faster than ``min_fraction`` of the fastest one, drawn with probability
    proportional to speed; a candidate closer than ``min_distance * max(H, W)`` to an earlier arrow
    is rejected (users spread their arrows out).
    """
    h, w = field.shape[:2]
    speed = np.hypot(field[..., 0], field[..., 1])
    if mask is not None:
        speed = np.where(mask, speed, 0.0)
    top = float(speed.max())
    if top <= 0:
        return []
    ys, xs = np.nonzero(speed >= min_fraction * top)
    weights = speed[ys, xs].astype(np.float64)
    weights /= weights.sum()
    want = int(rng.integers(min_arrows, max_arrows + 1))
    picked: list[tuple[int, int]] = []
    radius = min_distance * max(h, w)
    for _ in range(want * 8):
        if len(picked) == want:
            break
        i = int(rng.choice(len(xs), p=weights))
        x, y = int(xs[i]), int(ys[i])
        if all(math.hypot(x - px, y - py) >= radius for px, py in picked):
            picked.append((x, y))
    steps = base_frames - 1
    return [
        Arrow(((float(x), float(y)), (x + float(field[y, x, 0]) * steps, y + float(field[y, x, 1]) * steps)))
        for x, y in picked
    ]


@dataclass
class PairConfig:
    """How pairs are drawn; the trainer fills it from its config."""

    size: int = 64  # the refiner's working size (square)
    min_arrows: int = 1
    max_arrows: int = 8
    augment: bool = True
    crop_min: float = 0.4  # smallest crop side as a fraction of the field's side
    hflip: float = 0.5
    vflip: float = 0.2
    drop_image: float = 0.3
    drop_mask: float = 0.3


def _crop_box(sample: MotionSample, rng: np.random.Generator, crop_min: float) -> tuple[int, int, int, int]:
    h, w = sample.field.shape[:2]
    moving = np.hypot(sample.field[..., 0], sample.field[..., 1]) > 0
    for _ in range(10):
        cw = int(round(w * rng.uniform(crop_min, 1.0)))
        ch = int(round(h * rng.uniform(crop_min, 1.0)))
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        if moving[y0 : y0 + ch, x0 : x0 + cw].mean() > 0.05:
            return x0, y0, cw, ch
    return 0, 0, w, h


def _resize_field(field: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a px/frame field to ``size`` = (w, h), rescaling the vectors per axis."""
    h, w = field.shape[:2]
    tw, th = size
    interp = cv2.INTER_AREA if (tw < w or th < h) else cv2.INTER_LINEAR
    out = cv2.resize(field, size, interpolation=interp)
    out[..., 0] *= tw / w
    out[..., 1] *= th / h
    return out


def shrink_sample(sample: MotionSample, max_side: int) -> MotionSample:
    """``sample`` downscaled so its longer side is at most ``max_side`` (vectors rescaled)."""
    h, w = sample.field.shape[:2]
    k = max_side / max(h, w)
    if k >= 1:
        return sample
    size = (max(1, round(w * k)), max(1, round(h * k)))
    image = cv2.resize(sample.image, size, interpolation=cv2.INTER_AREA) if sample.image is not None else None
    mask = None
    if sample.mask is not None:
        mask = cv2.resize(sample.mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    field = _resize_field(sample.field, size)
    if mask is not None:
        field[~mask] = 0.0
    return MotionSample(field, image, mask, sample.name, sample.source)


def make_pair(
    sample: MotionSample, cfg: PairConfig, rng: np.random.Generator
) -> dict[str, np.ndarray | None]:
    """One (dense input, real target) pair at ``cfg.size`` x ``cfg.size``.

    The arrows are drawn and the dense field computed at the (cropped) field's own resolution, with
    the project's default sigma for that frame, and only then resized, exactly as a user's dense
    field is computed on their photo and resized by :meth:`FlowRefiner.refine`.
    Returns ``input``/``target`` (S, S, 2) float32 px/frame, ``image`` (S, S, 3) uint8 or None,
    ``mask`` (S, S) bool or None.
    """
    field, image, mask = sample.field, sample.image, sample.mask
    if cfg.augment:
        x0, y0, cw, ch = _crop_box(sample, rng, cfg.crop_min)
        field = field[y0 : y0 + ch, x0 : x0 + cw]
        image = image[y0 : y0 + ch, x0 : x0 + cw] if image is not None else None
        mask = mask[y0 : y0 + ch, x0 : x0 + cw] if mask is not None else None
        if rng.random() < cfg.hflip:
            field = field[:, ::-1] * np.array([-1.0, 1.0], np.float32)
            image = image[:, ::-1] if image is not None else None
            mask = mask[:, ::-1] if mask is not None else None
        if rng.random() < cfg.vflip:
            field = field[::-1] * np.array([1.0, -1.0], np.float32)
            image = image[::-1] if image is not None else None
            mask = mask[::-1] if mask is not None else None
        if image is not None and rng.random() < cfg.drop_image:
            image = None
        if mask is not None and rng.random() < cfg.drop_mask:
            mask = None
    field = np.ascontiguousarray(field, dtype=np.float32)
    h, w = field.shape[:2]
    arrows = sample_arrows(field, mask, rng, min_arrows=cfg.min_arrows, max_arrows=cfg.max_arrows)
    dense = dense_flow_from_arrows(arrows, w, h, mask=mask)
    target = field if mask is None else np.where(mask[..., None], field, 0.0).astype(np.float32)
    s = (cfg.size, cfg.size)
    out: dict[str, np.ndarray | None] = {
        "input": _resize_field(dense, s),
        "target": _resize_field(target, s),
        "image": None,
        "mask": None,
    }
    if image is not None:
        out["image"] = cv2.resize(np.ascontiguousarray(image), s, interpolation=cv2.INTER_AREA)
    if mask is not None:
        m = cv2.resize(mask.astype(np.float32), s, interpolation=cv2.INTER_AREA) > 0.5
        out["mask"] = m
        out["input"][~m] = 0.0
        out["target"][~m] = 0.0
    return out


class RefinerPairs:
    """Map-style dataset of pairs: item ``i`` is a pure function of ``(seed, i)``.

    A source (one photo, one video) is drawn uniformly, then one of its fields, so a long video does
    not drown a single photo. Items are dicts of float32 tensors: ``input``, ``target`` (2, S, S)
    px/frame, ``image`` (3, S, S) in [-1, 1], ``mask`` (1, S, S), and ``has_image``/``has_mask``
    flags (an absent image is zeros and an absent mask ones, as :meth:`FlowRefiner.network_input`).
    """

    def __init__(self, samples: Sequence[MotionSample], cfg: PairConfig, seed: int = 0, length: int = 10**9):
        if not samples:
            raise UserInputError("no motion fields to draw refiner training pairs from")
        self.cfg, self.seed, self.length = cfg, seed, length
        # Crops are resized to the working size anyway: keep sources just large enough that the smallest
        # crop still has ``size`` pixels, which makes pairs several times cheaper for small models.
        side = math.ceil(cfg.size / max(cfg.crop_min, 1e-3)) if cfg.augment else cfg.size
        groups: dict[str, list[MotionSample]] = {}
        for s in samples:
            groups.setdefault(s.source, []).append(shrink_sample(s, side))
        self.groups = list(groups.values())

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:

        rng = np.random.default_rng([self.seed, int(index)])
        group = self.groups[int(rng.integers(len(self.groups)))]
        sample = group[int(rng.integers(len(group)))]
        pair = make_pair(sample, self.cfg, rng)
        return pair_to_tensors(pair, self.cfg.size)


def pair_to_tensors(pair: dict, size: int) -> dict:
    # lazy: torch takes seconds to import (start-up); only this path needs it
    import torch

    item = {
        "input": torch.from_numpy(np.ascontiguousarray(pair["input"].transpose(2, 0, 1))),
        "target": torch.from_numpy(np.ascontiguousarray(pair["target"].transpose(2, 0, 1))),
    }
    if pair["image"] is not None:
        img = torch.from_numpy(np.ascontiguousarray(pair["image"].transpose(2, 0, 1))).float() / 127.5 - 1.0
        item["image"], item["has_image"] = img, torch.tensor(1.0)
    else:
        item["image"], item["has_image"] = torch.zeros(3, size, size), torch.tensor(0.0)
    if pair["mask"] is not None:
        item["mask"], item["has_mask"] = torch.from_numpy(pair["mask"])[None].float(), torch.tensor(1.0)
    else:
        item["mask"], item["has_mask"] = torch.ones(1, size, size), torch.tensor(0.0)
    return item


def fixed_pairs(samples: Sequence[MotionSample], cfg: PairConfig, count: int, seed: int = 1234) -> list[dict]:
    """A fixed held-out set of ``count`` pairs, full frame, no augmentation.

    Pair i comes from source ``i % n_sources`` (each photo or video weighs the same), cycling through
    that source's fields.
    """
    plain = PairConfig(**{**cfg.__dict__, "augment": False})
    groups: dict[str, list[MotionSample]] = {}
    for s in samples:
        groups.setdefault(s.source, []).append(shrink_sample(s, cfg.size))
    order = list(groups.values())
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        group = order[i % len(order)]
        out.append(pair_to_tensors(make_pair(group[(i // len(order)) % len(group)], plain, rng), cfg.size))
    return out


def read_prepared_cache(cache_dir: str | Path, *, clip_frames: int = BASE_CLIP_FRAMES) -> list[MotionSample]:
    """Clip-mean fields of every clip in a cache written by ``stillmotion prepare``.

    Each cached clip (its stored per-frame flows, the project's flow extractor) gives one field: the
    mean of its first ``clip_frames - 1`` flows, masked like video fields; its first frame is the image.
    Clips of one video form one source.
    """
    cache = ClipCache(cache_dir)
    out: list[MotionSample] = []
    for i, clip in enumerate(cache.clips):
        n_flows = min(clip_frames, int(clip["frames"])) - 1
        flows = cache.read(i, "flows", 0, n_flows).astype(np.float32)
        frame = cache.read(i, "frames", 0, 1)[0]
        source = f"prepared/{Path(str(clip.get('video', clip['id']))).stem}"
        means = ClipMeans(source, clip_frames=len(flows) + 1, stride=len(flows) + 1)
        for k, flow in enumerate(flows):
            means.add(k, flow, frame if k == 0 else None)
        for sample in means.finish():
            sample.name = f"{source}@{clip.get('start', i)}"
            out.append(sample)
    return out
