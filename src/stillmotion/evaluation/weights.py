"""Where the metric networks' weight files are looked for, and how a missing one is reported.

Nothing is downloaded. Each learned metric (FVD's I3D, LPIPS, Tem-Cons' CLIP) looks in the path the
user gave, then in a few standard local places; when nothing is found it raises
:class:`MetricUnavailable` listing every place it looked, and the benchmark reports the metric as
"not computed" with that list instead of stopping.

Standard places (first hit wins):

- ``$STILLMOTION_WEIGHTS`` (default ``~/.cache/stillmotion/weights``) for every file below;
- I3D: ``i3d_torchscript.pt`` (StyleGAN-V's TorchScript export), ``i3d_kinetics400.safetensors``,
  ``rgb_imagenet.pt`` (pytorch-i3d's Kinetics-400 state dict);
- LPIPS: AlexNet ``alexnet-owt-*.pth`` / ``alexnet.safetensors`` (also torch hub's
  ``~/.cache/torch/hub/checkpoints``) and the heads ``alex.pth`` / ``lpips_alex.safetensors``
  (also the ``weights/v0.1`` folder of an installed ``lpips`` package);
- CLIP: a local model folder, else the Hugging Face cache (offline) for the ids in ``CLIP_HUB_IDS``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file


class MetricUnavailable(Exception):
    """A metric cannot be computed (its weights are missing); the message says where we looked."""

    def __init__(self, metric: str, looked_in: Sequence[str | os.PathLike], detail: str = "") -> None:
        self.metric = metric
        self.looked_in = [str(p) for p in looked_in]
        self.detail = detail
        where = "; ".join(self.looked_in) if self.looked_in else "nowhere"
        super().__init__(f"{metric} not computed: {detail or 'weights not found'} (looked in: {where})")


def weights_home() -> Path:
    return Path(os.environ.get("STILLMOTION_WEIGHTS", Path.home() / ".cache" / "stillmotion" / "weights"))


def torch_hub_checkpoints() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"


def find_first(folders: Iterable[Path], patterns: Sequence[str]) -> tuple[Path | None, list[str]]:
    """First file matching one of ``patterns`` (globs, in order) in ``folders``; also what was searched."""
    looked: list[str] = []
    for folder in folders:
        for pat in patterns:
            looked.append(str(folder / pat))
            if folder.is_dir():
                hits = sorted(folder.glob(pat))
                if hits:
                    return hits[0], looked
    return None, looked


def load_state_dict(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A tensor dict from safetensors or a ``torch.save`` file (``weights_only=True``: no pickled code)."""
    if path.suffix == ".safetensors":
        return load_file(str(path), device=str(device))
    sd = torch.load(path, map_location=device, weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(sd).__name__})")
    # DataParallel checkpoints prefix every key with "module."
    return {k.removeprefix("module."): v for k, v in sd.items()}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
