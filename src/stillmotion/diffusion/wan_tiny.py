"""Tiny random Wan components built in-process (tests, benchmarks of the code path): no download.

Sizes are diffusers' own test sizes for the Wan image-to-video pipelines (WanTransformer3DModel with two
layers of width 24, AutoencoderKLWan with base_dim 3, a CLIP vision tower of width 4 for Wan 2.1); the text
encoder is a two-layer UMT5 of width 32 with a word-level tokenizer over a small vocabulary written here.
"""

from __future__ import annotations

from typing import Any

import torch

VOCAB_WORDS = (
    "a the photo comes to life with natural smooth motion along way it is drawn camera stays still details "
    "and lighting stay as in static frozen frame picture flicker jitter morphing distorted deformed blurry "
    "low quality jpeg artifacts overexposed subtitles text watermark extra limbs shake water flows river "
    "clouds drift sky waves sea trees sway wind dance monkey negative , . ; :"
).split()


def tiny_tokenizer():
    """A word-level tokenizer (pad 0, eos 1, unk 2) that appends </s> like T5's."""
    # lazy: tokenizers is an optional extra, imported only on this path
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(VOCAB_WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_text_encoder(seed: int = 0, vocab_size: int | None = None):
    # lazy: transformers is an optional extra, imported only on this path
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config = UMT5Config(
        vocab_size=vocab_size or len(VOCAB_WORDS) + 8, d_model=32, d_kv=8, d_ff=32, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return UMT5EncoderModel(config).eval()


def _transformer(seed: int, in_channels: int, out_channels: int, image_dim: int | None, rope: int = 32):
    # lazy: diffusers is an optional extra, imported only on this path
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
        out_channels=out_channels, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=rope, image_dim=image_dim,
    ).eval()  # fmt: skip


def tiny_scheduler(kind: str = "euler", shift: float = 5.0) -> Any:
    """A Wan scheduler: ``euler`` (FlowMatchEulerDiscreteScheduler, diffusers' tests' choice) or ``unipc``
    (UniPCMultistepScheduler with the settings the released Wan checkpoints' scheduler_config.json holds:
    flow prediction on flow sigmas, second order, bh2, data prediction, lower order for the last steps)."""
    # lazy: diffusers is an optional extra, imported only on this path
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if kind == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=shift)
    if kind == "unipc":
        return UniPCMultistepScheduler(
            num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True,
            flow_shift=shift, solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True,
        )  # fmt: skip
    raise ValueError(f"scheduler must be euler or unipc, got {kind!r}")


def tiny_wan_components(
    variant: str = "wan2.1", seed: int = 0, shift: float = 5.0, rope_max_seq_len: int = 32,
    scheduler: str = "euler",
) -> dict[str, Any]:  # fmt: skip
    """Components of a tiny Wan image-to-video pipeline, as keyword arguments for ``WanBackbone`` (or
    diffusers' ``WanImageToVideoPipeline``). ``variant``: ``wan2.1`` (one transformer, CLIP image
    embeddings), ``wan2.2`` (two experts, boundary 0.875, no image encoder) or ``ti2v`` (Wan 2.2 TI2V-5B's
    layout: 48-channel VAE with patch 2, first-frame latent replaced, ``expand_timesteps``).
    ``rope_max_seq_len``: the rotary table's length (32 in diffusers' tests: sides up to 512 px; the real
    models' 1024). ``scheduler``: :func:`tiny_scheduler`'s kind."""
    # lazy: diffusers is an optional extra, imported only on this path
    from diffusers import AutoencoderKLWan

    if variant not in ("wan2.1", "wan2.2", "ti2v"):
        raise ValueError(f"variant must be wan2.1, wan2.2 or ti2v, got {variant!r}")
    torch.manual_seed(seed)
    if variant == "ti2v":
        vae = AutoencoderKLWan(
            base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
            latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
            scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True],
        )  # fmt: skip
    else:
        vae = AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )
    vae.eval()
    tokenizer = tiny_tokenizer()
    text_encoder = tiny_text_encoder(seed, vocab_size=len(tokenizer))
    parts: dict[str, Any] = {
        "vae": vae, "scheduler": tiny_scheduler(scheduler, shift), "text_encoder": text_encoder,
        "tokenizer": tokenizer, "image_encoder": None, "image_processor": None, "transformer_2": None,
        "boundary_ratio": None,
    }  # fmt: skip
    if variant == "wan2.1":
        # lazy: transformers is an optional extra, imported only on this path
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

        parts["transformer"] = _transformer(seed, 36, 16, image_dim=4, rope=rope_max_seq_len)
        torch.manual_seed(seed)
        parts["image_encoder"] = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            intermediate_size=16, patch_size=1,
        )).eval()  # fmt: skip
        parts["image_processor"] = CLIPImageProcessor(crop_size=32, size=32)
    elif variant == "wan2.2":
        parts["transformer"] = _transformer(seed, 36, 16, image_dim=None, rope=rope_max_seq_len)
        parts["transformer_2"] = _transformer(seed + 1, 36, 16, image_dim=None, rope=rope_max_seq_len)
        parts["boundary_ratio"] = 0.875
    else:
        parts["transformer"] = _transformer(seed, 48, 48, image_dim=None, rope=rope_max_seq_len)
        parts["expand_timesteps"] = True
    return parts
