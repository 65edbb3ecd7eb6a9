"""FreeNoise's window-fused temporal attention for diffusers' spatio-temporal UNets, as a removable hook.

FreeNoise (Qiu et al. 2023) computes a video model's temporal self-attention over windows of the
training length L, every ``stride`` frames (the last window aligned to the end), and fuses the windows'
outputs per frame with triangular weights (1, 2, ..., L/2, ..., 2, 1), so a frame near a window's middle
counts more than one at its edge; everything that works per frame runs once. In SVD's
``TemporalBasicTransformerBlock`` the frame position embedding is added to the block's input, before its
input feed-forward ``ff_in``, so the attention can only see in-window positions 0 .. L-1 (as in training)
if that input projection runs per window too. :class:`WindowedTemporalAttention` therefore runs
``norm_in -> ff_in -> norm1 -> attn1`` (with their residuals) per window with the position embedding
restarted inside it, fuses the results, and runs the cross-attention ``attn2`` and the feed-forward
``ff`` once per frame on the fused states. Spatial layers see all frames; the temporal res blocks
(3-tap temporal convolutions, no positions) are local already. With F <= L frames the stock forward runs,
so short clips are bit-identical.

Optionally (``chunk_frames``) the per-frame layers run on at most that many frames at a time: the spatial
transformer blocks and spatial res blocks over ``batch * frames`` in chunks, the temporal blocks'
``attn2``/``ff`` over token chunks of the same size. The results are the same up to float rounding;
their activations stay bounded by the chunk instead of growing with the video (the UNet's hidden states
of all frames still exist, as in FreeNoise, which samples the whole video at once).

The hook replaces the instance ``forward`` of the blocks it changes (forward hooks, e.g. the motion
adapter's, keep firing); :meth:`WindowedTemporalAttention.detach` removes it. Weights, the module tree
and state dict are untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from stillmotion.sampling.segments import sliding_windows  # pure arithmetic, no model code


def triangular_weights(length: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
    """w_j = min(j + 1, length - j): 1, 2, ..., peak, ..., 2, 1."""
    j = torch.arange(length, device=device)
    return torch.minimum(j + 1, length - j).to(dtype or torch.float32)


def _frame_chunked_forward(original: Callable[..., Any], chunk: int) -> Callable[..., Any]:
    """``original`` run over chunks of its inputs' first dimension (batch * frames); every tensor argument
    with that first dimension is split alike, others are passed whole."""

    def forward(*args: Any, **kwargs: Any) -> Any:
        first = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        n = first.shape[0]
        if n <= chunk:
            return original(*args, **kwargs)

        def part(v: Any, a: int) -> Any:
            return v[a : a + chunk] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n else v

        outs = [original(*(part(v, a) for v in args), **{k: part(v, a) for k, v in kwargs.items()})
                for a in range(0, n, chunk)]  # fmt: skip
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(t) if isinstance(t[0], torch.Tensor) else t[0]
                         for t in zip(*outs, strict=True))  # fmt: skip
        return torch.cat(outs)

    return forward


def _windowed_block_forward(
    block: nn.Module,
    position_embedding: Callable[[torch.Tensor, torch.dtype], torch.Tensor],
    window: int,
    stride: int,
    chunk: int | None,
) -> Callable[..., torch.Tensor]:
    """A ``TemporalBasicTransformerBlock.forward`` that attends per window (see the module docstring)."""
    original = block.forward

    def forward(
        hidden_states: torch.Tensor, num_frames: int, encoder_hidden_states: torch.Tensor | None = None
    ) -> torch.Tensor:
        if num_frames <= window:
            return original(hidden_states, num_frames, encoder_hidden_states)
        batch_frames, tokens, channels = hidden_states.shape
        batch = batch_frames // num_frames
        # [B*S, F, C]: the temporal sequence of every spatial token, as the stock block lays it out
        h = hidden_states.reshape(batch, num_frames, tokens, channels).permute(0, 2, 1, 3)
        h = h.reshape(batch * tokens, num_frames, channels)
        # the caller added pos[f] for the global frame index f; each window swaps in its own index
        pos = position_embedding(torch.arange(num_frames, device=h.device), h.dtype)[None]  # [1, F, C]
        weights = triangular_weights(window, device=h.device, dtype=h.dtype)
        fused = None
        total = torch.zeros(num_frames, device=h.device, dtype=h.dtype)
        for a, b in sliding_windows(num_frames, window, stride):
            part = h[:, a:b] - pos[:, a:b] + pos[:, : b - a]
            y = block.ff_in(block.norm_in(part))
            if block.is_res:
                y = y + part
            y = block.attn1(block.norm1(y), encoder_hidden_states=None) + y
            if fused is None:
                fused = torch.zeros(h.shape[0], num_frames, y.shape[-1], device=h.device, dtype=y.dtype)
            fused[:, a:b] += y * weights[: b - a, None]
            total[a:b] += weights[: b - a]
        y = fused / total[None, :, None]
        del fused
        # per frame from here on: cross-attention and feed-forward once, over token chunks if asked
        step = y.shape[0] if chunk is None else max(1, chunk * y.shape[0] // (batch * num_frames))
        ctx = encoder_hidden_states
        parts = []
        for a in range(0, y.shape[0], step):
            z = y[a : a + step]
            if block.attn2 is not None:
                c = None if ctx is None else ctx[a : a + step]
                z = block.attn2(block.norm2(z), encoder_hidden_states=c) + z
            out = block.ff(block.norm3(z))
            parts.append(out + z if block.is_res else out)
        y = torch.cat(parts) if len(parts) > 1 else parts[0]
        y = y.reshape(batch, tokens, num_frames, y.shape[-1]).permute(0, 2, 1, 3)
        return y.reshape(batch * num_frames, tokens, y.shape[-1])

    return forward


def _temporal_transformers(unet: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in unet.modules()
        if hasattr(m, "temporal_transformer_blocks") and hasattr(m, "time_pos_embed")
    ]


class WindowedTemporalAttention:
    """The hook: :meth:`attach` to a UNet (or any module holding spatio-temporal transformers),
    :meth:`detach` to restore it. ``window`` L, ``stride`` s, ``chunk_frames``: see the module docstring."""

    def __init__(self, window: int, stride: int, chunk_frames: int | None = None) -> None:
        if window < 1 or stride < 1 or (chunk_frames is not None and chunk_frames < 1):
            raise ValueError(f"window, stride and chunk_frames must be >= 1, got {window}, {stride}, "
                             f"{chunk_frames}")  # fmt: skip
        self.window, self.stride, self.chunk_frames = window, stride, chunk_frames
        self._patched: list[nn.Module] = []

    def attach(self, unet: nn.Module) -> int:
        """Patch ``unet``; returns the number of temporal blocks windowed (0: it has none)."""
        self.detach()
        count = 0
        for parent in _temporal_transformers(unet):

            def position_embedding(
                idx: torch.Tensor, dtype: torch.dtype, parent: nn.Module = parent
            ) -> torch.Tensor:
                return parent.time_pos_embed(parent.time_proj(idx).to(dtype))

            for block in parent.temporal_transformer_blocks:
                block.forward = _windowed_block_forward(
                    block, position_embedding, self.window, self.stride, self.chunk_frames
                )
                self._patched.append(block)
                count += 1
            if self.chunk_frames is not None:
                for block in parent.transformer_blocks:
                    block.forward = _frame_chunked_forward(block.forward, self.chunk_frames)
                    self._patched.append(block)
        if self.chunk_frames is not None:
            for m in unet.modules():
                res = getattr(m, "spatial_res_block", None)
                if res is not None:
                    res.forward = _frame_chunked_forward(res.forward, self.chunk_frames)
                    self._patched.append(res)
        return count

    def detach(self) -> None:
        for module in self._patched:
            vars(module).pop("forward", None)  # back to the class's forward
        self._patched = []


@contextlib.contextmanager
def window_fused_temporal_attention(
    unet: nn.Module, window: int, stride: int, chunk_frames: int | None = None
) -> Iterator[int]:
    """:class:`WindowedTemporalAttention` attached for the ``with`` block; yields the number of temporal
    blocks windowed (0 means the UNet has none and nothing changes)."""
    hook = WindowedTemporalAttention(window, stride, chunk_frames)
    try:
        yield hook.attach(unet)
    finally:
        hook.detach()
