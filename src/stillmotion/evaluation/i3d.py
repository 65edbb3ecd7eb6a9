"""I3D (Inception-v1 inflated to 3D, Carreira & Zisserman 2017) Kinetics-400 features for FVD.

Two weight formats load from local files:

- TorchScript: the ``i3d_torchscript.pt`` export that StyleGAN-V and most FVD ports use. It is
  called as ``model(x, rescale=False, resize=False, return_features=True)`` with ``x`` float
  (B, 3, T, 224, 224) already in [-1, 1]; it returns the 400 logits before the softmax. Loaded with
  ``torch.jit.load`` only (never unpickled).
- A state dict (safetensors, or ``torch.save`` loaded with ``weights_only=True``) for
  :class:`InceptionI3d` below, in the key layout of the pytorch-i3d ports (``rgb_imagenet.pt`` is
  Kinetics-400): ``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.{weight,bias,running_mean,
  running_var}``, ``Mixed_3b.b0|b1a|b1b|b2a|b2b|b3b.conv3d.weight`` (+ ``.bn.*``), and
  ``logits.conv3d.{weight,bias}``. Channel widths and the class count are read from the file, so a
  slim network saved the same way loads too (the tests use one).

Preprocessing (both formats): frames resized to 224x224 (bilinear, antialiased), values mapped from
[0, 255] to [-1, 1]. Features: the logits averaged over time, 400-d for Kinetics-400.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stillmotion.evaluation.weights import (
    MetricUnavailable,
    find_first,
    load_state_dict,
    resolve_device,
    weights_home,
)

I3D_SIZE = 224
I3D_FILES = ("i3d_torchscript.pt", "i3d_kinetics400.safetensors", "rgb_imagenet.pt")

# (in-channel source, [b0, b1a, b1b, b2a, b2b, b3b]) of the nine inception blocks, full width.
_MIXED = {
    "Mixed_3b": [64, 96, 128, 16, 32, 32],
    "Mixed_3c": [128, 128, 192, 32, 96, 64],
    "Mixed_4b": [192, 96, 208, 16, 48, 64],
    "Mixed_4c": [160, 112, 224, 24, 64, 64],
    "Mixed_4d": [128, 128, 256, 24, 64, 64],
    "Mixed_4e": [112, 144, 288, 32, 64, 64],
    "Mixed_4f": [256, 160, 320, 32, 128, 128],
    "Mixed_5b": [256, 160, 320, 32, 128, 128],
    "Mixed_5c": [384, 192, 384, 48, 128, 128],
}


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TensorFlow "SAME" padding, more at the end when odd: the original I3D was trained that way.
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    t, h, w = x.shape[2:]
    pt, ph, pw = (_same_pad(s, k, st) for s, k, st in zip((t, h, w), kernel, stride, strict=True))
    return F.pad(x, (*pw, *ph, *pt))


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm3d(eps 1e-3) + ReLU with SAME padding; the logits unit has bias, no BN."""

    def __init__(
        self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), *, bn: bool = True, relu: bool = True
    ):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=not bn)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Zero padding, as the reference: inputs are post-ReLU (>= 0) so zeros never win wrongly.
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Inception(nn.Module):
    def __init__(self, cin: int, c: list[int]):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a = Unit3D(cin, c[1])
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(cin, c[3])
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5])
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """I3D with the pytorch-i3d module names; ``width`` scales every channel count (1.0 = the real net)."""

    def __init__(self, num_classes: int = 400, width: float = 1.0, in_channels: int = 3):
        super().__init__()

        def ch(n: int) -> int:
            return max(1, int(round(n * width)))

        self.width, self.num_classes = width, num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, ch(64), (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(ch(64), ch(64))
        self.Conv3d_2c_3x3 = Unit3D(ch(64), ch(192), (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        cin = ch(192)
        for name, c in _MIXED.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
            block = Inception(cin, [ch(v) for v in c])
            setattr(self, name, block)
            cin = block.out_channels
        self.logits = Unit3D(cin, num_classes, bn=False, relu=False)

    _ORDER = (
        "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
        "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
        "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
    )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, 224, 224) in [-1, 1] -> per-time logits (B, classes, T')."""
        for name in self._ORDER:
            x = getattr(self, name)(x)
        # Average pool 2x7x7 stride 1 (valid), as the reference head; dropout is identity in eval.
        x = F.avg_pool3d(x, (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4])), stride=1)
        return self.logits(x).mean(dim=(3, 4))

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> InceptionI3d:
        """Build with the widths the checkpoint holds and load it strictly (clear error on mismatch)."""
        try:
            first = sd["Conv3d_1a_7x7.conv3d.weight"]
            head = sd["logits.conv3d.weight"]
        except KeyError as exc:
            raise ValueError(f"not an InceptionI3d state dict: key {exc} missing") from None
        model = cls(
            num_classes=int(head.shape[0]), width=first.shape[0] / 64.0, in_channels=int(first.shape[1])
        )
        missing, unexpected = model.load_state_dict(sd, strict=False)
        # Checkpoints from old PyTorch versions carry no BatchNorm step counters; they are unused here.
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(
                f"I3D state dict does not match the architecture: {len(missing)} missing "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        return model


def preprocess_videos(videos: np.ndarray | torch.Tensor, size: int = I3D_SIZE) -> torch.Tensor:
    """uint8 videos (B, T, H, W, 3) -> float (B, 3, T, size, size) in [-1, 1]."""
    v = torch.as_tensor(np.asarray(videos)) if not isinstance(videos, torch.Tensor) else videos
    if v.ndim != 5 or v.shape[-1] != 3:
        raise ValueError(f"videos must be (B, T, H, W, 3), got {tuple(v.shape)}")
    b, t, h, w, _ = v.shape
    x = v.reshape(b * t, h, w, 3).permute(0, 3, 1, 2).float()
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = (x / 127.5 - 1.0).clamp(-1, 1)
    return x.reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()


class I3DFeatures:
    """Kinetics-400 I3D features for FVD from a TorchScript file or a state-dict checkpoint."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = None) -> None:
        self.path = Path(path)
        self.device = resolve_device(device)
        self.kind = "torchscript"
        if self.path.suffix == ".safetensors":
            self.kind = "state-dict"
        else:
            try:
                self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
            except RuntimeError:  # a torch.save file is not a TorchScript archive
                self.kind = "state-dict"
        if self.kind == "state-dict":
            self.model = InceptionI3d.from_state_dict(load_state_dict(self.path)).to(self.device).eval()

    @torch.no_grad()
    def features(self, videos: np.ndarray | torch.Tensor, batch: int = 4) -> np.ndarray:
        """uint8 videos (B, T, H, W, 3) -> features (B, D), D = 400 for Kinetics-400."""
        out = []
        for i in range(0, len(videos), batch):
            x = preprocess_videos(videos[i : i + batch]).to(self.device)
            if self.kind == "torchscript":
                f = self.model(x, rescale=False, resize=False, return_features=True)
            else:
                f = self.model(x).mean(2)
            out.append(f.float().cpu().numpy().reshape(len(x), -1))
        return np.concatenate(out)


def find_i3d(path: str | os.PathLike | None = None) -> Path:
    """The I3D file to use: ``path`` when given, else the first standard file; else MetricUnavailable."""
    if path is not None:
        p = Path(path)
        if p.is_file():
            return p
        if p.is_dir():
            hit, looked = find_first([p], I3D_FILES)
            if hit is not None:
                return hit
            raise MetricUnavailable("FVD", looked, "no I3D weights in the given folder")
        raise MetricUnavailable("FVD", [str(p)], "the given I3D file does not exist")
    env = os.environ.get("STILLMOTION_I3D")
    if env:
        return find_i3d(env)
    hit, looked = find_first([weights_home()], I3D_FILES)
    if hit is None:
        raise MetricUnavailable("FVD", looked, "no I3D Kinetics-400 weights (pass --i3d PATH)")
    return hit


def min_frames_note(n_frames: int) -> str | None:
    """I3D needs a few frames; very short clips are still scored but flagged."""
    return (
        None if n_frames >= 8 else f"only {n_frames} frames: I3D features of very short clips are unreliable"
    )
