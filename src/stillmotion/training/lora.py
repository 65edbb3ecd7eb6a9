"""Train the static-camera LoRA: ``stillmotion train lora CONFIG``.

The paper (sec. 3.1, 4.1) trains a rank-16 LoRA "within the temporal layers" on fixed-camera
clips, separately from the main model and with every other part frozen. Here:

- data: only clips whose static-camera flag is set (``stillmotion prepare`` measures the camera's
  net drift with a robust affine fit; see ``stillmotion.training.camera``);
- weights: ``stillmotion.diffusion.lora.add_static_camera_lora`` puts rank-``lora_rank`` adapters on
  the attention projections (to_q, to_k, to_v, to_out.0) of both attentions of every temporal
  transformer block; they are the only trainable weights (UNet, motion encoder and adapter, VAE and
  image encoder frozen). B starts at zero, so step 0 is the base model;
- objective, conditioning, dropout, checkpoints and exact resume: the diffusion trainer's
  (``stillmotion.training.diffusion``), same loop;
- output: ``OUTPUT/static_camera_lora/`` (``pytorch_lora_weights.safetensors`` + ``lora_config.json``),
  the folder ``StillMotionPipeline.load_static_camera_lora`` reads; copy it next to a pipeline's
  components (``MODEL/static_camera_lora/``) and ``from_pretrained`` loads it by default. With
  ``save_pipeline: true`` the whole pipeline with the LoRA is also written to ``OUTPUT/model``
  (handy for small models; for full-size SVD it copies gigabytes, so the example config turns it off).

The paper gives no learning rate for the LoRA; 1e-4 (the usual LoRA rate, about 3x the full
model's 3e-5) is the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from stillmotion.diffusion.lora import add_static_camera_lora, save_lora
from stillmotion.errors import UserInputError
from stillmotion.io.atomic import atomic_path

from .config import load_config
from .diffusion import DiffusionConfig, export_pipeline, train


@dataclass
class LoraTrainConfig(DiffusionConfig):
    # Every field of the diffusion trainer applies; these differ or are new:
    static_only: bool = True  # static-camera clips only (the paper's fixed-lens subset)
    lora_rank: int = 16  # the paper's rank
    lora_alpha: float | None = None  # LoRA scale numerator (None: = rank, i.e. scale 1)
    lr: float = 1e-4
    unet_trainable: str = "none"  # ignored: only the LoRA trains
    train_motion: bool = False  # ignored: only the LoRA trains
    output_dir: str = "runs/lora"

    def validate(self) -> None:
        super().validate()
        if self.lora_rank < 1:
            raise UserInputError(f"config: lora_rank must be >= 1, got {self.lora_rank}")


def make_lora_trainable(pipe, cfg: LoraTrainConfig) -> list[nn.Parameter]:
    """Freeze the whole pipeline, inject the temporal LoRA, return its parameters."""
    for module in (pipe.unet, pipe.vae, pipe.image_encoder, pipe.motion_encoder, pipe.motion_adapter):
        module.requires_grad_(False)
    params = add_static_camera_lora(pipe.unet, rank=cfg.lora_rank, alpha=cfg.lora_alpha)
    for p in params:
        p.requires_grad_(True)
    return params


def export_lora(pipe, cfg: LoraTrainConfig, out: Path) -> Path:
    """Write OUTPUT/static_camera_lora (and, with save_pipeline, OUTPUT/model with the LoRA)."""
    target = out / "static_camera_lora"
    with atomic_path(target, directory=True) as tmp:
        save_lora(pipe.unet, tmp)
    if cfg.save_pipeline:
        export_pipeline(pipe, cfg, out)
    return target


def main(config: str | None, overrides: list[str], resume: bool) -> Path:
    """``stillmotion train lora CONFIG [key=value ...] [--resume]``."""
    cfg = load_config(LoraTrainConfig, config, overrides)
    return train(cfg, resume, make_trainable=make_lora_trainable, export=export_lora, name="lora")


if __name__ == "__main__":  # python -m stillmotion.training.lora CONFIG [key=value ...] [--resume]
    import sys

    args = sys.argv[1:]
    main(next((a for a in args if "=" not in a and not a.startswith("--")), None),
         [a for a in args if "=" in a], "--resume" in args)
