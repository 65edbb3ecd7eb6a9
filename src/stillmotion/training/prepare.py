"""Video folders (and synthetic photo animations) -> the training-clip cache.

``prepare_videos`` walks a folder for videos (any file ``stillmotion.io.video_reader`` reads: mp4,
avi, webm, mov, mkv, gif, ...) and frame folders (a folder holding image files), and for each one:

1. streams its frames (every ``frame_step``-th), cover-resizes and centre-crops them to ``size``;
2. cuts clips of ``frames`` frames, a new clip every ``stride`` frames (default: ``frames``, so
   clips do not overlap; a smaller stride overlaps them);
3. computes the flow of every consecutive pair inside a clip with the project's extractor
   (``stillmotion.motion.flow``, DIS by default) on the resized frames, once per pair even when
   clips overlap;
4. computes motion strength M_s (eq. 8, ``stillmotion.motion.strength``, px/frame at 512 px) and
   the static-camera flag (``stillmotion.training.camera``);
5. encodes the frames with a VAE when one is given (latent mode, unscaled);
6. writes shards (``stillmotion.training.cache``) and records the video as finished in the index.

Memory holds one clip's frames plus one shard (``shard_mb``), whatever the video's length. A video
that cannot be read is listed under ``failed`` in the index (with the reason) and skipped; the run
goes on. Re-running skips videos already finished with the same settings (a changed file - other
size or modification time - is redone); a video interrupted half-way is redone from its start.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.io.video_reader import is_image_file, is_video_file, open_frames
from stillmotion.motion.flow import FlowEstimator
from stillmotion.motion.strength import motion_strength
from stillmotion.progress import progress_bar, progress_iter

from .cache import ShardWriter, empty_index, read_index, video_id, write_index
from .camera import ANALYSIS_SIZE, STATIC_THRESHOLD, is_static_camera
from .synthetic import SPEED, crop_resize, find_photos, synthetic_clips


@dataclass
class PrepareSettings:
    frames: int = 25  # frames per clip
    size: tuple[int, int] = (512, 512)  # (width, height) of the stored frames
    stride: int | None = None  # frames between clip starts (after frame_step); None = frames
    frame_step: int = 1  # keep every k-th frame of the source
    flow_method: str = "dis"
    flow_weights: str | None = None  # RAFT weights file
    vae: str | None = None  # folder of a VAE (or of a pipeline with a vae/ subfolder)
    static_threshold: float = STATIC_THRESHOLD
    shard_mb: float = 256.0
    max_clips_per_video: int | None = None

    def validate(self) -> None:
        if self.frames < 2:
            raise UserInputError(f"--frames must be >= 2, got {self.frames}")
        if min(self.size) < 8:
            raise UserInputError(f"--size must be at least 8 pixels, got {self.size}")
        if self.stride is not None and self.stride < 1:
            raise UserInputError(f"--stride must be >= 1, got {self.stride}")
        if self.frame_step < 1:
            raise UserInputError(f"--frame-step must be >= 1, got {self.frame_step}")
        if not (math.isfinite(self.static_threshold) and self.static_threshold >= 0):
            raise UserInputError(f"--static-threshold must be a number >= 0, got {self.static_threshold}")
        if not (self.shard_mb > 0 and math.isfinite(self.shard_mb)):  # 0 would write one shard per tensor
            raise UserInputError(f"--shard-mb must be a positive number of megabytes, got {self.shard_mb}")

    def cache_settings(self) -> dict[str, Any]:
        """What every clip of a cache shares (checked when a run adds to an existing cache)."""
        return {"frames": self.frames, "size": list(self.size), "vae": self.vae}

    def video_settings(self) -> dict[str, Any]:
        """What makes a finished video's clips reusable."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if k not in ("shard_mb",)}


@dataclass
class PrepareReport:
    cache: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    clips: int = 0
    new_clips: int = 0
    static_clips: int = 0

    def summary(self) -> str:
        lines = [
            f"{self.cache}: {self.clips} clips ({self.static_clips} static-camera); "
            f"{len(self.done)} video(s) prepared ({self.new_clips} new clips), "
            f"{len(self.skipped)} already done, {len(self.failed)} unreadable"
        ]
        lines += [f"  unreadable: {name}: {why}" for name, why in sorted(self.failed.items())]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- finding videos


def find_videos(root: str | Path, exclude: Path | None = None) -> list[Path]:
    """Video files and frame folders under ``root`` (recursive; hidden entries skipped)."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UserInputError(f"videos folder {root} does not exist")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (exclude is None or (here / d).resolve() != exclude.resolve()))
        files = sorted(f for f in filenames if not f.startswith("."))
        found += [here / f for f in files if is_video_file(f)]
        if here != root and sum(is_image_file(f) for f in files) >= 2:
            found.append(here)  # a folder of frames is one video
    return sorted(found)


def _fingerprint(path: Path) -> dict[str, Any]:
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file()]
        mtime = max((p.stat().st_mtime for p in files), default=0.0)
        return {"bytes": sum(p.stat().st_size for p in files), "mtime": mtime, "files": len(files)}
    st = path.stat()
    return {"bytes": st.st_size, "mtime": st.st_mtime}


# ----------------------------------------------------------------------------- VAE


def load_vae(path: str | Path, device: str | None = None):
    """A diffusers-layout autoencoder from ``path`` (or ``path/vae``), in eval mode, on ``device``."""
    # lazy: torch takes seconds to import (start-up); only this path needs it
    import torch

    path = Path(path)
    if (path / "vae" / "config.json").is_file():
        path = path / "vae"
    if not (path / "config.json").is_file():
        raise UserInputError(f"--vae {path}: no config.json (expected a diffusers VAE folder or a pipeline)")
    name = json.loads((path / "config.json").read_text()).get("_class_name", "")
    if name == "SpaceToDepthAutoencoder":
        # lazy: diffusers (an optional extra) and torch load only on this path
        from stillmotion.diffusion.autoencoder import SpaceToDepthAutoencoder as cls
    else:
        # lazy: diffusers is an optional extra, imported only on this path
        import diffusers

        cls = getattr(diffusers, name, None)
        if cls is None:
            raise UserInputError(f"--vae {path}: unknown autoencoder class {name!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return cls.from_pretrained(str(path)).to(device).eval()


def encode_frames(vae, frames: np.ndarray, chunk: int = 8) -> np.ndarray:
    """uint8 (F, H, W, 3) -> float16 latents (F, C, h, w): the VAE's latent mode, unscaled."""
    # lazy: torch takes seconds to import (start-up); only this path needs it
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(frames), chunk):
            x = torch.from_numpy(frames[i : i + chunk]).to(vae.device).permute(0, 3, 1, 2).float() / 127.5 - 1
            out.append(vae.encode(x.to(vae.dtype)).latent_dist.mode().float().cpu().numpy())
    return np.concatenate(out).astype(np.float16)


# ----------------------------------------------------------------------------- clips of one video


def video_clips(
    frames: Iterator[Any], settings: PrepareSettings, flow_fn
) -> Iterator[tuple[int, list[Any], list[Any]]]:
    """(start, frames, flows) for each clip of a frame stream: lists of ``frames`` items and of the
    ``frames - 1`` results of ``flow_fn(item_k, item_k+1)``.

    Holds at most one clip of frames and flows; a flow is computed once per consecutive pair that
    lies inside some clip (pairs between non-overlapping clips are skipped).
    """
    n = settings.frames
    stride = settings.stride or n
    buf: list[Any] = []  # frames from index `first` on
    flows: list[Any] = []  # flows[i]: frame first+i -> first+i+1
    first = 0
    next_start = 0
    for index, frame in enumerate(frames):
        if index < next_start:
            continue  # between clips (stride > frames)
        if not buf:
            first = index
        if buf:
            flows.append(flow_fn(buf[-1], frame))
        buf.append(frame)
        if index == next_start + n - 1:
            lo = next_start - first
            yield next_start, buf[lo : lo + n], flows[lo : lo + n - 1]
            next_start += stride
            drop = max(0, min(next_start - first, len(buf)))
            buf, flows = buf[drop:], flows[drop:]
            first += drop


# ----------------------------------------------------------------------------- the cache


class _Cache:
    """The index of a cache folder being written, with the settings check."""

    def __init__(self, cache: Path, settings: PrepareSettings) -> None:
        self.path = cache
        cache.mkdir(parents=True, exist_ok=True)
        if (cache / "index.json").is_file():
            self.index = read_index(cache)
            mine, theirs = settings.cache_settings(), self.index["settings"]
            if mine != theirs:
                raise UserInputError(
                    f"cache {cache} was prepared with {theirs}, this run asks for {mine}: "
                    f"use another output folder (or the same --frames/--size/--vae)"
                )
        else:
            self.index = empty_index(settings.cache_settings())
            write_index(cache, self.index)

    def finished(self, key: str, fingerprint: dict[str, Any], settings: dict[str, Any]) -> bool:
        entry = self.index["videos"].get(key)
        return bool(entry and entry["fingerprint"] == fingerprint and entry["settings"] == settings)

    def remove(self, key: str) -> None:
        """Forget a video's clips (and delete its shards) before redoing it."""
        vid = video_id(key)
        for p in (self.path / "shards").glob(f"{vid}-*.safetensors"):
            p.unlink()
        self.index["videos"].pop(key, None)
        self.index["clips"] = [c for c in self.index["clips"] if c["video"] != key]

    def commit(self, key: str, fingerprint: dict[str, Any], settings: dict[str, Any],
               writer: ShardWriter, extra: dict[str, Any] | None = None) -> None:
        writer.flush()
        self.index["videos"][key] = {"fingerprint": fingerprint, "settings": settings,
                                     "shards": writer.shards, "clips": len(writer.records), **(extra or {})}
        self.index["clips"] += writer.records
        self.index["failed"].pop(key, None)
        write_index(self.path, self.index)

    def fail(self, key: str, reason: str) -> None:
        self.index["failed"][key] = reason
        write_index(self.path, self.index)


def _clip_record(video: str, start: int, frames: np.ndarray, flows: np.ndarray, camera_flows: np.ndarray,
                 threshold: float, source: str, latents: bool) -> dict[str, Any]:
    static, camera = is_static_camera(camera_flows, threshold)
    return {
        "video": video, "start": int(start), "frames": int(len(frames)),
        "height": int(frames.shape[1]), "width": int(frames.shape[2]),
        "strength": round(motion_strength(flows), 5), "camera_motion": round(camera, 5),
        "static_camera": bool(static), "latents": latents, "source": source,
    }


def _add_clip(writer: ShardWriter, record_args: dict[str, Any], frames: np.ndarray, flows: np.ndarray,
              vae, settings: PrepareSettings, extra: dict[str, Any] | None = None,
              camera_flows: np.ndarray | None = None) -> None:
    tensors = {"frames": frames, "flows": np.asarray(flows, np.float16)}
    if vae is not None:
        tensors["latents"] = encode_frames(vae, frames)
    camera_flows = flows if camera_flows is None else camera_flows
    record = _clip_record(frames=frames, flows=flows, camera_flows=camera_flows,
                          threshold=settings.static_threshold,
                          latents=vae is not None, **record_args)
    writer.add(record | (extra or {}), tensors)


def prepare_videos(
    videos: str | Path, cache: str | Path, settings: PrepareSettings | None = None, *, progress: bool = False
) -> PrepareReport:
    """Prepare every video under ``videos`` into the cache folder ``cache``; see the module doc."""
    settings = settings or PrepareSettings()
    settings.validate()
    cache = Path(cache)
    videos = Path(videos)
    found = find_videos(videos, exclude=cache)
    if not found:
        raise UserInputError(f"no videos or frame folders found under {videos}")
    store = _Cache(cache, settings)
    report = PrepareReport(cache)
    flow_fn = FlowEstimator(settings.flow_method, weights=settings.flow_weights)
    # Small caches: the camera test runs on a flow at ANALYSIS_SIZE (flow is too noisy below it).
    camera_size = None
    if min(settings.size) < ANALYSIS_SIZE:
        k = ANALYSIS_SIZE / min(settings.size)
        camera_size = (round(settings.size[0] * k), round(settings.size[1] * k))

    def pair_flows(a, b):
        return flow_fn(a[0], b[0]), (None if camera_size is None else flow_fn(a[1], b[1]))

    vae = load_vae(settings.vae) if settings.vae else None
    vsettings = settings.video_settings()
    shard_bytes = int(settings.shard_mb * 2**20)
    for path in progress_iter(found, desc="videos", enabled=progress, unit="video"):
        key = path.relative_to(videos).as_posix() if path != videos else path.name
        fingerprint = _fingerprint(path)
        if store.finished(key, fingerprint, vsettings):
            report.skipped.append(key)
            continue
        store.remove(key)
        writer = ShardWriter(cache, video_id(key), max_bytes=shard_bytes)
        try:
            source = open_frames(path, stride=settings.frame_step)
            total = source.frame_count
            bar = progress_bar(total=total, desc=path.name[:30], enabled=progress, unit="frame")

            def stream(source=source, bar=bar) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
                for frame in source:
                    bar.update(1)
                    yield crop_resize(frame, settings.size), (
                        crop_resize(frame, camera_size) if camera_size else None)

            with bar:
                for count, (start, items, flows) in enumerate(video_clips(stream(), settings, pair_flows)):
                    if settings.max_clips_per_video is not None and count >= settings.max_clips_per_video:
                        break
                    frames = np.stack([f for f, _ in items])
                    small = np.stack([f for f, _ in flows])
                    camera = small if camera_size is None else np.stack([c for _, c in flows])
                    _add_clip(writer, {"video": key, "start": start, "source": "video"}, frames, small,
                              vae, settings, camera_flows=camera)
            store.commit(key, fingerprint, vsettings, writer, {"fps": source.fps})
            report.done.append(key)
            report.new_clips += len(writer.records)
        except Exception as exc:  # never abort the run for one bad video; list it instead
            for rel in writer.shards:
                (cache / rel).unlink(missing_ok=True)
            reason = str(exc) if isinstance(exc, UserInputError) else f"{type(exc).__name__}: {exc}"
            store.fail(key, reason)
            report.failed[key] = reason
    report.failed = dict(store.index["failed"]) | report.failed
    return _finish(report, store)


def prepare_synthetic(
    photos: str | Path,
    cache: str | Path,
    settings: PrepareSettings | None = None,
    *,
    clips_per_photo: int = 4,
    seed: int = 0,
    speed: tuple[float, float] | None = None,
    progress: bool = False,
) -> PrepareReport:
    """Animate photos (a folder, or ``"skimage"``) along random arrow fields into the cache.

    ``speed``: (min, max) per-frame arrow speed in px at a 512-px frame (default 0.5-4)."""
    speed = SPEED if speed is None else (float(speed[0]), float(speed[1]))
    if not 0 <= speed[0] <= speed[1] or not np.isfinite(speed[1]):
        raise UserInputError(f"--speed must be MIN,MAX with 0 <= MIN <= MAX, got {speed[0]:g},{speed[1]:g}")

    settings = settings or PrepareSettings()
    settings.validate()
    cache = Path(cache)
    found = find_photos(photos)
    if not found:
        raise UserInputError(f"no photos found under {photos}")
    store = _Cache(cache, settings)
    report = PrepareReport(cache)
    vae = load_vae(settings.vae) if settings.vae else None
    vsettings = {"frames": settings.frames, "size": list(settings.size), "vae": settings.vae,
                 "clips_per_photo": clips_per_photo, "seed": seed,
                 "static_threshold": settings.static_threshold}
    if speed != SPEED:  # caches made before the option existed stay valid
        vsettings["speed"] = list(speed)
    for i, (name, load) in enumerate(progress_iter(found, desc="photos", enabled=progress, unit="photo")):
        key = f"synthetic:{name}"
        fingerprint = {"photo": name}
        if store.finished(key, fingerprint, vsettings):
            report.skipped.append(key)
            continue
        store.remove(key)
        writer = ShardWriter(cache, video_id(key), max_bytes=int(settings.shard_mb * 2**20))
        try:
            photo = load()
            for frames, flows, meta in synthetic_clips(photo, clips_per_photo, frames=settings.frames,
                                                       size=settings.size, seed=seed * 100_003 + i,
                                                       speed=speed):
                _add_clip(writer, {"video": key, "start": 0, "source": "synthetic"}, frames, flows,
                          vae, settings, {"arrows": meta["arrows"]})
            store.commit(key, fingerprint, vsettings, writer)
            report.done.append(key)
            report.new_clips += len(writer.records)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, UserInputError) else f"{type(exc).__name__}: {exc}"
            store.fail(key, reason)
            report.failed[key] = reason
    return _finish(report, store)


def _finish(report: PrepareReport, store: _Cache) -> PrepareReport:
    report.clips = len(store.index["clips"])
    report.static_clips = sum(c["static_camera"] for c in store.index["clips"])
    # Shards no clip refers to (left by an interrupted run) are deleted.
    used = {c["shard"] for c in store.index["clips"]}
    for p in (store.path / "shards").glob("*.safetensors") if (store.path / "shards").is_dir() else ():
        if f"shards/{p.name}" not in used:
            p.unlink()
    for p in store.path.glob("shards/.*.tmp*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return report
