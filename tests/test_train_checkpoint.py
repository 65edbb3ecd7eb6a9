"""Checkpoints: weights, optimizer, RNG and loop state survive a save/load exactly; nothing is pickled."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from stillmotion.errors import UserInputError
from stillmotion.training.checkpoint import (
    TrainState,
    flatten_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    step_generator,
    unflatten_state,
)
from stillmotion.training.config import load_config, parse_overrides
from stillmotion.training.runlog import CsvLog, read_csv_log, start_output_dir


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    m[0].requires_grad_(False)  # frozen part: rebuilt from its init, not stored
    return m


def _train(model, opt, steps, start=0):
    for step in range(start, start + steps):
        g = step_generator(7, step)
        x = torch.randn(16, 4, generator=g)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_resume_matches_unbroken_run(tmp_path):
    a = _model()
    opt_a = torch.optim.AdamW([p for p in a.parameters() if p.requires_grad], lr=1e-2)
    _train(a, opt_a, 10)

    b = _model()
    opt_b = torch.optim.AdamW([p for p in b.parameters() if p.requires_grad], lr=1e-2)
    _train(b, opt_b, 4)
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(9)
    save_checkpoint(tmp_path, TrainState(step=4, samples_seen=64, extra={"scale": 2.0}),
                    models={"net": b}, optimizers={"adamw": opt_b}, config={"lr": 1e-2})
    expect = (torch.rand(3), np.random.rand(3), random.random())

    c = _model()
    opt_c = torch.optim.AdamW([p for p in c.parameters() if p.requires_grad], lr=1e-2)
    state = load_checkpoint(latest_checkpoint(tmp_path), models={"net": c}, optimizers={"adamw": opt_c})
    assert (state.step, state.samples_seen, state.extra) == (4, 64, {"scale": 2.0})
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1]) and expect[2] == got[2]
    _train(c, opt_c, 6, start=4)
    for (n, pa), pc in zip(a.state_dict().items(), c.state_dict().values(), strict=True):
        assert torch.equal(pa, pc), n


def test_checkpoint_files_hold_no_pickle_and_only_trainable_weights(tmp_path):
    m = _model()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    _train(m, opt, 1)
    path = save_checkpoint(tmp_path, TrainState(step=1), models={"net": m}, optimizers={"adamw": opt})
    from safetensors import safe_open

    with safe_open(str(path / "model.net.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "0.weight" not in keys and "2.weight" in keys and "1.running_mean" in keys
    assert sorted(p.name for p in path.iterdir()) == sorted([
        "model.net.safetensors", "optimizer.adamw.safetensors", "optimizer.adamw.json",
        "rng.0.safetensors", "rng.0.json", "state.json"])
    assert json.loads((path / "state.json").read_text())["step"] == 1


def test_keep_prunes_old_checkpoints_and_mismatch_is_a_clear_error(tmp_path):
    m = _model()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, TrainState(step=step), models={"net": m}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    other = torch.nn.Linear(3, 3)
    with pytest.raises(UserInputError, match="model 'net'"):
        load_checkpoint(latest_checkpoint(tmp_path), models={"net": other})


def test_flatten_roundtrip_keeps_types():
    state = {"state": {0: {"step": torch.tensor(3.0), "m": torch.ones(2)}}, "param_groups": [
        {"lr": 1e-3, "betas": (0.9, 0.99), "params": [0], "foo": None, "inf": float("inf")}]}
    tensors, structure = flatten_state(state)
    json.dumps(structure)
    back = unflatten_state(tensors, json.loads(json.dumps(structure)))
    assert back["param_groups"][0]["betas"] == (0.9, 0.99) and 0 in back["state"]
    assert back["param_groups"][0]["inf"] == float("inf")


def test_csv_log_resume_drops_rows_after_checkpoint(tmp_path):
    log = CsvLog(tmp_path / "log.csv")
    for s in range(1, 6):
        log.write(step=s, loss=1.0 / s, lr=0.1, steps_per_s=1.0, data_wait=0.0)
    log.close()
    log = CsvLog(tmp_path / "log.csv", resume_step=3)
    log.write(step=4, loss=0.5, lr=0.1, steps_per_s=1.0, data_wait=0.0)
    log.close()
    assert [r["step"] for r in read_csv_log(tmp_path / "log.csv")] == ["1", "2", "3", "4"]


def test_output_dir_guard(tmp_path):
    save_checkpoint(tmp_path, TrainState(step=1), models={"net": _model()})
    with pytest.raises(UserInputError, match="--resume"):
        start_output_dir(tmp_path, resume=False)
    assert start_output_dir(tmp_path, resume=True).name == "step-00000001"


def test_config_file_and_overrides(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        lr: float = 1e-3
        steps: int = 10
        name: str = "x"
        size: tuple[int, int] = (8, 8)
        device: str | None = None

    globals()["Cfg"] = Cfg  # get_type_hints looks annotations up in the module
    (tmp_path / "c.yaml").write_text("lr: 1e-4\nsteps: 5\n")
    cfg = load_config(Cfg, tmp_path / "c.yaml", ["steps=7", "size=[16, 32]", "device=null"])
    assert (cfg.lr, cfg.steps, cfg.size, cfg.device) == (1e-4, 7, (16, 32), None)
    with pytest.raises(UserInputError, match="unknown key"):
        load_config(Cfg, None, ["stepz=3"])
    with pytest.raises(UserInputError, match="'steps' must be an integer"):
        load_config(Cfg, None, ["steps=abc"])
    assert parse_overrides(["--max-steps=3"]) == {"max_steps": 3}
