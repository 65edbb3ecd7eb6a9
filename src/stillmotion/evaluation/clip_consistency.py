"""Tem-Cons: mean cosine similarity of CLIP image embeddings of adjacent frames (paper sec. 4.1).

The CLIP vision tower with its projection (transformers' ``CLIPVisionModelWithProjection``) and its
image processor load from a local folder, or from the Hugging Face cache with no network access
(``local_files_only=True``) for the ids in ``CLIP_HUB_IDS``. The paper does not name its CLIP; the
first cached id wins and the report records which model was used, because Tem-Cons values are only
comparable under the same CLIP.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from stillmotion.evaluation.weights import MetricUnavailable, resolve_device

CLIP_HUB_IDS = (
    "openai/clip-vit-base-patch32",
    "openai/clip-vit-large-patch14",
    "openai/clip-vit-base-patch16",
)


def _hub_cache() -> str:
    try:
        # lazy, guarded: a part missing from this installation is reported, not an import error
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return "~/.cache/huggingface/hub"


def _load(source: str):
    # lazy: transformers is an optional extra, imported only on this path
    import transformers
    from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

    transformers.logging.set_verbosity_error()  # the no-torchvision fallback warning is expected
    model = CLIPVisionModelWithProjection.from_pretrained(source, local_files_only=True)
    try:
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        # SVD folders keep the processor beside the encoder (feature_extractor/).
        processor = AutoImageProcessor.from_pretrained(
            str(Path(source).parent / "feature_extractor"), local_files_only=True
        )
    return model, processor


class CLIPConsistency:
    """Tem-Cons of uint8 frame sequences."""

    def __init__(
        self, source: str | os.PathLike | None = None, device: str | torch.device | None = None
    ) -> None:
        self.device = resolve_device(device)
        candidates = [str(source)] if source is not None else list(CLIP_HUB_IDS)
        looked: list[str] = []
        errors: list[str] = []
        for cand in candidates:
            looked.append(cand if Path(cand).exists() or source is not None else f"{_hub_cache()} ({cand})")
            try:
                self.model, self.processor = _load(cand)
            except (OSError, ValueError) as exc:
                errors.append(str(exc).splitlines()[0][:160])
                continue
            self.source = cand
            break
        else:
            raise MetricUnavailable("Tem-Cons", looked, "no CLIP vision model found locally" + _first(errors))
        self.model = self.model.to(self.device).eval()

    @torch.no_grad()
    def embeddings(self, frames: np.ndarray, batch: int = 16) -> np.ndarray:
        """Unit-length CLIP image embeddings (N, D) of uint8 frames (N, H, W, 3)."""
        out = []
        for i in range(0, len(frames), batch):
            inputs = self.processor(images=list(frames[i : i + batch]), return_tensors="pt")
            pix = inputs["pixel_values"].to(self.device, self.model.dtype)
            emb = self.model(pixel_values=pix).image_embeds.float()
            out.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    def per_frame(self, frames: np.ndarray) -> np.ndarray:
        """Cosine between the embeddings of frame t and t+1 -> (N-1,)."""
        e = self.embeddings(frames)
        return (e[1:] * e[:-1]).sum(-1) if len(e) > 1 else np.zeros(0)


def _first(errors: list[str]) -> str:
    return f" ({errors[0]})" if errors else ""
