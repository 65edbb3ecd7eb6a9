"""RAFT optical flow (Teed & Deng, ECCV 2020) in plain PyTorch, reading torchvision's weight files.

The paper this project follows extracts training flow with RAFT. torchvision ships the pretrained
networks (``raft_small`` 3.8 MB, ``raft_large`` 20 MB) but has no CPU build here, so this module
re-implements the two architectures with the *same module names*, so that a state dict saved from
``torchvision.models.optical_flow.raft_small/raft_large`` (a ``.pth`` file, read with
``torch.load(weights_only=True)``, or the same tensors in a ``.safetensors`` file) loads strictly.
The variant is recognised from the file. Weights cannot be downloaded on this machine: the
architecture is checked by parameter counts (torchvision's published 990,162 and 5,257,536) and by
loading randomly initialised networks in that key layout; accuracy with real weights was not
measured here.

How RAFT works, briefly: a shared CNN encodes both frames at 1/8 resolution; the dot products of
all feature pairs form a 4D correlation volume, pooled into a 4-level pyramid; starting from zero
flow, a convolutional GRU repeatedly looks up correlations around each pixel's current match and
predicts a flow update; the 1/8-resolution flow is then upsampled 8x (learned convex combination
for ``large``, bilinear for ``small``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from stillmotion.errors import MissingWeightsError, UserInputError

# Below this the 4-level correlation pyramid would pool a 1-pixel level away; torchvision's
# weights are documented for inputs of at least 128x128. Smaller frames are padded up to it.
MIN_SIDE = 128


@dataclass(frozen=True)
class RAFTConfig:
    """The hyper-parameters that tell ``raft_small`` and ``raft_large`` apart (torchvision's values)."""

    feature_layers: tuple[int, ...]
    context_layers: tuple[int, ...]
    block: str  # "residual" or "bottleneck"
    context_norm: str | None  # "batch" or None; the feature encoder always uses instance norm
    corr_levels: int
    corr_radius: int
    motion_corr_layers: tuple[int, ...]
    motion_flow_layers: tuple[int, int]
    motion_out_channels: int
    hidden_size: int
    gru_kernels: tuple[tuple[int, int], ...]
    flow_head_hidden: int
    convex_upsampling: bool


RAFT_LARGE = RAFTConfig(
    feature_layers=(64, 64, 96, 128, 256),
    context_layers=(64, 64, 96, 128, 256),
    block="residual",
    context_norm="batch",
    corr_levels=4,
    corr_radius=4,
    motion_corr_layers=(256, 192),
    motion_flow_layers=(128, 64),
    motion_out_channels=128,
    hidden_size=128,
    gru_kernels=((1, 5), (5, 1)),
    flow_head_hidden=256,
    convex_upsampling=True,
)
RAFT_SMALL = RAFTConfig(
    feature_layers=(32, 32, 64, 96, 128),
    context_layers=(32, 32, 64, 96, 160),
    block="bottleneck",
    context_norm=None,
    corr_levels=4,
    corr_radius=3,
    motion_corr_layers=(96,),
    motion_flow_layers=(64, 32),
    motion_out_channels=82,
    hidden_size=96,
    gru_kernels=((3, 3),),
    flow_head_hidden=128,
    convex_upsampling=False,
)
VARIANTS = {"small": RAFT_SMALL, "large": RAFT_LARGE}


def _conv_block(
    cin: int,
    cout: int,
    kernel: int | tuple[int, int],
    *,
    stride: int = 1,
    norm: str | None = None,
    relu: bool = True,
) -> nn.Sequential:
    """conv -> [norm] -> [ReLU] as one Sequential; the indices (0 conv, 1 norm) are the weight-file keys."""
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=(k[0] // 2, k[1] // 2), bias=True)
    ]
    if norm == "instance":
        layers.append(nn.InstanceNorm2d(cout))
    elif norm == "batch":
        layers.append(nn.BatchNorm2d(cout))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str | None, stride: int = 1) -> None:
        super().__init__()
        self.convnormrelu1 = _conv_block(cin, cout, 3, stride=stride, norm=norm)
        self.convnormrelu2 = _conv_block(cout, cout, 3, norm=norm)
        self.downsample = (
            nn.Identity()
            if stride == 1 and cin == cout
            else _conv_block(cin, cout, 1, stride=stride, norm=norm, relu=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.downsample(x) + self.convnormrelu2(self.convnormrelu1(x)))


class BottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str | None, stride: int = 1) -> None:
        super().__init__()
        mid = cout // 4
        self.convnormrelu1 = _conv_block(cin, mid, 1, norm=norm)
        self.convnormrelu2 = _conv_block(mid, mid, 3, stride=stride, norm=norm)
        self.convnormrelu3 = _conv_block(mid, cout, 1, norm=norm)
        self.downsample = (
            nn.Identity()
            if stride == 1 and cin == cout
            else _conv_block(cin, cout, 1, stride=stride, norm=norm, relu=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))
        return F.relu(self.downsample(x) + y)


class Encoder(nn.Module):
    """Image -> features at 1/8 resolution (strides 2, 1, 2, 2); used for features and for context."""

    def __init__(self, layers: tuple[int, ...], block: str, norm: str | None) -> None:
        super().__init__()
        make = ResidualBlock if block == "residual" else BottleneckBlock
        self.convnormrelu = _conv_block(3, layers[0], 7, stride=2, norm=norm)
        for i, stride in zip((1, 2, 3), (1, 2, 2), strict=True):
            stage = nn.Sequential(
                make(layers[i - 1], layers[i], norm, stride), make(layers[i], layers[i], norm, 1)
            )
            setattr(self, f"layer{i}", stage)
        self.conv = nn.Conv2d(layers[3], layers[4], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.layer3(self.layer2(self.layer1(self.convnormrelu(x)))))


class MotionEncoder(nn.Module):
    """Correlation features + current flow -> motion features (the flow itself is appended)."""

    def __init__(
        self,
        corr_channels: int,
        corr_layers: tuple[int, ...],
        flow_layers: tuple[int, int],
        out_channels: int,
    ) -> None:
        super().__init__()
        self.convcorr1 = _conv_block(corr_channels, corr_layers[0], 1)
        self.convcorr2 = (
            _conv_block(corr_layers[0], corr_layers[1], 3) if len(corr_layers) == 2 else nn.Identity()
        )
        self.convflow1 = _conv_block(2, flow_layers[0], 7)
        self.convflow2 = _conv_block(flow_layers[0], flow_layers[1], 3)
        self.conv = _conv_block(corr_layers[-1] + flow_layers[1], out_channels - 2, 3)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        c = self.convcorr2(self.convcorr1(corr))
        f = self.convflow2(self.convflow1(flow))
        return torch.cat([self.conv(torch.cat([c, f], 1)), flow], 1)


class ConvGRU(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        pad = (kernel[0] // 2, kernel[1] // 2)
        self.convz = nn.Conv2d(hidden_size + input_size, hidden_size, kernel, padding=pad)
        self.convr = nn.Conv2d(hidden_size + input_size, hidden_size, kernel, padding=pad)
        self.convq = nn.Conv2d(hidden_size + input_size, hidden_size, kernel, padding=pad)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hx = torch.cat([h, x], 1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * q


class RecurrentBlock(nn.Module):
    """One GRU (small) or a horizontal then a vertical separable GRU (large)."""

    def __init__(self, input_size: int, hidden_size: int, kernels: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        self.convgru1 = ConvGRU(input_size, hidden_size, kernels[0])
        if len(kernels) == 2:
            self.convgru2 = ConvGRU(input_size, hidden_size, kernels[1])
        self.hidden_size = hidden_size

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.convgru1(h, x)
        if hasattr(self, "convgru2"):
            h = self.convgru2(h, x)
        return h


class FlowHead(nn.Module):
    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    def __init__(self, cfg: RAFTConfig) -> None:
        super().__init__()
        corr_channels = cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2
        self.motion_encoder = MotionEncoder(
            corr_channels, cfg.motion_corr_layers, cfg.motion_flow_layers, cfg.motion_out_channels
        )
        context_channels = cfg.context_layers[-1] - cfg.hidden_size
        self.recurrent_block = RecurrentBlock(
            cfg.motion_out_channels + context_channels, cfg.hidden_size, cfg.gru_kernels
        )
        self.flow_head = FlowHead(cfg.hidden_size, cfg.flow_head_hidden)

    def forward(self, h: torch.Tensor, context: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor):
        x = torch.cat([context, self.motion_encoder(flow, corr)], 1)
        h = self.recurrent_block(h, x)
        return h, self.flow_head(h)


class MaskPredictor(nn.Module):
    """Weights of the convex 3x3 combination that upsamples the flow 8x (large model only)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.convrelu = _conv_block(hidden_size, 256, 3)
        self.conv = nn.Conv2d(256, 8 * 8 * 9, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # The original scales this branch by 0.25 (a gradient trick); the weights expect it.
        return 0.25 * self.conv(self.convrelu(h))


def _coords_grid(batch: int, h: int, w: int, device, dtype) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype),
        torch.arange(w, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([xs, ys])[None].expand(batch, -1, -1, -1)


class CorrelationPyramid:
    """All-pairs correlation of two feature maps, average-pooled into levels, looked up by window."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int, radius: int) -> None:
        b, c, h, w = fmap1.shape
        corr = torch.bmm(fmap1.flatten(2).transpose(1, 2), fmap2.flatten(2)) / math.sqrt(c)
        volume = corr.reshape(b * h * w, 1, h, w)
        self.levels = [volume]
        for _ in range(levels - 1):
            volume = F.avg_pool2d(volume, 2, stride=2)
            self.levels.append(volume)
        self.radius = radius
        self.shape = (b, h, w)

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """Correlations in a (2r+1)^2 window around ``coords`` (B, 2, h, w) on every level."""
        b, h, w = self.shape
        r = self.radius
        offsets = torch.arange(-r, r + 1, device=coords.device, dtype=coords.dtype)
        # The window's first axis steps x and its second steps y: the order the trained weights expect.
        ox, oy = torch.meshgrid(offsets, offsets, indexing="ij")
        window = torch.stack([ox, oy], -1)[None]  # (1, 2r+1, 2r+1, 2)
        centres = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        out = []
        for i, volume in enumerate(self.levels):
            hl, wl = volume.shape[-2:]
            pts = centres / 2**i + window
            scale = torch.tensor(
                [2.0 / max(wl - 1, 1), 2.0 / max(hl - 1, 1)], device=pts.device, dtype=pts.dtype
            )
            grid = pts * scale - 1
            sampled = F.grid_sample(volume, grid, mode="bilinear", align_corners=True)
            out.append(sampled.reshape(b, h, w, -1))
        return torch.cat(out, -1).permute(0, 3, 1, 2).contiguous()


class RAFT(nn.Module):
    """RAFT with torchvision's module names: ``load_state_dict`` takes its raft_small/raft_large files."""

    def __init__(self, config: RAFTConfig = RAFT_SMALL) -> None:
        super().__init__()
        self.config = config
        self.feature_encoder = Encoder(config.feature_layers, config.block, "instance")
        self.context_encoder = Encoder(config.context_layers, config.block, config.context_norm)
        self.update_block = UpdateBlock(config)
        self.mask_predictor = MaskPredictor(config.hidden_size) if config.convex_upsampling else None

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iterations: int = 12) -> torch.Tensor:
        """Flow (B, 2, H, W) from images in [-1, 1] of shape (B, 3, H, W), H and W multiples of 8."""
        b, _, h, w = image1.shape
        if image2.shape != image1.shape or h % 8 or w % 8:
            raise ValueError(
                f"RAFT needs two images of one shape with sides divisible by 8, got "
                f"{tuple(image1.shape)} and {tuple(image2.shape)}"
            )
        cfg = self.config
        fmap1, fmap2 = self.feature_encoder(torch.cat([image1, image2], 0)).chunk(2, 0)
        # Correlations and pixel coordinates stay float32 whatever the network's dtype: half
        # precision cannot hold coordinates of large frames to a fraction of a pixel.
        pyramid = CorrelationPyramid(fmap1.float(), fmap2.float(), cfg.corr_levels, cfg.corr_radius)
        hidden, context = self.context_encoder(image1).split(
            [cfg.hidden_size, cfg.context_layers[-1] - cfg.hidden_size], 1
        )
        hidden, context = torch.tanh(hidden), F.relu(context)
        coords0 = _coords_grid(b, h // 8, w // 8, image1.device, torch.float32)
        coords1 = coords0.clone()
        for _ in range(iterations):
            corr = pyramid.lookup(coords1).to(hidden.dtype)
            hidden, delta = self.update_block(hidden, context, corr, (coords1 - coords0).to(hidden.dtype))
            coords1 = coords1 + delta.float()
        flow = coords1 - coords0
        if self.mask_predictor is None:
            return 8 * F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=True)
        return _convex_upsample(flow, self.mask_predictor(hidden).float())


def _convex_upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    b, _, h, w = flow.shape
    weights = torch.softmax(mask.view(b, 1, 9, 8, 8, h, w), dim=2)
    neighbours = F.unfold(8 * flow, 3, padding=1).view(b, 2, 9, 1, 1, h, w)
    up = (weights * neighbours).sum(2)  # (b, 2, 8, 8, h, w)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, 8 * h, 8 * w)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MissingWeightsError(
            f"RAFT weights file {path} does not exist"
            if not path.exists()
            else f"RAFT weights {path} is not a file"
        )
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: the loaders raise many kinds
        # Some of them say nothing useful (a text file gives KeyError(101), the byte 'e').
        detail = str(exc).splitlines()[0][:200] if str(exc) and not isinstance(exc, KeyError) else ""
        kind = "safetensors" if path.suffix == ".safetensors" else "PyTorch (.pth, torch.save)"
        raise MissingWeightsError(
            f"cannot read RAFT weights {path}: not a {kind} weights file" + (f" ({detail})" if detail else "")
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MissingWeightsError(f"RAFT weights {path} is not a state dict of tensors")
    # Checkpoints saved from DataParallel carry this prefix; the names are otherwise torchvision's.
    return {k.removeprefix("module."): v for k, v in state.items()}


def detect_variant(state: dict[str, torch.Tensor]) -> str | None:
    """``"small"`` or ``"large"`` from a torchvision-layout state dict (None when it is neither)."""
    stem = state.get("feature_encoder.convnormrelu.0.weight")
    if stem is None:
        return None
    return {32: "small", 64: "large"}.get(int(stem.shape[0]))


def load_raft(
    weights: str | os.PathLike,
    *,
    variant: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> RAFT:
    """Build RAFT and load a torchvision-format state dict from ``weights`` (.pth or .safetensors).

    ``variant`` (``small``/``large``) is read from the file when not given. Raises
    :class:`MissingWeightsError` naming the file when it is absent, unreadable or does not match.
    """
    path = Path(weights)
    state = _read_state_dict(path)
    found = detect_variant(state)
    if variant is None:
        if found is None:
            raise MissingWeightsError(
                f"{path} is not a torchvision RAFT state dict (no 'feature_encoder.convnormrelu.0.weight' "
                f"of 32 or 64 channels); expected raft_small or raft_large weights"
            )
        variant = found
    if variant not in VARIANTS:
        raise UserInputError(f"unknown RAFT variant {variant!r}; choose small or large")
    model = RAFT(VARIANTS[variant])
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {what} (e.g. {keys[0]})")
        raise MissingWeightsError(
            f"RAFT weights {path} do not match torchvision raft_{variant}: {', '.join(parts)}"
        )
    model.load_state_dict(state, strict=True)
    device = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    return model.to(device=device, dtype=dtype).eval()


def _to_tensor(frame: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    f = np.asarray(frame)
    if f.ndim == 2:
        f = np.repeat(f[..., None], 3, axis=2)
    f = f[..., :3]
    t = torch.from_numpy(np.ascontiguousarray(f)).to(device)
    t = t.float() / 255.0 if f.dtype == np.uint8 else t.float()
    # torchvision's OpticalFlow transform: [0, 1] -> [-1, 1].
    return (t * 2 - 1).permute(2, 0, 1)[None].to(dtype)


class RAFTFlow:
    """Numpy in, numpy out: flow (H, W, 2) float32 of two RGB frames of any size.

    Frames are padded (edge pixels repeated, split evenly on both sides, as the original code does)
    to multiples of 8 and at least ``MIN_SIDE``, and the flow is cropped back.
    """

    def __init__(
        self,
        weights: str | os.PathLike | RAFT,
        *,
        device: str | None = None,
        iterations: int = 12,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = weights if isinstance(weights, RAFT) else load_raft(weights, device=device, dtype=dtype)
        if device is not None:
            self.model = self.model.to(device)
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        if iterations < 1:
            raise UserInputError(f"RAFT iterations must be >= 1, got {iterations}")
        self.iterations = iterations

    @torch.inference_mode()
    def __call__(self, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
        a = _to_tensor(frame1, self.device, self.dtype)
        b = _to_tensor(frame2, self.device, self.dtype)
        h, w = a.shape[-2:]
        ph = max(MIN_SIDE, math.ceil(h / 8) * 8) - h
        pw = max(MIN_SIDE, math.ceil(w / 8) * 8) - w
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        if ph or pw:
            a = F.pad(a, pad, mode="replicate")
            b = F.pad(b, pad, mode="replicate")
        flow = self.model(a, b, self.iterations)[0].float()
        flow = flow[:, pad[2] : pad[2] + h, pad[0] : pad[0] + w]
        return flow.permute(1, 2, 0).cpu().numpy().astype(np.float32)
