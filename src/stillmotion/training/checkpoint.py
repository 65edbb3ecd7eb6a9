"""Checkpoints that resume exactly, with nothing pickled.

A checkpoint is a folder ``OUTPUT/checkpoints/step-00001234/`` written atomically (temp folder +
rename, so a kill never leaves a half-written one under the final name)::

    state.json                      step, epoch, samples_seen, world_size, trainer extras, config
    model.<name>.safetensors        trainable parameters + buffers of each model (or all weights)
    optimizer.<name>.safetensors    every tensor of the optimizer state, flattened by path
    optimizer.<name>.json           the rest of the optimizer state (scalars, param groups)
    rng.<rank>.safetensors / .json  torch CPU + CUDA generator states, numpy and python RNG states

Usage in a training loop (every trainer in this package, and the refiner's, does this)::

    ckpt = latest_checkpoint(out_dir) if resume else None
    state = load_checkpoint(ckpt, models={"unet": unet}, optimizers={"adamw": opt}) if ckpt else TrainState()
    for ... in loop:
        state.step += 1; state.samples_seen += global_batch
        if state.step % every == 0:
            save_checkpoint(out_dir, state, models=..., optimizers=..., config=cfg_dict,
                            rng_states=gather_rng_states(accelerator))  # on the main process only

Exact resume also needs the data order to be a function of ``samples_seen`` (see
``stillmotion.training.dataset.ClipSampler``) and the per-step noise drawn from generators seeded by
the step (see ``step_generator``); then a resumed run repeats the unbroken run bit for bit on the
same device.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from stillmotion.errors import UserInputError
from stillmotion.io.atomic import atomic_path

FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainState:
    """Where a run is: optimizer steps done, epochs and samples consumed, trainer extras (JSON-able)."""

    step: int = 0
    epoch: int = 0
    samples_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- model weights


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DDP/accelerate wrappers keep the real module under .module; names must not carry "module."
    while isinstance(model, torch.nn.parallel.DistributedDataParallel) or type(model).__name__ in (
        "DistributedDataParallel",
        "FullyShardedDataParallel",
    ):
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper


def model_state(model: torch.nn.Module, *, trainable_only: bool = True) -> dict[str, torch.Tensor]:
    """Parameters that require grad (or all with ``trainable_only=False``) and persistent buffers."""
    model = _unwrap(model)
    full = model.state_dict()
    if not trainable_only:
        return dict(full)
    keep = {name for name, p in model.named_parameters() if p.requires_grad}
    keep |= {name for name, _ in model.named_buffers() if name in full}
    return {k: v for k, v in full.items() if k in keep}


def _tensors_for_file(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; copies are cheap next to a disk write.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def load_model_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], *, name: str) -> None:
    """Copy saved weights into ``model``; every trainable parameter must be present."""
    model = _unwrap(model)
    own = model.state_dict()
    unexpected = sorted(set(tensors) - set(own))
    missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in tensors)
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} trainable tensor(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown tensor(s), e.g. {unexpected[:3]}")
        raise UserInputError(f"checkpoint weights for model {name!r} do not match it: {'; '.join(parts)}")
    for key, value in tensors.items():
        if own[key].shape != value.shape:
            raise UserInputError(
                f"checkpoint weights for model {name!r}: {key} has shape {tuple(value.shape)}, "
                f"the model has {tuple(own[key].shape)}"
            )
    model.load_state_dict(tensors, strict=False)


# ----------------------------------------------------------------------------- optimizer state


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON structure of ``obj`` with every tensor moved to ``tensors`` under its path."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj
        return {"__tensor__": path}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, f"{path}.k{i}", tensors), _encode(v, f"{path}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not np.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint without pickling it (at {path})")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__dict__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def flatten_state(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (optimizer ``state_dict()``, scaler state) into tensors + a JSON structure."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, "s", tensors)
    return tensors, structure


def unflatten_state(tensors: dict[str, torch.Tensor], structure: Any) -> Any:
    """Inverse of :func:`flatten_state`."""
    return _decode(structure, tensors)


# ----------------------------------------------------------------------------- RNG state


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's torch (CPU, CUDA), numpy and python RNG states as tensors + JSON."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
    }
    return tensors, meta


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("torch_cuda.")),
                                        key=lambda k: int(k.split(".")[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    n = meta["numpy"]
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def gather_rng_states(accelerator: Any = None) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """RNG states of every process, in rank order (call on all processes; only the main one uses it)."""
    mine = capture_rng_state()
    if accelerator is None or accelerator.num_processes == 1:
        return [mine]
    # lazy: accelerate is an optional extra, imported only on this path
    from accelerate.utils import gather_object

    # gather_object moves in-memory objects between our own processes; nothing is read from disk.
    return list(gather_object([mine]))


def step_generator(
    seed: int, step: int, rank: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator for the randomness of one training step (noise, sigmas, dropout masks).

    Seeding it from (seed, step, rank) makes the step's draws independent of everything before it,
    so a resumed run draws exactly what the unbroken run drew.
    """
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 9_176 + rank * 7_919_317) % (2**63 - 1))
    return g


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Finished checkpoints under ``output_dir``, oldest first (temporary folders are ignored)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / "state.json").is_file()]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(
    output_dir: str | Path,
    state: TrainState,
    *,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    rng_states: list[tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None,
    trainable_only: bool = True,
    keep: int = 2,
    world_size: int = 1,
) -> Path:
    """Write a checkpoint for ``state.step`` atomically; keep the newest ``keep`` (0 keeps all).

    Call it on the main process only (model weights are identical on every rank under DDP);
    ``rng_states`` holds every rank's RNG state (:func:`gather_rng_states`), default this process's.
    """
    final = checkpoint_dir(output_dir, state.step)
    with atomic_path(final, directory=True) as tmp:
        for name, model in models.items():
            save_file(_tensors_for_file(model_state(model, trainable_only=trainable_only)),
                      str(tmp / f"model.{name}.safetensors"))
        for name, opt in (optimizers or {}).items():
            opt = getattr(opt, "optimizer", opt)  # accelerate's AcceleratedOptimizer wraps the real one
            tensors, structure = flatten_state(opt.state_dict())
            save_file(_tensors_for_file(tensors), str(tmp / f"optimizer.{name}.safetensors"))
            (tmp / f"optimizer.{name}.json").write_text(json.dumps(structure))
        for rank, (tensors, meta) in enumerate(rng_states or [capture_rng_state()]):
            save_file(_tensors_for_file(tensors), str(tmp / f"rng.{rank}.safetensors"))
            (tmp / f"rng.{rank}.json").write_text(json.dumps(meta))
        info = {
            "format": FORMAT_VERSION,
            **asdict(state),
            "world_size": world_size,
            "models": sorted(models),
            "optimizers": sorted(optimizers or {}),
            "trainable_only": trainable_only,
            "config": config or {},
        }
        (tmp / "state.json").write_text(json.dumps(info, indent=2))
    if keep > 0:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint_info(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        info = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserInputError(f"checkpoint {path} cannot be read: {exc}") from None
    if info.get("format") != FORMAT_VERSION:
        raise UserInputError(f"checkpoint {path} has format {info.get('format')}, expected {FORMAT_VERSION}")
    return info


def load_checkpoint(
    path: str | Path,
    *,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, Any] | None = None,
    rank: int = 0,
    restore_rng: bool = True,
) -> TrainState:
    """Load weights, optimizer and (this rank's) RNG state from ``path``; return the saved TrainState."""
    path = Path(path)
    info = read_checkpoint_info(path)
    for name, model in models.items():
        file = path / f"model.{name}.safetensors"
        if not file.is_file():
            raise UserInputError(f"checkpoint {path} has no weights for model {name!r} ({file.name})")
        load_model_state(model, load_file(str(file)), name=name)
    for name, opt in (optimizers or {}).items():
        file = path / f"optimizer.{name}.safetensors"
        if not file.is_file():
            raise UserInputError(f"checkpoint {path} has no state for optimizer {name!r} ({file.name})")
        structure = json.loads((path / f"optimizer.{name}.json").read_text())
        opt = getattr(opt, "optimizer", opt)
        opt.load_state_dict(unflatten_state(load_file(str(file)), structure))
    if restore_rng:
        file = path / f"rng.{rank}.safetensors"
        if not file.is_file():  # resumed on more processes than saved: ranks without a state reuse rank 0's
            file = path / "rng.0.safetensors"
        meta = json.loads(file.with_suffix(".json").read_text())
        restore_rng_state(load_file(str(file)), meta)
    return TrainState(
        step=int(info["step"]),
        epoch=int(info["epoch"]),
        samples_seen=int(info["samples_seen"]),
        extra=dict(info.get("extra") or {}),
    )
