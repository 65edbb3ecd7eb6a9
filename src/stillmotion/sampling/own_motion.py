"""A model's own frame-to-frame transport inside one clip, estimated from the clip itself.

For a model that gets no motion input, phased inference has no field to carry a later segment along;
what it has is segment 1, in which the model moved its own content. :meth:`Transport.fit` finds, at every
latent pixel, per channel and for every frame j, the 3x3 filter that best predicts frame j from frame 0
over a Gaussian window around that pixel (weighted least squares): a local sub-pixel shift, blur or fade,
whatever the model did there (a constant per window takes up changes of brightness). :meth:`Transport.apply`
moves another picture the same way, so a texture
that was not in segment 1 (where the previous segment ended) moves as segment 1's did, instead of being
added in place: an added texture does not move, and optical flow reads it as content standing still.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TAPS = 9  # a 3x3 neighbourhood


def _taps(x: torch.Tensor) -> torch.Tensor:
    """[N, C, h, w] -> [N, C, 9, h, w]: the 3x3 neighbours of every pixel (edges repeated)."""
    n, c, h, w = x.shape
    padded = F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    return F.unfold(padded, 3).view(n, c, TAPS, h, w)


def _window(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian-weighted local mean over the last two dims of ``[..., h, w]`` (separable, edges repeated).

    Shifted slices summed tap by tap: a convolution would unfold every window first, which for the
    Gram products of a whole clip is tens of times the data."""
    radius = max(int(3 * sigma + 0.5), 1)
    r = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    g = (g / g.sum()).tolist()
    shape = x.shape
    h, w = shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    padded = F.pad(flat, (radius, radius, 0, 0), mode="replicate")
    rows = sum(g[t] * padded[..., t : t + w] for t in range(2 * radius + 1))
    padded = F.pad(rows, (0, 0, radius, radius), mode="replicate")
    out = sum(g[t] * padded[..., t : t + h, :] for t in range(2 * radius + 1))
    return out.view(shape)


class Transport:
    """Per-pixel, per-channel 3x3 filters ``K_j`` with ``frames[:, j] ~ K_j * first + c_j`` (local least
    squares); :meth:`apply` uses the filters only."""

    def __init__(self, kernels: torch.Tensor) -> None:
        self.kernels = kernels  # [B, L, C, 9, h, w]

    @classmethod
    def fit(
        cls, first: torch.Tensor, frames: torch.Tensor, sigma: float = 2.0, ridge: float = 0.01
    ) -> Transport:
        """``first`` ``[B, C, h, w]`` (frame 0), ``frames`` ``[B, L, C, h, w]``; ``sigma``: the window's
        radius in latent pixels.

        Each window also fits a constant c_j, so a change of brightness is not read as a gain to apply to
        another picture. ``ridge`` pulls each filter towards the identity (nothing moved), in proportion
        to the window's energy but never less than the frame's mean energy: where frame 0 says little
        (flat, or near zero), the filter stays the identity instead of a large, ill-determined gain."""
        # float64 on the CPU (cheap there) for the 10x10 solves, float32 on an accelerator
        work = torch.float64 if frames.device.type == "cpu" else torch.float32
        b, length, channels, h, w = frames.shape
        kernels = torch.empty(b, length, channels, TAPS, h, w, device=frames.device, dtype=frames.dtype)
        weight = torch.ones(TAPS + 1, device=frames.device, dtype=work)
        weight[TAPS] = 0.01  # the constant is hardly held back: brightness goes to it, not into a gain
        prior = torch.zeros(TAPS + 1, device=frames.device, dtype=work)
        prior[TAPS // 2] = 1.0  # the identity filter, no constant
        # channels are independent: taken in groups whose Gram products stay within about 4 MiB (the
        # window sums' temporaries are a few times that)
        group = max(1, (4 << 20) // ((TAPS + 1) ** 2 * h * w * b * 8))
        for c0 in range(0, channels, group):
            cs = slice(c0, min(c0 + group, channels))
            n = cs.stop - cs.start
            p = _taps(first[:, cs].to(work))  # [B, n, 9, h, w]
            target = frames[:, :, cs].to(work)  # [B, L, n, h, w]
            energy = _window(p * p, sigma).mean(2)  # [B, n, h, w]
            # the floor: the channel's mean energy over the clip, frame 0's and the predicted frames'
            # (a frame 0 near zero everywhere would otherwise set no scale at all)
            floor = 0.5 * (energy.mean(dim=(-2, -1), keepdim=True)
                           + target.pow(2).mean(dim=(1, 3, 4)).view(b, n, 1, 1))  # fmt: skip
            scale = floor.sqrt().clamp(min=1e-12)  # the constant regressor at the taps' magnitude
            p = torch.cat([p, scale.unsqueeze(2).expand(-1, -1, 1, h, w)], dim=2)  # [B, n, 10, h, w]
            gram = _window(p.unsqueeze(2) * p.unsqueeze(3), sigma).permute(0, 1, 4, 5, 2, 3)
            lam = (ridge * torch.maximum(energy, floor) + 1e-12)[..., None, None]
            chol = torch.linalg.cholesky(gram + lam * torch.diag(weight))
            del gram
            pull = lam[..., 0] * prior  # [B, n, h, w, 10]
            for j in range(length):
                rhs = _window(p * target[:, j].unsqueeze(2), sigma).permute(0, 1, 3, 4, 2) + pull
                k = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)[..., :TAPS]  # [B, n, h, w, 9]
                kernels[:, j, cs] = k.permute(0, 1, 4, 2, 3).to(frames.dtype)
        return cls(kernels)

    def apply(self, picture: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """``picture`` ``[B, 1, C, h, w]`` (one picture for every frame) or ``[B, length, C, h, w]`` (one per
        frame) moved to each of the first ``length`` frames: ``[B, length, C, h, w]``."""
        k = self.kernels if length is None else self.kernels[:, :length]
        b, n, c, h, w = picture.shape
        taps = _taps(picture.reshape(b * n, c, h, w).to(k.dtype)).view(b, n, c, TAPS, h, w)
        return (k * taps).sum(3)
