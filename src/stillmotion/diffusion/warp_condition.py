"""Warped image conditioning: the frames of the conditioning image moved along the motion field.

SVD concatenates the same image latent to every frame's noisy latent. A model whose
``MotionAdapter`` has ``warped_image_condition`` set gets instead, for frame t, the input image
carried t steps along the motion field by the warp engine's renderer (:mod:`stillmotion.motion.eulerian`,
forward, no loop): a
static field (arrows), or one field per frame step (a real video's optical flows, step t -> t+1 along
flow t; the model was trained on static fields, which these generalise). This is not in the paper:
it is an addition for small models trained briefly on a CPU, which learn to follow a spatially
aligned input long before they learn to move content from the motion cross-attention alone
(measured in docs/training.md). The paper's conditioning (motion encoder, cross-attention,
strength) stays in place; without a motion field the conditioning is the still image, exactly as in
SVD. The same function makes the training inputs and the inference inputs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np
import torch

from stillmotion.motion.eulerian import warp_frames


def warped_image_frames(
    image: np.ndarray, field: np.ndarray, frames: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """uint8 (H, W, 3) image, float32 (H, W, 2) px/frame field (or (F, H, W, 2), one per frame step) ->
    uint8 (frames, H, W, 3); frame 0 is the image itself."""
    field = np.ascontiguousarray(field, dtype=np.float32)
    h, w = image.shape[:2]
    out = np.empty((frames, h, w, 3), np.uint8)
    for t, frame in enumerate(warp_frames(np.ascontiguousarray(image), field, frames=frames, loop=False,
                                          mask=mask)):
        out[t] = frame
    return out


# Warp guidance's reference is rendered at this many times the working size and area-averaged back: the
# warp copies fine texture at whole pixels, which at the working size moves it in whole-pixel jumps
# (measured in docs/diffusion-engine.md).
REFERENCE_SUPERSAMPLE = 2


class WarpedCondition:
    """The per-frame conditioning latents of a whole video, made per window on demand.

    Nothing is rendered up front: the warp runs forward as windows ask for frames, and only the last
    ``keep`` rendered frames are held, so memory does not grow with the video's length (the long-video
    samplers ask for windows in increasing order; a window that starts before the held frames restarts
    the warp from frame 0, which costs time, not memory). A window's latents are encoded when asked
    for and the last few windows kept. Frame t's noise augmentation comes from a generator seeded with
    ``seed + t``: the latents do not depend on the order windows are asked for.
    """

    def __init__(
        self, image: np.ndarray, field: np.ndarray, frames: int, mask: np.ndarray | None,
        encode: Callable[[torch.Tensor], torch.Tensor], *, noise_aug_strength: float, seed: int,
        keep: int = 64, cache_size: int = 4, loop: bool = False, supersample: int = 1,
    ) -> None:
        self.image = np.ascontiguousarray(image)
        # >1: the warp runs at this many times the size and each frame is area-averaged back (warp guidance's
        # reference): the warp copies fine texture at whole pixels, at twice the size at half-pixel steps.
        # Still pixels are the image's own either way.
        self.supersample = max(1, int(supersample))
        self.field = np.ascontiguousarray(field, dtype=np.float32)
        self.mask, self.num_frames, self.keep = mask, int(frames), max(1, int(keep))
        self.encode, self.noise_aug_strength, self.seed = encode, noise_aug_strength, int(seed)
        self.cache_size = cache_size
        self.loop = bool(loop)  # the warp engine's seamless loop of period ``frames`` (warp guidance)
        self.restarts = 0  # times the warp went back to frame 0 (a window before the held frames)
        self._cache: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._held: OrderedDict[int, np.ndarray] = OrderedDict()
        self._warp: Iterator[np.ndarray] | None = None
        self._next = 0  # the frame the warp yields next

    def starting_from(self, image: np.ndarray, frames: int, seed: int, index: int = 0) -> WarpedCondition:
        """The same field, mask and encoder from another first frame (uint8 (H, W, 3), e.g. the last
        frame of a clip that conditions the next one), ``frames`` long; ``index``: that frame's place in
        the video, where a per-frame field sequence is picked up."""
        field = self.field
        if field.ndim == 4:
            field = field[min(index, len(field) - 1) :]
        return WarpedCondition(
            image, field, frames, self.mask, self.encode, noise_aug_strength=self.noise_aug_strength,
            seed=seed, keep=self.keep, cache_size=self.cache_size, loop=self.loop,
            supersample=self.supersample,
        )  # fmt: skip

    def frames(self, start: int, stop: int) -> np.ndarray:
        """uint8 ``(stop - start, H, W, 3)``: the warped frames ``start:stop``."""
        if not 0 <= start < stop <= self.num_frames:
            raise IndexError(f"frames {start}:{stop} outside 0:{self.num_frames}")
        if self._warp is None or (start < self._next and start not in self._held):
            self.restarts += self._warp is not None
            self._warp = self._render()
            self._held.clear()
            self._next = 0
        out = np.empty((stop - start, *self.image.shape), np.uint8)
        for t in range(start, min(stop, self._next)):
            out[t - start] = self._held[t]
        while self._next < stop:
            frame = next(self._warp)
            if self._next >= start:
                out[self._next - start] = frame
            self._held[self._next] = frame
            self._next += 1
            while len(self._held) > self.keep:
                self._held.popitem(last=False)
        return out

    def _render(self) -> Iterator[np.ndarray]:
        """The warp's frames from frame 0, at the image's size."""
        s = self.supersample
        if s == 1:
            return warp_frames(self.image, self.field, frames=self.num_frames, loop=self.loop, mask=self.mask)
        import cv2

        h, w = self.image.shape[:2]
        big = cv2.resize(self.image, (w * s, h * s), interpolation=cv2.INTER_CUBIC)
        resize = cv2.INTER_LINEAR
        if self.field.ndim == 3:
            field = cv2.resize(self.field, (w * s, h * s), interpolation=resize) * np.float32(s)
        else:
            field = np.stack([cv2.resize(f, (w * s, h * s), interpolation=resize) for f in self.field])
            field *= np.float32(s)
        still = None if self.mask is None else ~np.asarray(self.mask, bool)
        mask = None
        if self.mask is not None:
            mask = cv2.resize(np.asarray(self.mask, np.uint8), (w * s, h * s),
                              interpolation=cv2.INTER_NEAREST)
            mask = mask.astype(bool)

        def frames() -> Iterator[np.ndarray]:
            for frame in warp_frames(big, field, frames=self.num_frames, loop=self.loop, mask=mask):
                small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
                if still is not None:
                    small[still] = self.image[still]
                yield small

        return frames()

    def window(self, start: int, stop: int) -> torch.Tensor:
        """Latents ``[1, stop - start, C, h, w]`` (unscaled) of frames ``start:stop``."""
        key = (start, stop)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        pixels = to_pixels(self.frames(start, stop))
        if self.noise_aug_strength:
            noise = torch.stack([_frame_noise(pixels.shape[1:], self.seed + t)
                                 for t in range(start, stop)])
            pixels = pixels + self.noise_aug_strength * noise
        latents = self.encode(pixels)[None]
        self._cache[key] = latents
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return latents


def static_field(flows: torch.Tensor) -> np.ndarray:
    """A clip's per-frame flows ``[F-1, 2, H, W]`` -> the one static field (H, W, 2) the model is shown:
    their mean, as a user's arrows give one field for the whole clip."""
    return flows.float().mean(0).permute(1, 2, 0).contiguous().cpu().numpy()


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float32 [F, 3, H, W] in [-1, 1] (what the VAE encodes)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


def _frame_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))
