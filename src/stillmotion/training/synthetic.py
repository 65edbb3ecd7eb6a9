"""Synthetic training clips: real photos animated by the warp engine along random arrow fields.

For bootstrapping and tests when few real videos are at hand. Each clip:

1. a random square crop of a photo (at least 60% of its shorter side), resized to ``size``;
2. 1-4 random arrows (tails anywhere in the middle 80% of the frame; per-frame speeds 0.5-4.0 px
   at a 512-px frame by default, i.e. 12-96 px over a 25-frame base clip (``speed``: small models at
   small sizes learn faster from more); about half of the clips have all
   arrows roughly parallel, like a river or clouds, the rest independent directions);
3. the dense field of those arrows (``stillmotion.motion.dense_flow_from_arrows``, paper eqs. 5-7),
   limited in half of the clips to a random region around the arrows (the rest of the photo still);
4. the warp engine's plain forward Eulerian animation (no loop) of ``frames`` frames.

The flows stored are the known field itself, repeated for every frame pair: in a forward Eulerian
animation the content at pixel q of frame t moves by M(q) to frame t+1, so F_{t->t+1} = M exactly
wherever moved content is visible. Motion strength (eq. 8) and the static-camera flag are computed
from those flows exactly as for real videos. Everything is a pure function of the seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import Arrow
from stillmotion.inputs.image import load_image
from stillmotion.motion.dense import dense_flow_from_arrows
from stillmotion.motion.eulerian import warp_frames

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# Real photographs that ship inside scikit-image's wheel (no download).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "camera", "coins",
                  "grass", "gravel", "brick")


def find_photos(source: str | Path) -> list[tuple[str, Any]]:
    """``(name, loader)`` pairs for ``source``: a folder (recursive) or ``"skimage"``.

    Files named like masks (``*mask*``) and images smaller than 64 px are skipped.
    """
    if str(source) == "skimage":
        return [(f"skimage/{n}", _skimage_loader(n)) for n in SKIMAGE_PHOTOS]
    root = Path(source)
    if not root.is_dir():
        raise UserInputError(f"photo folder {root} does not exist (pass 'skimage' for scikit-image's photos)")
    found = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and "mask" not in p.stem.lower():
            found.append((p.relative_to(root).as_posix(), _file_loader(p)))
    return found


def _skimage_loader(name: str):
    def load() -> np.ndarray:
        # lazy: skimage is an optional extra, imported only on this path
        import skimage.data

        im = getattr(skimage.data, name)()
        return np.repeat(im[..., None], 3, 2) if im.ndim == 2 else im[..., :3]

    return load


def _file_loader(path: Path):
    def load() -> np.ndarray:
        return load_image(path)

    return load


def crop_resize(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator | None = None,
                min_scale: float = 0.6) -> np.ndarray:
    """Crop ``image`` to the aspect ratio of ``size`` (W, H) and resize to it.

    Without ``rng`` the crop is the largest centred one; with it, a random crop whose side is
    ``min_scale``-1 of the largest possible, at a random position.
    """
    w, h = size
    ih, iw = image.shape[:2]
    scale = min(iw / w, ih / h)
    if rng is not None:
        scale *= float(rng.uniform(min_scale, 1.0))
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    x0 = int(rng.integers(0, iw - cw + 1)) if rng is not None else (iw - cw) // 2
    y0 = int(rng.integers(0, ih - ch + 1)) if rng is not None else (ih - ch) // 2
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    interp = cv2.INTER_AREA if cw >= w else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(crop, (w, h), interpolation=interp))


SPEED = (0.5, 4.0)  # per-frame arrow speeds in px at a 512-px frame (scaled to the clip's size)


def random_arrows(
    width: int, height: int, rng: np.random.Generator, frames: int, speed: tuple[float, float] = SPEED
) -> list[Arrow]:
    """1-4 arrows whose per-frame speed is ``speed`` (min, max) px at 512 px, over a ``frames``-frame clip."""
    n = int(rng.integers(1, 5))
    side = max(width, height)
    coherent = rng.random() < 0.5
    base_angle = rng.uniform(0, 2 * math.pi)
    arrows = []
    for i in range(n):
        x = rng.uniform(0.1, 0.9) * (width - 1)
        y = rng.uniform(0.1, 0.9) * (height - 1)
        angle = base_angle + rng.normal(0, 0.3) if coherent else rng.uniform(0, 2 * math.pi)
        px = rng.uniform(*speed) * side / 512  # px/frame at this size
        length = px * (frames - 1)
        arrows.append(Arrow(points=((x, y), (x + length * math.cos(angle), y + length * math.sin(angle))),
                            name=f"random{i}"))
    return arrows


def random_region(arrows: list[Arrow], width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A moving region: discs of radius 15-35% of the frame around each arrow's tail and head."""
    mask = np.zeros((height, width), np.uint8)
    side = max(width, height)
    for a in arrows:
        r = int(rng.uniform(0.15, 0.35) * side)
        for px, py in (a.start, a.end):
            cv2.circle(mask, (int(round(px)), int(round(py))), r, 1, -1)
    return mask.astype(bool)


def synthetic_clip(
    photo: np.ndarray, *, frames: int, size: tuple[int, int], rng: np.random.Generator,
    speed: tuple[float, float] = SPEED,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One clip: frames uint8 (F, H, W, 3), flows float32 (F-1, H, W, 2), and what made them."""
    w, h = size
    image = crop_resize(photo, size, rng)
    arrows = random_arrows(w, h, rng, frames, speed)
    mask = random_region(arrows, w, h, rng) if rng.random() < 0.5 else None
    field = dense_flow_from_arrows(arrows, w, h, mask=mask, base_frames=frames)
    clip = np.stack(list(warp_frames(image, field, frames=frames, loop=False)))
    flows = np.broadcast_to(field, (frames - 1, h, w, 2))
    meta = {"arrows": [[list(p) for p in a.points] for a in arrows], "masked": mask is not None}
    return clip, flows, meta


def synthetic_clips(
    photo: np.ndarray, count: int, *, frames: int, size: tuple[int, int], seed: int,
    speed: tuple[float, float] = SPEED,
) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield synthetic_clip(photo, frames=frames, size=size, rng=rng, speed=speed)
