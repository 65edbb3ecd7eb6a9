"""Static-camera LoRA (paper 3.1): rank-16 low-rank adapters on the UNet's temporal layers only.

Targets: the attention projections (to_q, to_k, to_v, to_out.0) of both attentions of every
``temporal_transformer_blocks`` block, the layers that decide how content moves over time (and so
whether the camera drifts). Spatial layers, convolutions and the motion modules are untouched.
peft's ``inject_adapter_in_model`` wraps those Linear layers; the LoRA B matrices start at zero, so
a fresh adapter changes nothing until trained.

On disk (``static_camera_lora/`` beside the pipeline's components): ``pytorch_lora_weights.safetensors``
(peft's key names without the adapter name) and ``lora_config.json`` (rank, alpha, targets).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stillmotion.errors import MissingWeightsError

ADAPTER = "static_camera"
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
CONFIG_NAME = "lora_config.json"
TEMPORAL_TARGETS = r".*temporal_transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"


def add_static_camera_lora(unet: nn.Module, rank: int = 16, alpha: float | None = None) -> list[nn.Parameter]:
    """Inject a fresh LoRA (B = 0) into the temporal layers; returns its (trainable) parameters.
    Other parameters keep their requires_grad flags (freeze them yourself to train the LoRA alone)."""
    # lazy: peft is an optional extra, imported only on this path
    from peft import LoraConfig, inject_adapter_in_model

    if has_lora(unet):
        raise ValueError("the UNet already carries a LoRA; unload or fuse it first")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        target_modules=TEMPORAL_TARGETS,
        init_lora_weights=True,
    )
    # peft freezes every other parameter; put the caller's requires_grad flags back (freezing is the
    # trainer's decision, and the flag even changes which CPU kernels run).
    flags = {n: p.requires_grad for n, p in unet.named_parameters()}
    inject_adapter_in_model(config, unet, adapter_name=ADAPTER)
    for n, p in unet.named_parameters():
        if "lora_" not in n:
            p.requires_grad_(flags[n.replace(".base_layer.", ".")])
    unet._stillmotion_lora = {"rank": rank, "alpha": config.lora_alpha, "target_modules": TEMPORAL_TARGETS}
    return lora_parameters(unet)


def _lora_layers(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    # lazy: peft is an optional extra, imported only on this path
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in unet.named_modules() if isinstance(m, LoraLayer)]


def has_lora(unet: nn.Module) -> bool:
    return bool(_lora_layers(unet))


def lora_parameters(unet: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in unet.named_parameters() if "lora_" in n]


def lora_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    # lazy: peft is an optional extra, imported only on this path
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(unet, adapter_name=ADAPTER)


def save_lora(unet: nn.Module, folder: str | os.PathLike) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in lora_state_dict(unet).items()}
    save_file(state, folder / WEIGHTS_NAME)
    meta = getattr(unet, "_stillmotion_lora", None) or _infer_config(unet)
    (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2))


def _infer_config(unet: nn.Module) -> dict:
    _, layer = _lora_layers(unet)[0]
    rank = layer.r[ADAPTER]
    return {"rank": rank, "alpha": layer.lora_alpha[ADAPTER], "target_modules": TEMPORAL_TARGETS}


def load_lora(unet: nn.Module, folder: str | os.PathLike) -> None:
    """Inject (if needed) and load a saved static-camera LoRA; clear error naming the component if it does
    not fit this UNet."""
    # lazy: peft is an optional extra, imported only on this path
    from peft import set_peft_model_state_dict

    folder = Path(folder)
    weights, cfg_file = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    if not weights.is_file() or not cfg_file.is_file():
        raise MissingWeightsError(
            f"component 'static_camera_lora': {weights.name} or {cfg_file.name} missing in {folder}"
        )
    meta = json.loads(cfg_file.read_text())
    if not has_lora(unet):
        add_static_camera_lora(unet, rank=int(meta["rank"]), alpha=float(meta["alpha"]))
    state = load_file(weights)
    expected = lora_state_dict(unet)
    bad = [k for k, v in state.items() if k not in expected or expected[k].shape != v.shape]
    missing = [k for k in expected if k not in state]
    if bad or missing:
        raise MissingWeightsError(
            f"component 'static_camera_lora' in {folder} does not fit this UNet "
            f"({len(bad)} unexpected or mis-shaped, {len(missing)} missing tensors)"
        )
    device = next(unet.parameters()).device
    set_peft_model_state_dict(unet, {k: v.to(device) for k, v in state.items()}, adapter_name=ADAPTER)


def set_lora_scale(unet: nn.Module, scale: float) -> None:
    """Scale the LoRA's contribution (0 = off, 1 = as trained)."""
    for _, layer in _lora_layers(unet):
        layer.set_scale(ADAPTER, scale)


def _replace_with_base(unet: nn.Module) -> None:
    for name, layer in _lora_layers(unet):
        parent_name, _, attr = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, attr, layer.get_base_layer())
    for attr in ("_stillmotion_lora", "peft_config"):
        if hasattr(unet, attr):
            delattr(unet, attr)


def unload_lora(unet: nn.Module) -> None:
    """Remove the LoRA layers, restoring the stock modules and weights."""
    _replace_with_base(unet)


def fuse_lora(unet: nn.Module) -> None:
    """Merge the LoRA (at its current scale) into the base weights and remove the LoRA layers."""
    for _, layer in _lora_layers(unet):
        layer.merge(adapter_names=[ADAPTER])
    _replace_with_base(unet)


def save_unet_without_lora(unet: nn.Module, folder: str | os.PathLike) -> None:
    """Save the UNet's stock weights (LoRA base weights, LoRA tensors left out) in diffusers' layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in unet.state_dict().items():
        if "lora_" in key:
            continue
        state[key.replace(".base_layer.", ".")] = value.detach().contiguous().cpu()
    unet.save_config(folder)
    save_file(state, folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
