"""The options every engine is called with: the shared request, and the diffusion engine's own options.

Plain dataclasses with no heavy imports, so the registry, the API, the CLI and the web app can read the
option names without loading an engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RenderRequest:
    """What the API hands every engine, already checked: ``frames`` and ``fps`` of the video, ``strength`` (a
    speed factor on the field), ``loop`` (a seamless loop or forward motion), ``progress`` (show a bar) and
    ``size`` (W, H): the generation size of an engine that fits the scene to its model (None: its own
    choice); an engine that works at the scene's size gets the scene already brought to it."""

    frames: int
    fps: float
    strength: float = 1.0
    loop: bool = True
    progress: bool = False
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class DiffusionOptions:
    """The diffusion engine's options, for both backbones (Stable Video Diffusion and Wan 2.x).

    Both: ``model`` (folder or cached hub id; None: the bundled model), ``steps`` (None: the model's
    default), ``seed``, ``device``, ``dtype``, ``offload``, ``long_method`` with ``gamma``, ``omega``,
    ``overlap``, ``branch_sigma``, ``carry``, ``stride`` (long videos), ``decode_chunk_size``, ``control``
    (auto, trained, warp-guided, none) with ``follow``, ``freedom`` and ``loop`` (warp-guided control's
    reference a seamless loop), ``on_step(done, total)`` after every model call.
    SVD only: ``refine``, ``chunk_frames``, ``min_guidance_scale``, ``max_guidance_scale``,
    ``motion_bucket_id``, ``noise_aug_strength``. Wan only: ``prompt``, ``negative_prompt``, ``guidance``,
    ``guidance_2``, ``flow_shift``, ``vae_tiling``."""

    model: str | Path | None = None
    steps: int | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    offload: bool = False
    refine: bool = True
    long_method: str | None = None
    gamma: float = 0.8
    omega: float = 0.2
    overlap: int | None = None
    branch_sigma: float | None = None
    carry: str = "motion"
    stride: int | None = None
    chunk_frames: int | None = None
    decode_chunk_size: int = 8
    min_guidance_scale: float | None = None
    max_guidance_scale: float | None = None
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    control: str = "auto"
    follow: float | None = None
    freedom: float | None = None
    loop: bool = False
    on_step: Callable[[int, int], None] | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    guidance: float | None = None
    guidance_2: float | None = None
    flow_shift: float | None = None
    vae_tiling: bool = False


def option_names(options_type: type) -> tuple[str, ...]:
    """The field names of an options dataclass, in order."""
    return tuple(f.name for f in dataclasses.fields(options_type))
