"""`stillmotion eval`: conditions, method adapters, a real run over the shared videos, every output."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from stillmotion.errors import UserInputError
from stillmotion.evaluation.conditions import condition_from_clip, motion_mask, sample_arrows
from stillmotion.evaluation.methods import ALL_METHODS, DiffusionModels, build_methods, default_model_dir
from stillmotion.evaluation.runner import EvalOptions, discover_videos, fit_frame, run, working_size


def test_discover_videos_and_bad_paths(shared_data, tmp_path):
    vids = discover_videos([shared_data / "videos"])
    names = [p.name for p in vids]
    assert "water_3.gif" in names and "two_stream_flames" in names
    assert any(n.endswith(".avi") for n in names)
    assert len(discover_videos([shared_data / "videos"], limit=2)) == 2
    with pytest.raises(UserInputError, match="does not exist"):
        discover_videos([tmp_path / "nope"])
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(UserInputError, match="not a video file"):
        discover_videos([tmp_path / "a.txt"])
    with pytest.raises(UserInputError, match="no videos"):
        discover_videos([tmp_path])
    with pytest.raises(UserInputError, match="unknown method"):
        EvalOptions([tmp_path], tmp_path / "o", methods=["warp", "sora"]).check()
    with pytest.raises(UserInputError, match="--model /no/such: no such folder"):
        EvalOptions([tmp_path], tmp_path / "o", model="/no/such").check()


def test_working_size_and_fit():
    assert working_size(352, 288, 256) == (256, 208)
    assert working_size(1280, 720, 128, 64) == (128, 64)
    img = np.zeros((288, 352, 3), np.uint8)
    assert fit_frame(img, 256, 208).shape == (208, 256, 3)


def test_conditions_from_a_known_motion():
    h, w = 64, 96
    flows = np.zeros((5, h, w, 2), np.float32)
    flows[:, 10:40, 20:60, 0] = 1.5  # a block moving right
    flows[:, 10:40, 20:60, 1] = -0.5
    frames = np.zeros((6, h, w, 3), np.uint8)
    mask = motion_mask(flows)
    assert mask[25, 40] and not mask[60, 90]
    cond = condition_from_clip(frames, flows, "flow")
    assert cond.requested(static=False).shape == (5, h, w, 2)
    assert np.allclose(cond.requested(static=True), flows.mean(0))
    arrows = sample_arrows(flows.mean(0), mask, count=3)
    assert 1 <= len(arrows) <= 3
    for a in arrows:
        (x0, y0), (x1, y1) = a.start, a.end
        v = np.array([x1 - x0, y1 - y0])
        assert np.dot(v, [1.5, -0.5]) / (np.linalg.norm(v) * np.hypot(1.5, 0.5)) > 0.95
        assert mask[int(y0), int(x0)]
    cond = condition_from_clip(frames, flows, "arrows")
    assert cond.arrows and cond.field.shape == (h, w, 2)
    # the dense arrow field points along the motion where the block is
    assert cond.field[25, 40] @ np.array([1.5, -0.5]) > 0


def _randomize_motion_modules(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(pipe.motion_adapter.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_diffusion_adapters_and_ablations_with_a_tiny_pipeline():
    from stillmotion.diffusion.pipeline import StillMotionPipeline
    from stillmotion.diffusion.tiny import tiny_components

    pipe = StillMotionPipeline(**tiny_components(0, num_frames=4))
    pipe.set_progress_bar_config(disable=True)
    _randomize_motion_modules(pipe)
    models = DiffusionModels()
    models._cache["model"] = pipe  # the run loads it from --model; here it is built in memory
    methods = {
        m.name: m for m in build_methods(["diffusion", "no-refiner", "no-motion", "no-strength"], models)
    }
    assert all(m.run is not None for m in methods.values())
    assert not methods["diffusion"].applies_to(125, clip_len=25) and methods["diffusion"].applies_to(16, 25)
    rng = np.random.default_rng(0)
    h = w = 32
    frames = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    flows = np.zeros((2, h, w, 2), np.float32)
    flows[:, :, :16, 0] = 2.0
    cond = condition_from_clip(frames, flows, "flow")
    # one sampling step keeps this fast; every switch acts on the UNet's first (and only) call
    out = {n: methods[n].run(cond, 3, 7, 1) for n in ("diffusion", "no-motion", "no-strength")}
    for g in out.values():
        assert g.frames.shape == (3, h, w, 3) and g.frames.dtype == np.uint8
        assert g.info["unet_calls"] == 1 and g.seconds > 0
    assert np.array_equal(
        out["diffusion"].frames, methods["diffusion"].run(cond, 3, 7, 1).frames
    )  # same seed
    assert out["no-motion"].requested is None and out["diffusion"].requested.shape == (2, h, w, 2)
    assert not np.array_equal(out["diffusion"].frames, out["no-motion"].frames)
    assert not np.array_equal(out["diffusion"].frames, out["no-strength"].frames)
    assert out["diffusion"].info["refine"] is False  # with flows, T has nothing to refine (w/o T = full)


def test_unavailable_methods_are_reported_with_a_reason(tmp_path):
    methods = {
        m.name: m for m in build_methods(list(ALL_METHODS), DiffusionModels(model=str(tmp_path / "x")))
    }
    assert methods["warp"].run is not None
    for name in ("diffusion", "no-motion", "svd", "phased"):
        assert methods[name].run is None and methods[name].unavailable
    assert "--svd" in methods["svd"].unavailable


def _save_tiny_metric_weights(folder: Path) -> dict:
    from stillmotion.evaluation.i3d import InceptionI3d
    from test_eval_learned_metrics import _save_lpips_files, _tiny_clip

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    sd = InceptionI3d(width=1 / 16).state_dict()
    from safetensors.torch import save_file

    save_file({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")},
              str(folder / "i3d_kinetics400.safetensors"))  # fmt: skip
    _save_lpips_files(folder)
    _tiny_clip(folder / "clip")
    return {
        "i3d": str(folder / "i3d_kinetics400.safetensors"),
        "lpips_dir": str(folder),
        "clip": str(folder / "clip"),
    }


def _check_outputs(out: Path, protocols: list[int]) -> dict:
    for name in ("table.md", "results.csv", "results.json", "index.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for n in protocols:
        assert (out / "plots" / f"frames_{n}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    links = re.findall(r"src='([^']+)'", page)
    assert links and all(not link.startswith(("http", "/")) for link in links)
    assert all((out / link).is_file() for link in links), [
        link for link in links if not (out / link).is_file()
    ]
    assert "cdn" not in page.lower()
    assert not list(out.parent.glob(f".{out.name}*"))  # no staging or temporary folder left behind
    return json.loads((out / "results.json").read_text())


def test_run_over_the_shared_videos_writes_every_output(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("STILLMOTION_WEIGHTS", str(tmp_path / "no_weights"))
    weights = _save_tiny_metric_weights(tmp_path / "w")
    model = default_model_dir()  # the embedded model when installed; diffusion rows are skipped otherwise
    out = tmp_path / "eval"
    # a subset of the diffusion rows keeps this quick when a model is installed (the adapters of all
    # of them are tested on a tiny pipeline above); 20 frames exceeds the embedded model's 16-frame clip
    methods = ["warp", "diffusion", "no-motion", "svd", "phased"]
    opts = EvalOptions([shared_data / "videos"], out, frames=[6, 20], size=64, limit=3, steps=2, model=model,
                       methods=methods, **weights)  # fmt: skip
    run(opts)
    doc = _check_outputs(out, [6, 20])
    rows = doc["videos"]
    vids = {r["video"] for r in rows}
    assert len(vids) == 3
    # every video x protocol has the real reference row and the warp row, with the metrics computed
    for v in vids:
        for n in (6, 20):
            got = {r["method"] for r in rows if r["video"] == v and r["protocol"] == n}
            assert {"real", "warp"} <= got
    warp = [r for r in rows if r["method"] == "warp"]
    for r in warp:
        assert "error" not in r
        for k in ("psnr", "ssim", "lpips", "tem_cons", "warp_error", "epe", "cosine", "seconds"):
            assert r[k] is not None and np.isfinite(r[k]), (k, r["video"])
        assert len(r["curves"]["psnr"]) == r["frames"]
    # the 12-frame gif and the 20-frame protocol: clipped and said so
    assert any("shorter than the 20-frame protocol" in n for n in doc["notes"])
    # FVD over 3 videos: computed, flagged as rank-deficient
    summary = {(s["protocol"], s["method"]): s for s in doc["summary"]}
    assert summary[(6, "warp")]["fvd"] is not None and summary[(6, "warp")]["fvd"] >= 0
    assert any("rank-deficient" in w for w in doc["fvd_warnings"])
    assert not doc["not_computed"]
    # methods that cannot run are listed with their reason; with a model the diffusion rows ran
    assert "svd" in doc["skipped"]
    if model is None:
        assert {"diffusion", "no-motion", "phased"} <= set(doc["skipped"])
    else:
        ran = {r["method"] for r in rows if "error" not in r}
        assert {"diffusion", "no-motion", "phased"} <= ran, [r.get("error") for r in rows if "error" in r]
    table = (out / "table.md").read_text()
    assert "## 6 frames (3 videos)" in table and "## 20 frames (3 videos)" in table
    assert "| Method | FVD ↓ | PSNR ↑ | SSIM ↑ | LPIPS ↓ | Tem-Cons ↑ | Time (s) ↓ |" in table
    assert "Methods skipped:" in table
    with (out / "results.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows)


def test_missing_metric_weights_are_reported_and_the_run_goes_on(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("STILLMOTION_WEIGHTS", str(tmp_path / "no_weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "eval"
    run(EvalOptions([shared_data / "videos" / "dynca" / "water_3.gif"], out, methods=["warp"], frames=[5],
                    size=48, lpips_dir=str(tmp_path / "nolpips")))  # fmt: skip
    doc = _check_outputs(out, [5])
    assert set(doc["not_computed"]) == {"FVD", "LPIPS", "Tem-Cons"}
    assert any("nolpips" in p for p in doc["not_computed"]["LPIPS"]["looked_in"])
    assert any("i3d_torchscript.pt" in p for p in doc["not_computed"]["FVD"]["looked_in"])
    table = (out / "table.md").read_text()
    assert "Metrics not computed:" in table and "- FVD:" in table
    warp = [r for r in doc["videos"] if r["method"] == "warp"][0]
    assert warp["psnr"] is not None and warp.get("lpips") is None
    # a second run (arrows sampled from the video's motion) replaces the folder as a whole
    gif = shared_data / "videos" / "dynca" / "water_3.gif"
    run(EvalOptions([gif], out, methods=["warp"], frames=[4], size=48, condition="arrows"))
    assert not (out / "plots" / "frames_5.png").exists() and (out / "plots" / "frames_4.png").exists()
    doc = json.loads((out / "results.json").read_text())
    warp = [r for r in doc["videos"] if r["method"] == "warp"][0]
    assert warp["condition"] == "arrows" and warp["arrows"] and warp["cosine"] is not None


def test_long_video_methods_with_a_tiny_pipeline():
    from stillmotion.diffusion.pipeline import StillMotionPipeline
    from stillmotion.diffusion.tiny import tiny_components

    pipe = StillMotionPipeline(**tiny_components(0, num_frames=4))
    pipe.set_progress_bar_config(disable=True)
    models = DiffusionModels()
    models._cache["model"] = pipe
    methods = {m.name: m for m in build_methods(["phased", "direct"], models)}
    assert all(m.run is not None and m.long_only for m in methods.values())
    assert methods["phased"].applies_to(6, clip_len=4) and not methods["phased"].applies_to(4, clip_len=4)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    flows = np.zeros((6, 32, 32, 2), np.float32)
    flows[..., 1] = 1.0
    cond = condition_from_clip(frames, flows, "flow")
    for name, m in methods.items():
        g = m.run(cond, 7, 3, 1)
        assert g.frames.shape == (7, 32, 32, 3), name
        assert g.joins and all(0 < j < 7 for j in g.joins), (name, g.joins)
        assert g.info["unet_calls"] > 0


def test_stock_svd_row_from_a_saved_svd_folder(tmp_path):
    from diffusers import StableVideoDiffusionPipeline

    from stillmotion.diffusion.tiny import tiny_svd_components

    StableVideoDiffusionPipeline(**tiny_svd_components(0, num_frames=4)).save_pretrained(tmp_path / "svd")
    method = build_methods(["svd"], DiffusionModels(svd=str(tmp_path / "svd")))[0]
    assert method.run is not None, method.unavailable
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    flows = np.ones((2, 32, 32, 2), np.float32)
    g = method.run(condition_from_clip(frames, flows, "flow"), 3, 0, 1)
    assert g.frames.shape == (3, 32, 32, 3) and g.requested is None  # stock SVD gets no motion


def test_unreadable_video_is_a_clear_error_and_nothing_is_written(tmp_path):
    bad = tmp_path / "videos" / "broken.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"not a video at all" * 10)
    out = tmp_path / "eval"
    with pytest.raises(UserInputError, match="broken.mp4"):
        run(EvalOptions([bad.parent], out, methods=["warp"], frames=[4], size=48))
    assert not out.exists() and not list(tmp_path.glob(".eval*"))
