"""Shared fixtures. Real data lives in ../shared/data beside the repo; tests that need it skip cleanly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STILLMOTION_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a message when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _quiet_offline(monkeypatch):
    # Tests never reach a hub: weights come from local files only.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seeded_global_generators():
    # A test draws the same numbers (and builds the same default-initialised layers) whichever
    # tests ran before it, so a test selected alone behaves as it does in the suite.
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (bit-exact comparisons within a test, steady timings)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny motion-conditioned SVD pipeline (random weights, seed 0) saved as ``--model`` loads it."""
    pytest.importorskip("diffusers")
    from stillmotion.diffusion.pipeline import StillMotionPipeline
    from stillmotion.diffusion.tiny import tiny_components

    path = tmp_path_factory.mktemp("tiny") / "model"
    StillMotionPipeline(**tiny_components(0)).save_pretrained(path)
    return path
