"""Training samples from a clip cache, in an order that is a pure function of (seed, sample number).

:class:`ClipDataset` turns ``(clip index, sample seed)`` into one sample: a random window of
``num_frames`` frames (every ``frame_step``-th) inside the clip and, with ``flip``, a random
horizontal flip that also negates the flow's x component. :class:`ClipSampler` yields those pairs:
global sample ``g`` is clip ``perm_e[g % N]`` of epoch ``e = g // N`` (a fresh permutation per
epoch from the seed) with sample seed ``hash(seed, g)``; process ``rank`` of ``world_size`` takes
its slice of every global batch. So the data a step sees depends only on the seed and the step
number - not on worker count, timing or a resume point - which is what makes ``--resume`` exact.

A sample (numpy, collated to torch by the DataLoader)::

    frames  uint8   (F, 3, H, W)       (absent when latents are read instead)
    image   uint8   (3, H, W)          the first frame, only when latents are read
    flows   float16 (F-1, 2, H, W)     flow k -> k+1 in px/frame of the cached frame size
    latents float16 (F, C, h, w)       when ``use_latents`` (cache made with a VAE)
    strength float32                   eq. 8 over the sampled window, px/frame at 512 px
    static  bool                       the clip's static-camera flag
    seed    int64                      the sample's seed (trainers draw its noise from it)

Cached latents cannot be flipped (a VAE's latents are not mirror-symmetric), so ``flip`` and
``use_latents`` exclude each other.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from stillmotion.errors import UserInputError
from stillmotion.motion.strength import motion_strength

from .cache import ClipCache


def _mix(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1, np.uint64)[0])


class ClipDataset(torch.utils.data.Dataset):
    """Samples from one or more clip caches (all of one frame size)."""

    def __init__(
        self,
        caches: str | Path | ClipCache | Sequence[str | Path | ClipCache],
        *,
        num_frames: int,
        frame_step: int = 1,
        flip: bool = True,
        static_only: bool = False,
        use_latents: bool = False,
        clip_ids: set[str] | None = None,
        exclude_ids: set[str] | None = None,
    ) -> None:
        if flip and use_latents:
            raise UserInputError("flip augmentation cannot be used with cached latents: set flip=false")
        if num_frames < 2 or frame_step < 1:
            raise UserInputError(
                f"num_frames must be >= 2 and frame_step >= 1, got {num_frames}, {frame_step}"
            )

        def keep(c: dict[str, Any]) -> bool:
            return (
                (not static_only or c["static_camera"])
                and (clip_ids is None or c["id"] in clip_ids)
                and (exclude_ids is None or c["id"] not in exclude_ids)
                and (c["frames"] - 1) // frame_step + 1 >= num_frames
                and (not use_latents or c.get("latents", False))
            )

        if isinstance(caches, str | Path | ClipCache):
            caches = [caches]
        self.caches = [c if isinstance(c, ClipCache) else ClipCache(c) for c in caches]
        if not self.caches:
            raise UserInputError("no clip cache given")
        sizes = {tuple(c.settings["size"]) for c in self.caches}
        if len(sizes) > 1:
            raise UserInputError(f"clip caches differ in frame size {sorted(sizes)}: prepare them alike")
        self.items = [
            (k, i) for k, cache in enumerate(self.caches) for i, c in enumerate(cache.clips) if keep(c)
        ]
        if not self.items:
            what = " static-camera" if static_only else ""
            where = ", ".join(str(c.path) for c in self.caches)
            raise UserInputError(
                f"clip cache {where} has no{what} clips with at least {num_frames} frames "
                f"(frame_step {frame_step}{', with latents' if use_latents else ''})"
            )
        self.num_frames, self.frame_step = num_frames, frame_step
        self.flip, self.use_latents = flip, use_latents

    def __len__(self) -> int:
        return len(self.items)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the samples."""
        w, h = self.caches[0].settings["size"]
        return int(h), int(w)

    def record(self, index: int) -> dict[str, Any]:
        k, i = self.items[index]
        return self.caches[k].clips[i]

    @property
    def clip_ids(self) -> list[str]:
        return [self.record(j)["id"] for j in range(len(self))]

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, Any]:
        index, seed = item if isinstance(item, tuple) else (item, item)
        rng = np.random.default_rng(seed)
        k, i = self.items[index]
        cache, clip = self.caches[k], self.caches[k].clips[i]
        span = (self.num_frames - 1) * self.frame_step + 1
        start = int(rng.integers(0, clip["frames"] - span + 1))
        flip = bool(self.flip and rng.random() < 0.5)
        stop = start + span
        flows = cache.read(i, "flows", start, stop - 1)
        if self.frame_step > 1:
            # The flow over k steps, approximated by the sum of the per-frame flows (exact for
            # uniform motion; no frames are re-read to recompute it).
            n = self.num_frames - 1
            flows = flows.astype(np.float32).reshape(n, self.frame_step, *flows.shape[1:]).sum(1)
        out: dict[str, Any] = {}
        if self.use_latents:
            out["latents"] = cache.read(i, "latents", start, stop, self.frame_step)
            first = cache.read(i, "frames", start, start + 1)[0]
            out["image"] = np.ascontiguousarray(first.transpose(2, 0, 1))
        else:
            frames = cache.read(i, "frames", start, stop, self.frame_step)
            if flip:
                frames = frames[:, :, ::-1]
            out["frames"] = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
        flows = flows.astype(np.float16)
        if flip:
            flows = flows[:, :, ::-1].copy()
            flows[..., 0] *= -1
        out["flows"] = np.ascontiguousarray(flows.transpose(0, 3, 1, 2))
        out["strength"] = np.float32(motion_strength(flows.astype(np.float32)))
        out["static"] = bool(clip["static_camera"])
        out["seed"] = np.int64(seed & 0x7FFFFFFFFFFFFFFF)  # trainers draw its noise from it
        return out


class ClipSampler(torch.utils.data.Sampler):
    """Endless stream of ``(clip index, sample seed)`` for one process, starting at a given step."""

    def __init__(
        self,
        num_clips: int,
        batch_size: int,
        *,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n, self.batch_size, self.seed = num_clips, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self._perm: tuple[int, np.ndarray] | None = None

    def global_sample(self, g: int) -> tuple[int, int]:
        epoch, pos = divmod(g, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng(_mix(self.seed, epoch, 0xC11)).permutation(self.n))
        return int(self._perm[1][pos]), _mix(self.seed, g, 0x5A)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        global_batch = self.batch_size * self.world_size
        step = self.start_step
        while True:
            first = step * global_batch + self.rank * self.batch_size
            for g in range(first, first + self.batch_size):
                yield self.global_sample(g)
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs a number for its progress estimate
        return 2**62


def make_loader(
    dataset: ClipDataset,
    batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 2,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """An endless DataLoader over ``dataset`` from ``start_step`` on (this process's share of each batch)."""
    sampler = ClipSampler(len(dataset), batch_size, seed=seed, start_step=start_step, rank=rank,
                          world_size=world_size)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=True,
    )


def fixed_batch(dataset: ClipDataset, size: int, seed: int = 1234) -> dict[str, torch.Tensor]:
    """A deterministic batch (for held-out evaluation): ``size`` samples spread over the clips."""
    picks = [(i * len(dataset) // size if size <= len(dataset) else i % len(dataset), _mix(seed, i))
             for i in range(size)]
    return default_collate([dataset[p] for p in picks])
