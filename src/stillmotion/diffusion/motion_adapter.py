"""The paper's new UNet parts, kept outside the stock UNet: motion cross-attention and strength embedding.

Motion cross-attention (eq. 4). In every spatio-temporal transformer of SVD's UNet
(``TransformerSpatioTemporalModel``), after each spatial transformer block and before the temporal
block mixes frames, the latent features z (``[B*F, h*w, dim]``) receive

    z <- z + W_O Attention(Q = W_Q LN(z), K = W_K LN(z), V_m = W_V z_m)

(with fixed 2-D position features added to LN(z) for Q and K by default, see
:class:`MotionCrossAttention`; ``positional=False`` is the paper's formula alone)

with z_m the motion encoder's features at the same resolution (``[B*F, C_m, h, w]`` -> tokens).
Queries and keys come from the appearance features and values from the motion features, exactly
as the paper writes it: each position gathers the motion of the positions that look like it.
Attention is spatial within each frame; the temporal layers that follow spread it over time.
W_O starts at zero, so at initialisation the UNet's output is bit-for-bit stock SVD's.

Motion strength (eq. 8). SVD turns its added time ids (fps-1, motion_bucket_id,
noise_aug_strength) into sinusoidal embeddings of ``addition_time_embed_dim`` each, concatenates
them and applies ``add_embedding`` (linear_1 -> SiLU -> linear_2). We add a 4th id, the global
motion strength M_s times ``strength_scale``, with the same sinusoidal projection. Widening
linear_1's input by ``addition_time_embed_dim`` columns is the same as adding
``W_s @ sinusoid(M_s)`` to linear_1's output; W_s is this module's ``strength_proj`` and starts at
zero, so the output is unchanged at init, and the stock ``add_embedding`` weights load as they are.
``strength_scale`` (10) maps M_s (px/frame at 512 px, typically 0-15) into the numeric range of the
ids SVD already embeds (motion_bucket_id 0-255).

How it plugs in. diffusers' UNetSpatioTemporalConditionModel has no cross_attention_kwargs, so
:meth:`MotionAdapter.attach` registers forward hooks: a pre-hook on each spatio-temporal
transformer records its resolution, a hook on each of its spatial blocks adds the motion attention,
and a hook on ``add_embedding.linear_1`` adds the strength term. The hooks read the conditioning
the caller set with :meth:`MotionAdapter.conditioning` (or ``set_conditioning``); with nothing set
they do nothing, so the UNet behaves as stock SVD. The UNet's modules and state dict keys are
untouched: stock SVD weights load as they are and the new weights live in this module's own
folder (``motion_adapter/``).

With gradient checkpointing the recomputation runs during backward: keep the conditioning set
until ``backward()`` has returned (use ``set_conditioning`` / ``clear_conditioning``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel
from torch import nn

from stillmotion.errors import MissingWeightsError


def sincos_2d(h: int, w: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2-D sine/cosine position features ``[h*w, dim]`` (rows then columns, latent-grid units)."""
    quarter = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1)))
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freqs
    xs = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freqs
    ey = torch.cat([ys.sin(), ys.cos()], 1)[:, None].expand(h, w, 2 * quarter)
    ex = torch.cat([xs.sin(), xs.cos()], 1)[None].expand(h, w, 2 * quarter)
    pos = torch.cat([ey, ex], 2).reshape(h * w, 4 * quarter)
    if pos.shape[1] < dim:
        pos = F.pad(pos, (0, dim - pos.shape[1]))
    return pos.to(dtype)


class MotionCrossAttention(nn.Module):
    """Attention(Q=W_Q z, K=W_K z, V=W_V z_m) with a zero-initialised output projection.

    With ``positional`` the query/key input is LN(z) plus fixed 2-D sine/cosine position features.
    The paper's z carries no explicit position, so without it a position can gather motion only
    from places that look alike. The position features let the attention also learn to read the
    motion at and near its own place. This is our addition; ``positional=False`` is eq. 4 exactly.
    """

    def __init__(self, dim: int, motion_dim: int, heads: int, positional: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.positional = positional
        self._pos: tuple[tuple, torch.Tensor] | None = None
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(motion_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def position(self, hw: tuple[int, int], dim: int, device, dtype) -> torch.Tensor:
        key = (hw, dim, device, dtype)
        if self._pos is None or self._pos[0] != key:
            self._pos = (key, sincos_2d(hw[0], hw[1], dim, device, dtype))
        return self._pos[1]

    def forward(self, z: torch.Tensor, z_m: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """z ``[N, L, dim]``, z_m ``[N, L, motion_dim]`` (L = h*w, ``hw`` = (h, w)) -> the residual to
        add to z, ``[N, L, dim]``."""
        n, length, dim = z.shape
        h = self.norm(z)
        if self.positional:
            if hw is None or hw[0] * hw[1] != length:
                raise ValueError(f"positional motion attention needs hw with h*w = {length}, got {hw}")
            h = h + self.position(hw, dim, h.device, h.dtype)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, -1, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = split(self.to_q(h)), split(self.to_k(h)), split(self.to_v(z_m.to(z.dtype)))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(n, length, dim))


def _key(name: str) -> str:
    return name.replace(".", "__")


_LEVEL_PATTERNS = (
    (re.compile(r"^down_blocks\.(\d+)\."), lambda m, n: int(m.group(1))),
    (re.compile(r"^mid_block\."), lambda m, n: n - 1),
    (re.compile(r"^up_blocks\.(\d+)\."), lambda m, n: n - 1 - int(m.group(1))),
)


def spatio_temporal_blocks(unet) -> list[tuple[str, int, int, int]]:
    """(spatial block name, dim, heads, resolution level) for every spatial block of every
    spatio-temporal transformer in the UNet; level i is the latent size / 2**i."""
    levels = len(unet.config.block_out_channels)
    out = []
    for name, module in unet.named_modules():
        if not isinstance(module, TransformerSpatioTemporalModel):
            continue
        level = None
        for pattern, fn in _LEVEL_PATTERNS:
            m = pattern.match(name + ".")
            if m:
                level = fn(m, levels)
                break
        if level is None:
            raise ValueError(f"cannot place spatio-temporal transformer {name!r} at a UNet level")
        for j, block in enumerate(module.transformer_blocks):
            out.append((f"{name}.transformer_blocks.{j}", module.inner_dim, block.attn1.heads, level))
    return out


class MotionAdapter(ModelMixin, ConfigMixin):
    """Motion cross-attention for every spatial block + the zero-initialised strength embedding."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        block_names: Sequence[str] = (),
        block_dims: Sequence[int] = (),
        block_heads: Sequence[int] = (),
        block_levels: Sequence[int] = (),
        motion_channels: Sequence[int] = (),
        addition_time_embed_dim: int = 256,
        time_embed_dim: int = 1280,
        strength_scale: float = 10.0,
        positional: bool = True,
        warped_image_condition: bool = False,
        condition_residual: bool = False,
    ):
        # warped_image_condition (an addition to the paper, for small models trained briefly): the UNet's
        # concatenated image latent is, per frame, the input image warped along the motion field
        # (stillmotion.diffusion.warp_condition) instead of the same first frame for every frame.
        # condition_residual (also an addition): the denoiser works on the noisy latents minus the
        # conditioning latents and adds them back to its estimate (MotionDenoiser's docstring).
        super().__init__()
        if not (len(block_names) == len(block_dims) == len(block_heads) == len(block_levels)):
            raise ValueError("block_names, block_dims, block_heads and block_levels must have equal lengths")
        self.attentions = nn.ModuleDict(
            {
                _key(name): MotionCrossAttention(dim, motion_channels[level], heads, positional)
                for name, dim, heads, level in zip(
                    block_names, block_dims, block_heads, block_levels, strict=True
                )
            }
        )
        self.strength_sinusoid = Timesteps(addition_time_embed_dim, True, downscale_freq_shift=0)
        self.strength_proj = nn.Linear(addition_time_embed_dim, time_embed_dim, bias=False)
        nn.init.zeros_(self.strength_proj.weight)
        self._features: dict[tuple[int, int], torch.Tensor] | None = None
        self._strength: torch.Tensor | None = None
        self._hw: tuple[int, int] | None = None
        self._handles: list = []
        self._attached_to: int | None = None

    @classmethod
    def from_unet(
        cls, unet, motion_encoder, strength_scale: float = 10.0, positional: bool = True
    ) -> MotionAdapter:
        """A zero-initialised adapter fitting ``unet`` and ``motion_encoder`` (one level per resolution)."""
        blocks = spatio_temporal_blocks(unet)
        if blocks and max(b[3] for b in blocks) >= motion_encoder.num_levels:
            raise ValueError(
                f"motion encoder has {motion_encoder.num_levels} levels, the UNet needs "
                f"{max(b[3] for b in blocks) + 1}"
            )
        return cls(
            block_names=[b[0] for b in blocks],
            block_dims=[b[1] for b in blocks],
            block_heads=[b[2] for b in blocks],
            block_levels=[b[3] for b in blocks],
            motion_channels=list(motion_encoder.config.block_out_channels),
            addition_time_embed_dim=unet.config.addition_time_embed_dim,
            time_embed_dim=unet.add_embedding.linear_1.out_features,
            strength_scale=strength_scale,
            positional=positional,
        )

    # ---- conditioning set by the caller around UNet forwards -------------------------------------

    def set_conditioning(
        self, motion_features: Sequence[torch.Tensor] | None, strength: torch.Tensor | None = None
    ) -> None:
        """motion_features: the encoder's levels, each ``[N, C, h, w]`` with N = the UNet's batch*frames
        (None: no motion attention); strength: ``[batch]`` M_s values (None: no strength term)."""
        self._features = (
            None if motion_features is None else {tuple(t.shape[-2:]): t for t in motion_features}
        )
        self._strength = strength

    def clear_conditioning(self) -> None:
        self._features, self._strength, self._hw = None, None, None

    @contextlib.contextmanager
    def conditioning(
        self, motion_features: Sequence[torch.Tensor] | None, strength: torch.Tensor | None = None
    ) -> Iterator[None]:
        self.set_conditioning(motion_features, strength)
        try:
            yield
        finally:
            self.clear_conditioning()

    def strength_embedding(self, strength: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``W_s @ sinusoid(strength_scale * M_s)``: what the widened linear_1 columns would add."""
        ids = strength.flatten().float() * self.config.strength_scale
        emb = self.strength_sinusoid(ids).to(self.strength_proj.weight.dtype)
        return self.strength_proj(emb).to(dtype)

    # ---- hooks ------------------------------------------------------------------------------------

    def attach(self, unet) -> None:
        """Register the hooks on ``unet`` (idempotent). Raises MissingWeightsError if it does not fit."""
        if self._attached_to == id(unet):
            return
        self.detach()
        self.check_fits(unet)

        modules = dict(unet.named_modules())
        for module in modules.values():
            if isinstance(module, TransformerSpatioTemporalModel):
                self._handles.append(module.register_forward_pre_hook(self._record_hw, with_kwargs=True))
        for name in self.config.block_names:
            attention = self.attentions[_key(name)]
            self._handles.append(modules[name].register_forward_hook(self._make_block_hook(attention)))
        self._handles.append(unet.add_embedding.linear_1.register_forward_hook(self._strength_hook))
        self._attached_to = id(unet)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._attached_to = None

    def check_fits(self, unet) -> None:
        blocks = spatio_temporal_blocks(unet)
        expected = [(n, d, h, lv) for n, d, h, lv in zip(*self._block_lists(), strict=True)]
        if blocks != expected or unet.add_embedding.linear_1.out_features != self.strength_proj.out_features:
            raise MissingWeightsError(
                "component 'motion_adapter' does not fit the UNet: it was built for another UNet "
                f"configuration ({len(expected)} motion attention blocks, the UNet has {len(blocks)} "
                "spatio-temporal spatial blocks, or the block widths differ)"
            )

    def _block_lists(self):
        c = self.config
        return list(c.block_names), list(c.block_dims), list(c.block_heads), list(c.block_levels)

    def _record_hw(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        self._hw = tuple(hidden.shape[-2:])

    def _make_block_hook(self, attention: MotionCrossAttention):
        def hook(module, args, output):
            if self._features is None:
                return output
            z_m = self._features.get(self._hw)
            if z_m is None:
                raise RuntimeError(
                    f"no motion features at resolution {self._hw}; have {list(self._features)}"
                )
            if z_m.shape[0] != output.shape[0]:
                raise RuntimeError(
                    f"motion features hold {z_m.shape[0]} frames, the UNet runs {output.shape[0]} "
                    "(batch * frames, guidance included)"
                )
            tokens = z_m.flatten(2).transpose(1, 2)
            return output + attention(output, tokens, self._hw).to(output.dtype)

        return hook

    def _strength_hook(self, module, args, output):
        if self._strength is None:
            return output
        s = self._strength.to(output.device)
        if s.numel() != output.shape[0]:
            raise RuntimeError(f"strength holds {s.numel()} values, the UNet batch is {output.shape[0]}")
        return output + self.strength_embedding(s, output.dtype)

    def is_trained(self) -> bool:
        """Whether the adapter changes the UNet at all: its zero-initialised parts (every attention's output
        projection and the strength projection) hold a non-zero value. An untrained adapter (stock SVD via
        ``from_svd``, a model trained without motion input) adds exactly zero, so callers may skip it and
        the motion encoder that feeds it."""
        with torch.no_grad():
            parts = [self.strength_proj.weight]
            for attention in self.attentions.values():
                parts += [attention.to_out.weight, attention.to_out.bias]
            return any(bool(p.detach().ne(0).any()) for p in parts)

    def motion_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters (all of them: attention blocks and strength projection)."""
        return list(self.parameters())
