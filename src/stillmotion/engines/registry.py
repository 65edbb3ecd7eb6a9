"""The engines a user picks by name (``--engine``, ``engine=``, the web page), what each takes, and its entry.

Every engine registers an :class:`EngineInfo`: its name, its defaults, which inputs it takes, the names of
its own options, and the module holding its entry point, an :class:`Engine`::

    render(scene, field, request: RenderRequest, options: dict) -> (iterator of uint8 frames, stats dict)

The module is imported only when the engine runs: the registry itself loads nothing heavy, so the CLI starts
fast and an engine whose extra is not installed is reported, not failed on at start-up. The API, the CLI and
the web app look engines up here instead of comparing names. Adding an engine: write the entry point (a
module under ``engines/``), then ``register(EngineInfo(...))`` below; ``--engine`` offers it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from stillmotion.engines.options import DiffusionOptions, RenderRequest, option_names
from stillmotion.errors import UserInputError

if TYPE_CHECKING:  # types only: the registry imports nothing an engine needs (the CLI starts fast)
    import numpy as np

    from stillmotion.inputs.scene import Scene


class Engine(Protocol):
    """An engine's entry point: the scene and its motion field (None: no motion given) -> frames and stats
    (complete once the frames are exhausted). ``options`` holds only names the engine registered."""

    def __call__(
        self, scene: Scene, field: np.ndarray | None, request: RenderRequest, options: dict[str, Any]
    ) -> tuple[Iterator[np.ndarray], dict[str, Any]]: ...


@dataclass(frozen=True)
class EngineInfo:
    """One engine as the front ends see it.

    - ``module``: where its ``render`` entry point (an :class:`Engine`) lives, imported when it runs.
    - ``default_frames`` / ``default_fps``: when the user gives none.
    - ``needs_motion``: refuses a scene without a field (nothing to animate).
    - ``loops_sequences``: a per-frame field sequence can loop (False: it animates forward only).
    - ``fits_size``: the engine brings the scene to a size its model accepts and takes ``--size`` as its
      generation size (True), or animates the scene as given, resized to ``--size`` first (False).
    - ``options``: the names of its own options (besides frames, fps, strength, loop, progress, size).
    - ``extra``: the pip extra that installs what it needs, named when a package is missing.
    - ``activity``: what the front ends say while it works; ``step_progress``: it shows a progress bar of
      its own model steps (before frames come out), beside a writer's bar of frames.
    """

    name: str
    module: str
    default_frames: int
    default_fps: float
    needs_motion: bool = False
    loops_sequences: bool = True
    fits_size: bool = False
    options: tuple[str, ...] = ()
    extra: str | None = None
    activity: str = "animating"
    step_progress: bool = False

    def load(self) -> Engine:
        """The entry point; a missing module or package is a UserInputError saying what to install."""
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if self.extra is None:
                raise
            if exc.name and exc.name.startswith(self.module):
                raise UserInputError(
                    f"{self.name} engine not available: {self.module} is not installed"
                ) from None
            raise UserInputError(
                f"{self.name} engine not available: missing package {exc.name!r} "
                f"(pip install 'stillmotion[{self.extra}]')"
            ) from None
        return module.render

    def check_options(self, options: dict[str, Any]) -> None:
        """Option names this engine does not take are a UserInputError naming them (and its options)."""
        unknown = sorted(set(options) - set(self.options))
        if not unknown:
            return
        if not self.options:
            raise UserInputError(f"the {self.name} engine takes no option(s) {', '.join(unknown)}")
        raise UserInputError(
            f"the {self.name} engine takes no option(s) {', '.join(unknown)}; its options: "
            f"{', '.join(sorted(self.options))}"
        )


_ENGINES: dict[str, EngineInfo] = {}


def register(info: EngineInfo) -> EngineInfo:
    """Add an engine (a name registered again is replaced)."""
    _ENGINES[info.name] = info
    return info


def engine_names() -> tuple[str, ...]:
    """The registered engines' names, in registration order."""
    return tuple(_ENGINES)


def get_engine(name: object) -> EngineInfo:
    """The engine of that name; any other value is a UserInputError listing the engines."""
    if not isinstance(name, str) or name not in _ENGINES:
        raise UserInputError(f"engine {name!r} is unknown; choose one of {', '.join(_ENGINES)}")
    return _ENGINES[name]


# frames, fps when not given: a 3-second seamless loop for the warp engine; one SVD base clip.
register(EngineInfo("warp", "stillmotion.engines.warp", 90, 30.0, needs_motion=True,
                    loops_sequences=False))  # fmt: skip
register(EngineInfo("diffusion", "stillmotion.engines.diffusion", 25, 8.0, fits_size=True,
                    options=option_names(DiffusionOptions), extra="diffusion",
                    activity="denoising", step_progress=True))  # fmt: skip
