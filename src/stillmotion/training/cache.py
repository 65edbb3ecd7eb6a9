"""The training-clip cache written by ``stillmotion prepare``: safetensors shards + a JSON index.

Layout of a cache folder::

    index.json                   settings, every clip's record, finished and failed videos
    shards/<video-id>-<n>.safetensors

Each clip ``c`` in a shard holds (F frames of H x W):

    <c>.frames   uint8   (F, H, W, 3)      RGB
    <c>.flows    float16 (F-1, H, W, 2)    (dx, dy) px/frame from frame k to k+1 (project convention)
    <c>.latents  float16 (F, C, h, w)      only when a VAE was given: the VAE's latent mode of each
                                           frame, *unscaled* (multiply by the VAE's scaling_factor)

A clip record in ``index.json["clips"]``::

    {"id": "fountain-1a2b3c4d/0002", "shard": "shards/fountain-1a2b3c4d-000.safetensors", "key": "c0002",
     "video": "dyntex/fountain.avi", "start": 48, "frames": 25, "height": 512, "width": 512,
     "strength": 1.73,            # eq. 8, px/frame at a 512-px frame (stillmotion.motion.strength)
     "camera_motion": 0.04,       # global (affine) motion, px/frame at 512 px (training.camera)
     "static_camera": true, "latents": false, "source": "video"}

Shards are written atomically and the index is rewritten atomically after every finished video, so
a killed ``prepare`` leaves a valid cache; unfinished videos are redone on the next run. Reading is
lazy: :class:`ClipCache` memory-maps shards and slices only the frames a sample needs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from stillmotion.errors import UserInputError
from stillmotion.io.atomic import atomic_path

INDEX_NAME = "index.json"
INDEX_VERSION = 1


def video_id(relpath: str) -> str:
    """A file-name-safe, unique id for a video: its stem plus a hash of its relative path."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(relpath).stem)[:40] or "video"
    return f"{stem}-{hashlib.sha1(relpath.encode()).hexdigest()[:8]}"


def empty_index(settings: dict[str, Any]) -> dict[str, Any]:
    return {"version": INDEX_VERSION, "settings": settings, "videos": {}, "failed": {}, "clips": []}


def read_index(cache: str | Path) -> dict[str, Any]:
    path = Path(cache) / INDEX_NAME
    if not path.is_file():
        raise UserInputError(
            f"{cache} is not a clip cache (no {INDEX_NAME}); create it with `stillmotion prepare`"
        )
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(index, dict):
        raise UserInputError(
            f"{path} is not a clip-cache index (expected a JSON object, got {type(index).__name__}); "
            "remove it or choose another cache folder"
        )
    if index.get("version") != INDEX_VERSION:
        raise UserInputError(f"{path} has index version {index.get('version')}, expected {INDEX_VERSION}")
    return index


def write_index(cache: str | Path, index: dict[str, Any]) -> None:
    with atomic_path(Path(cache) / INDEX_NAME) as tmp:
        tmp.write_text(json.dumps(index, indent=1))


class ShardWriter:
    """Collects the clips of one video and writes them in shards of at most ``max_bytes`` each.

    Memory holds at most one shard's clips, so a long video never needs more than that.
    """

    def __init__(self, cache: str | Path, vid: str, *, max_bytes: int = 256 << 20) -> None:
        self.cache = Path(cache)
        self.vid = vid
        self.max_bytes = max_bytes
        self._tensors: dict[str, np.ndarray] = {}
        self._pending: list[dict[str, Any]] = []
        self._bytes = 0
        self.records: list[dict[str, Any]] = []
        self.shards: list[str] = []
        self._count = 0

    def add(self, record: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        key = f"c{self._count:04d}"
        self._count += 1
        record = {"id": f"{self.vid}/{key[1:]}", "key": key, **record}
        for name, arr in tensors.items():
            self._tensors[f"{key}.{name}"] = np.ascontiguousarray(arr)
            self._bytes += arr.nbytes
        self._pending.append(record)
        if self._bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return

        rel = f"shards/{self.vid}-{len(self.shards):03d}.safetensors"
        with atomic_path(self.cache / rel) as tmp:
            save_file(self._tensors, str(tmp))
        for r in self._pending:
            r["shard"] = rel
        self.records += self._pending
        self.shards.append(rel)
        self._tensors, self._pending, self._bytes = {}, [], 0


class ClipCache:
    """Read-only view of a cache: clip records (optionally filtered) and lazy, sliced tensor reads.

    Safe to hand to DataLoader workers: open shard handles are dropped when pickled and reopened
    in each worker on first use.
    """

    def __init__(self, path: str | Path, *, where: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.path = Path(path)
        self.index = read_index(self.path)
        clips = self.index["clips"]
        self.clips: list[dict[str, Any]] = [c for c in clips if where(c)] if where else list(clips)
        self._handles: dict[str, Any] = {}

    @property
    def settings(self) -> dict[str, Any]:
        return self.index["settings"]

    def __len__(self) -> int:
        return len(self.clips)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def _open(self, shard: str) -> Any:
        handle = self._handles.get(shard)
        if handle is None:
            file = self.path / shard
            if not file.is_file():
                raise UserInputError(f"clip cache {self.path}: shard {shard} is missing (re-run prepare)")
            handle = self._handles[shard] = safe_open(str(file), framework="numpy")
        return handle

    def has(self, i: int, name: str) -> bool:
        c = self.clips[i]
        return f"{c['key']}.{name}" in self._open(c["shard"]).keys()

    def read(self, i: int, name: str, start: int = 0, stop: int | None = None, step: int = 1) -> np.ndarray:
        """``name`` (frames, flows, latents) of clip ``i``, rows ``start:stop:step`` only."""
        c = self.clips[i]
        sl = self._open(c["shard"]).get_slice(f"{c['key']}.{name}")
        if step == 1:
            return np.asarray(sl[start:stop])
        return np.asarray(sl[start:stop])[::step]  # slices with a step are not supported lazily
