"""LPIPS (Zhang et al. 2018), version 0.1 with the AlexNet backbone, in plain PyTorch.

Two local files:

- the AlexNet backbone as torchvision saves it (``alexnet-owt-*.pth``: keys ``features.0.weight``
  ... ``features.10.bias``; ``classifier.*`` keys are ignored) or the same keys in
  ``alexnet.safetensors``;
- the learned linear heads as the ``lpips`` package ships them (``alex.pth``: keys
  ``lin0.model.1.weight`` ... ``lin4.model.1.weight``, each (1, C, 1, 1)) or ``lpips_alex.safetensors``.

Both are read with safetensors or ``torch.load(weights_only=True)``. The distance: inputs in
[-1, 1] shifted and scaled by LPIPS' constants, AlexNet relu1..relu5 features, each normalised to
unit length over channels, squared difference, weighted by the 1x1 head, spatial mean, summed over
the five layers.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stillmotion.evaluation.weights import (
    MetricUnavailable,
    find_first,
    load_state_dict,
    resolve_device,
    torch_hub_checkpoints,
    weights_home,
)

# LPIPS' ScalingLayer constants (its inputs are in [-1, 1]).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 192, 384, 256, 256)
BACKBONE_FILES = ("alexnet-owt-*.pth", "alexnet.safetensors")
HEAD_FILES = ("alex.pth", "lpips_alex.safetensors")
# Indices in torchvision's ``features`` after which relu1..relu5 are taken.
_RELU_AT = (1, 4, 7, 9, 11)


class AlexNetFeatures(nn.Module):
    """AlexNet's convolutional part with torchvision's module indices (so its state dict keys match)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _RELU_AT:
                outs.append(x)
        return outs


class LinearHead(nn.Module):
    """1x1 conv to one channel; ``model.1`` so the key matches lpips' Sequential(Dropout, Conv2d)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS distance; ``forward(a, b)`` takes (N, 3, H, W) in [-1, 1] and returns (N,)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = AlexNetFeatures()
        for i, c in enumerate(CHANNELS):
            self.add_module(f"lin{i}", LinearHead(c))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_files(cls, backbone: str | os.PathLike, heads: str | os.PathLike) -> LPIPS:
        model = cls()
        sd = load_state_dict(Path(backbone))
        feats = {k: v for k, v in sd.items() if k.startswith("features.")}
        try:
            model.net.load_state_dict(feats, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"{backbone} is not a torchvision AlexNet state dict: {str(exc)[:300]}"
            ) from None
        head_sd = load_state_dict(Path(heads))
        want = {f"lin{i}.model.1.weight" for i in range(len(CHANNELS))}
        if not want <= set(head_sd):
            raise ValueError(f"{heads} lacks LPIPS head keys {sorted(want - set(head_sd))}")
        for i in range(len(CHANNELS)):
            getattr(model, f"lin{i}").model[1].weight.data.copy_(head_sd[f"lin{i}.model.1.weight"])
        return model.eval()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa = self.net((a - self.shift) / self.scale)
        fb = self.net((b - self.shift) / self.scale)
        total = torch.zeros(a.shape[0], device=a.device, dtype=a.dtype)
        for i, (x, y) in enumerate(zip(fa, fb, strict=True)):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{i}")((x - y) ** 2).mean(dim=(1, 2, 3))
        return total


def find_lpips_files(folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(backbone, heads) files: in ``folder`` when given, else the standard places; else MetricUnavailable."""
    folders = [Path(folder)] if folder is not None else [weights_home(), torch_hub_checkpoints()]
    head_folders = list(folders)
    if folder is None:
        spec = importlib.util.find_spec("lpips")  # the lpips wheel ships the heads; never imported here
        if spec is not None and spec.origin:
            head_folders.append(Path(spec.origin).parent / "weights" / "v0.1")
    backbone, looked_b = find_first(folders, BACKBONE_FILES)
    heads, looked_h = find_first(head_folders, HEAD_FILES)
    if backbone is None or heads is None:
        missing = [n for n, f in (("AlexNet backbone", backbone), ("linear heads", heads)) if f is None]
        raise MetricUnavailable("LPIPS", looked_b + looked_h, f"missing {' and '.join(missing)}")
    return backbone, heads


class LPIPSMetric:
    """LPIPS between uint8 frame sequences, loaded from local files."""

    def __init__(
        self, folder: str | os.PathLike | None = None, device: str | torch.device | None = None
    ) -> None:
        self.backbone, self.heads = find_lpips_files(folder)
        self.device = resolve_device(device)
        self.model = LPIPS.from_files(self.backbone, self.heads).to(self.device)

    @torch.no_grad()
    def per_frame(self, a: np.ndarray, b: np.ndarray, batch: int = 8) -> np.ndarray:
        """LPIPS of each frame pair of uint8 videos (N, H, W, 3) -> (N,)."""
        if a.shape != b.shape:
            raise ValueError(f"LPIPS needs same-shaped videos, got {a.shape} and {b.shape}")
        out = []
        for i in range(0, len(a), batch):
            x = _to_tensor(a[i : i + batch], self.device)
            y = _to_tensor(b[i : i + batch], self.device)
            out.append(self.model(x, y).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def _to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0
