"""Flow refinement model T (paper sec. 3.2): the Gaussian dense arrow field -> a refined motion field.

The dense field of eqs. 5-7 is a smooth blob around each arrow; real motion fields follow the
scene (a river's banks, a cloud's outline, a waterfall's fall line). T is a pix2pix image-to-image
network (Isola et al. 2017) that learns the step from the first to the second.

Design (the paper gives only "pix2pix-style" and the learning rate):

- **U-Net generator** as pix2pix: 4x4 stride-2 convolutions down to 1x1, mirrored 4x4 stride-2
  transposed convolutions up, skip connections at every level, LeakyReLU(0.2) down / ReLU up,
  normalisation everywhere except the outermost layers and the innermost down layer, dropout in
  the inner decoder blocks. ``num_downs`` levels need ``sample_size`` divisible by ``2**num_downs``;
  channels are ``min(base_channels * 2**i, max_channels)``. GroupNorm is the default because it
  behaves the same in training and inference and at batch size 1 (pix2pix's BatchNorm is an option).
- **Inputs**: the dense field (2 channels), optionally the RGB image (3 channels, scaled to [-1, 1])
  and the mask (1 channel, 1 = may move). A missing image is fed as zeros and a missing mask as
  ones; the trainer drops them at random so both cases are in the training distribution.
- **Residual output**: the network predicts a correction that is added to the input field, and its
  last layer starts at zero, so an untrained T is exactly the identity (refined == dense field).
- **Field scale**: vectors enter the network divided by a per-sample scale and leave multiplied by
  it. With ``peak_normalize`` (default) the scale is the input field's largest magnitude, i.e. the
  fastest arrow: T is then exactly homogeneous, ``T(c * f) = c * T(f)`` for c > 0, so the speed the
  user asks for is never re-learnt and the model is independent of units and resolution. Without
  it the scale is ``flow_scale * max(H, W)`` px/frame at the working size (a fixed fraction of the
  frame per frame).
- **Any size**: :meth:`FlowRefiner.refine` resizes field, image and mask to the square working size
  ``sample_size`` (vectors rescaled per axis), runs the net, resizes back and rescales the vectors
  to the caller's pixels; outside the mask the result is exactly zero.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from stillmotion.errors import UserInputError

NORMS = ("group", "batch", "instance", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        groups = math.gcd(channels, 32) if channels >= 8 else 1
        return nn.GroupNorm(groups, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def field_scale(
    field: torch.Tensor, *, peak_normalize: bool, flow_scale: float, eps: float = 1e-6
) -> torch.Tensor:
    """Per-sample scale (B, 1, 1, 1) that maps a (B, 2, h, w) px/frame field to network units.

    Shared by :meth:`FlowRefiner.refine` and the trainer so both use one definition.
    """
    if peak_normalize:
        peak = torch.linalg.vector_norm(field, dim=1).flatten(1).amax(dim=1)
        return torch.where(peak > eps, peak, torch.ones_like(peak)).view(-1, 1, 1, 1)
    size = max(field.shape[-2:])
    return torch.full((field.shape[0], 1, 1, 1), flow_scale * size, dtype=field.dtype, device=field.device)


class FlowRefiner(ModelMixin, ConfigMixin):
    """pix2pix U-Net turning a dense arrow field into a refined motion field (the paper's T)."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sample_size: int = 256,
        num_downs: int = 8,
        base_channels: int = 64,
        max_channels: int = 512,
        use_image: bool = True,
        use_mask: bool = True,
        norm: str = "group",
        dropout: float = 0.5,
        dropout_blocks: int = 3,
        peak_normalize: bool = True,
        flow_scale: float = 0.01,
    ):
        super().__init__()
        if norm not in NORMS:
            raise UserInputError(f"FlowRefiner norm must be one of {NORMS}, got {norm!r}")
        if num_downs < 1 or sample_size % (2**num_downs) != 0:
            raise UserInputError(
                f"FlowRefiner sample_size {sample_size} must be divisible by 2**num_downs = {2**num_downs}"
            )
        in_channels = 2 + (3 if use_image else 0) + (1 if use_mask else 0)
        ch = [min(base_channels * 2**i, max_channels) for i in range(num_downs)]
        n = num_downs

        # Encoder: level i halves the size and outputs ch[i] channels.
        self.down = nn.ModuleList()
        for i in range(n):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(
                nn.Conv2d(in_channels if i == 0 else ch[i - 1], ch[i], 4, 2, 1, bias=norm == "none")
            )
            if 0 < i < n - 1:  # pix2pix: no norm on the outermost and innermost down layers
                layers.append(_norm(norm, ch[i]))
            self.down.append(nn.Sequential(*layers))

        # Decoder, innermost first: level i doubles the size; its input is the level below's output
        # concatenated with the skip from down[i] (the innermost level has no skip to concatenate).
        self.up = nn.ModuleList()
        for i in reversed(range(n)):
            c_in = ch[i] if i == n - 1 else 2 * ch[i]
            if i == 0:
                conv = nn.ConvTranspose2d(c_in, 2, 4, 2, 1)
                # Zero start: the correction is 0, so an untrained T returns the dense field unchanged.
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
                self.up.append(nn.Sequential(nn.ReLU(), conv))
                continue
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_in, ch[i - 1], 4, 2, 1, bias=norm == "none")]
            layers.append(_norm(norm, ch[i - 1]))
            # pix2pix puts dropout (its only noise source) in the inner decoder blocks, not the innermost.
            if dropout > 0 and n - 1 - dropout_blocks <= i <= n - 2:
                layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def network_input(
        self, field: torch.Tensor, image: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Concatenate the conditioning channels the config asks for (missing ones get defaults)."""
        parts = [field]
        b, _, h, w = field.shape
        if self.config.use_image:
            parts.append(image if image is not None else field.new_zeros(b, 3, h, w))
        if self.config.use_mask:
            parts.append(mask.to(field.dtype) if mask is not None else field.new_ones(b, 1, h, w))
        return torch.cat(parts, dim=1)

    def forward(
        self, field: torch.Tensor, image: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Refined field in network units.

        field: (B, 2, S, S) already divided by :func:`field_scale`; image: (B, 3, S, S) in [-1, 1];
        mask: (B, 1, S, S) with 1 where motion is allowed. Returns (B, 2, S, S), zero where mask is 0.
        """
        x = self.network_input(field, image, mask)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        n = len(self.down)
        for k, block in enumerate(self.up):
            level = n - 1 - k
            x = block(x if level == n - 1 else torch.cat([x, skips[level]], dim=1))
        out = field + x
        if mask is not None:
            out = out * mask.to(out.dtype)
        return out

    # ------------------------------------------------------------------ numpy entry point
    @torch.no_grad()
    def refine(
        self, field: np.ndarray, image: np.ndarray | None = None, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Refine a dense motion field of any size.

        field: float32 (H, W, 2) (dx, dy) px/frame; image: uint8 (H, W, 3) RGB or None;
        mask: bool (H, W) (True = may move) or None. Returns float32 (H, W, 2) px/frame, exactly
        zero outside the mask. Runs on the model's device and dtype; the model is left as it was.
        """
        field = np.asarray(field)
        if field.ndim != 3 or field.shape[2] != 2 or field.shape[0] < 1 or field.shape[1] < 1:
            raise UserInputError(f"refine: field must have shape (H, W, 2), got {field.shape}")
        if not np.all(np.isfinite(field)):
            raise UserInputError("refine: field holds non-finite values")
        h, w = field.shape[:2]
        if image is not None:
            image = np.asarray(image)
            if image.shape != (h, w, 3):
                raise UserInputError(
                    f"refine: image shape {image.shape} does not match the field ({h}, {w}, 3)"
                )
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (h, w):
                raise UserInputError(f"refine: mask shape {mask.shape} does not match the field ({h}, {w})")
            mask = mask.astype(bool)
        if not np.any(field):
            return np.zeros((h, w, 2), np.float32)

        s = self.config.sample_size
        sx, sy = s / w, s / h
        interp_down = cv2.INTER_AREA if (w > s or h > s) else cv2.INTER_LINEAR
        f_s = cv2.resize(field.astype(np.float32), (s, s), interpolation=interp_down)
        f_s[..., 0] *= sx
        f_s[..., 1] *= sy
        device, dtype = self.device, self.dtype
        f_t = torch.from_numpy(f_s).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32)
        scale = field_scale(f_t, peak_normalize=self.config.peak_normalize, flow_scale=self.config.flow_scale)
        img_t = None
        if image is not None and self.config.use_image:
            img_s = cv2.resize(image.astype(np.uint8), (s, s), interpolation=interp_down)
            img_t = (
                torch.from_numpy(img_s).permute(2, 0, 1)[None].to(device=device, dtype=dtype) / 127.5 - 1.0
            )
        m_t = None
        if mask is not None:
            m_s = cv2.resize(mask.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA) > 0.5
            m_t = torch.from_numpy(m_s)[None, None].to(device=device, dtype=dtype)

        was_training = self.training
        self.eval()
        try:
            out = self((f_t / scale).to(dtype), img_t, m_t)
        finally:
            self.train(was_training)
        out = (out.float() * scale)[0].permute(1, 2, 0).cpu().numpy()
        refined = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        refined[..., 0] /= sx
        refined[..., 1] /= sy
        if mask is not None:
            refined[~mask] = 0.0
        return refined


class PatchDiscriminator(ModelMixin, ConfigMixin):
    """pix2pix PatchGAN: judges overlapping patches of concat(condition, field) as real or refined.

    With ``num_layers=3`` and 4x4 kernels each output logit sees a 70x70 input patch (pix2pix's
    default); fewer layers give smaller patches for tiny working sizes. Used only in training.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self, in_channels: int = 8, base_channels: int = 64, num_layers: int = 3, norm: str = "group"
    ):
        super().__init__()
        if norm not in NORMS:
            raise UserInputError(f"PatchDiscriminator norm must be one of {NORMS}, got {norm!r}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = base_channels
        for i in range(1, num_layers + 1):
            c_next = base_channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [
                nn.Conv2d(c, c_next, 4, stride, 1, bias=norm == "none"),
                _norm(norm, c_next),
                nn.LeakyReLU(0.2),
            ]
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, field], dim=1))
