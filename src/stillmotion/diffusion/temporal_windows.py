"""Window-fused temporal attention (FreeNoise) for diffusers' spatio-temporal UNets.

Inside :func:`window_fused_temporal_attention` every ``TransformerSpatioTemporalModel`` of the UNet runs
its temporal transformer blocks per window of ``window`` frames (windows every ``stride`` frames, the last
one aligned to the end) instead of over all frames, and fuses the windows' outputs with triangular
weights (1, 2, ..., L/2, ..., 2, 1), so a frame near a window's middle counts more than one at its
edge. The frame position embedding restarts inside each window: the block sees positions 0 .. L-1 as in
training. Spatial layers are untouched and see all frames. The temporal *res* blocks (3-tap temporal
convolutions, no position embedding) are local already and need no change. With F <= L frames the
original forward runs unchanged, so short clips are bit-identical.

The patch lives on the block instances' ``forward`` only for the duration of the ``with``; weights, the
module tree and hooks are untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from stillmotion.sampling.segments import sliding_windows  # pure arithmetic, no model code


def triangular_weights(length: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
    """w_j = min(j + 1, length - j): 1, 2, ..., peak, ..., 2, 1."""
    j = torch.arange(length, device=device)
    return torch.minimum(j + 1, length - j).to(dtype or torch.float32)


def _windowed_forward(
    original: Callable[..., torch.Tensor],
    position_embedding: Callable[[torch.Tensor, torch.dtype], torch.Tensor],
    window: int,
    stride: int,
) -> Callable[..., torch.Tensor]:
    def forward(
        hidden_states: torch.Tensor, num_frames: int, encoder_hidden_states: torch.Tensor | None = None
    ) -> torch.Tensor:
        if num_frames <= window:
            return original(hidden_states, num_frames, encoder_hidden_states)
        batch_frames, tokens, channels = hidden_states.shape
        batch = batch_frames // num_frames
        h = hidden_states.reshape(batch, num_frames, tokens, channels)
        frames = torch.arange(num_frames, device=h.device)
        # [F, 1, C]; the caller added pos[f] for the global frame index f, we swap in the in-window index
        pos = position_embedding(frames, h.dtype)[:, None, :]
        weights = triangular_weights(window, device=h.device, dtype=h.dtype)
        fused = torch.zeros_like(h)
        total = torch.zeros(num_frames, device=h.device, dtype=h.dtype)
        for a, b in sliding_windows(num_frames, window, stride):
            part = h[:, a:b] - pos[a:b] + pos[: b - a]
            out = original(part.reshape(batch * (b - a), tokens, channels), b - a, encoder_hidden_states)
            fused[:, a:b] += out.reshape(batch, b - a, tokens, channels) * weights[: b - a, None, None]
            total[a:b] += weights[: b - a]
        return (fused / total[None, :, None, None]).reshape(batch_frames, tokens, channels)

    return forward


def _temporal_transformers(unet: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in unet.modules()
        if hasattr(m, "temporal_transformer_blocks") and hasattr(m, "time_pos_embed")
    ]


@contextlib.contextmanager
def window_fused_temporal_attention(unet: nn.Module, window: int, stride: int) -> Iterator[int]:
    """Run the UNet's temporal attention per window and fuse (see module docstring); yields the number
    of temporal blocks patched (0 means the UNet has none and nothing changes)."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
    patched: list[nn.Module] = []
    try:
        for parent in _temporal_transformers(unet):

            def position_embedding(
                idx: torch.Tensor, dtype: torch.dtype, parent: nn.Module = parent
            ) -> torch.Tensor:
                return parent.time_pos_embed(parent.time_proj(idx).to(dtype))

            for block in parent.temporal_transformer_blocks:
                block.forward = _windowed_forward(block.forward, position_embedding, window, stride)
                patched.append(block)
        yield len(patched)
    finally:
        for block in patched:
            del block.forward  # back to the class's forward
