"""The diffusion engine on a Wan folder (tiny components saved in diffusers' layout): one clip, a long video
with exactly the frames asked for, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stillmotion.errors import UserInputError
from stillmotion.inputs.scene import Scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    from diffusers import WanImageToVideoPipeline

    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    folder = tmp_path_factory.mktemp("models") / "Wan2.1-I2V-14B-480P-Diffusers"
    with torch.random.fork_rng(devices=[]):
        WanImageToVideoPipeline(**tiny_wan_components("wan2.1")).save_pretrained(folder)
    return folder


def _scene(w: int = 40, h: int = 24) -> Scene:
    rng = np.random.default_rng(2)
    return Scene(image=(rng.random((h, w, 3)) * 255).astype(np.uint8), arrows=[])


def test_one_clip_and_a_long_video(wan_folder):
    from stillmotion.diffusion.wan import latent_frames, wan_model_dir
    from stillmotion.engines.wan import animate_wan
    from stillmotion.sampling.long import LongOptions, expected_cost

    assert wan_model_dir(wan_folder) == wan_folder and wan_model_dir(wan_folder.parent) is None
    it, stats = animate_wan(_scene(), None, model=wan_folder, frames=9, steps=2, size=(32, 16),
                            prompt="waves", guidance=3.0)  # fmt: skip
    frames = list(it)
    assert len(frames) == 9 and frames[0].shape == (16, 32, 3) and frames[0].dtype == np.uint8
    assert stats["backbone"] == "wan2.1-i2v" and stats["long_method"] is None and stats["sampler"] == "euler"
    assert (stats["unet_calls"], stats["transformer_calls"], stats["latent_frames"]) == (2, 4, 3)

    it, stats = animate_wan(_scene(), None, model=wan_folder, frames=90, steps=3, size=(32, 16),
                            long_method="phased", gamma=0.6)  # fmt: skip
    frames = list(it)
    assert len(frames) == 90 and stats["long_method"] == "phased"
    cost = expected_cost(LongOptions(method="phased", gamma=0.6), latent_frames(90), 21, 3)
    assert stats["unet_calls"] == cost.denoiser_calls and stats["latent_frames"] == 24
    # the default size is the model's 480P bucket for the scene's aspect ratio
    from stillmotion.engines.wan import load_wan

    backbone = load_wan(wan_folder)
    assert backbone.default_size(40, 24) == (512, 304)  # the bucket, shrunk to the tiny model's 512 px
    assert backbone.max_side == 512  # rope_max_seq_len 32 x patch 2 x VAE 8


def test_a_folder_whose_scheduler_is_unipc_samples_with_unipc(tmp_path):
    from diffusers import WanImageToVideoPipeline

    from stillmotion.diffusion.wan import latent_frames
    from stillmotion.diffusion.wan_tiny import tiny_wan_components
    from stillmotion.engines.wan import animate_wan
    from stillmotion.sampling.long import LongOptions, expected_cost

    folder = tmp_path / "Wan2.1-I2V-14B-480P-Diffusers"
    with torch.random.fork_rng(devices=[]):
        WanImageToVideoPipeline(**tiny_wan_components("wan2.1", scheduler="unipc")).save_pretrained(folder)
    it, stats = animate_wan(_scene(), None, model=folder, frames=9, steps=3, size=(32, 16), guidance=3.0)
    assert len(list(it)) == 9 and stats["sampler"] == "unipc" and stats["unet_calls"] == 3
    it, stats = animate_wan(_scene(), None, model=folder, frames=90, steps=3, size=(32, 16),
                            long_method="phased", gamma=0.6)  # fmt: skip
    assert len(list(it)) == 90 and stats["sampler"] == "unipc"
    cost = expected_cost(LongOptions(method="phased", gamma=0.6), latent_frames(90), 21, 3)
    assert stats["unet_calls"] == cost.denoiser_calls


def test_bad_options_are_named(wan_folder):
    from stillmotion.engines.wan import animate_wan

    with pytest.raises(UserInputError, match="--flow-shift"):
        animate_wan(_scene(), None, model=wan_folder, frames=5, flow_shift=0.0)
    with pytest.raises(UserInputError, match="--guidance"):
        animate_wan(_scene(), None, model=wan_folder, frames=5, guidance=-1.0)
    with pytest.raises(UserInputError, match="multiples of 16"):
        list(animate_wan(_scene(), None, model=wan_folder, frames=5, size=(40, 24))[0])


def test_cli_and_python_api_run_a_wan_folder(wan_folder, tmp_path, capsys):
    import av

    import stillmotion
    from stillmotion.cli import main

    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(_scene(64, 32).image).save(image)
    out, report = tmp_path / "wan.mp4", tmp_path / "r.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["animate", str(image), "--engine", "diffusion", "--model", str(wan_folder), "--frames", "9",
              "--steps", "2", "--size", "32x16", "--prompt", "waves", "--guidance", "3", "--flow-shift", "3",
              "-o", str(out), "--report", str(report)])  # fmt: skip
    assert exit_info.value.code == 0, capsys.readouterr().err
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 9
    import json

    doc = json.loads(report.read_text())
    assert doc["frames"] == 9 and doc["backbone"] == "wan2.1-i2v"
    video = stillmotion.animate(str(image), engine="diffusion", model=str(wan_folder), frames=5, steps=1,
                                size=(32, 16), prompt="clouds drift")  # fmt: skip
    assert video.shape == (5, 16, 32, 3)
    # a bad value is one clear line, exit code 2, nothing written
    bad = tmp_path / "bad.mp4"
    with pytest.raises(SystemExit) as exit_info:
        main(["animate", str(image), "--engine", "diffusion", "--model", str(wan_folder), "--size", "40x24",
              "-o", str(bad)])  # fmt: skip
    assert exit_info.value.code == 2 and "multiples of 16" in capsys.readouterr().err and not bad.exists()


def test_help_says_which_options_apply_to_which_backbone(capsys):
    from stillmotion.cli import main

    with pytest.raises(SystemExit):
        main(["animate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    wan_options = ("--prompt", "--negative-prompt", "--guidance", "--guidance-2", "--flow-shift",
                   "--vae-tiling")
    for option in wan_options:
        assert option in text, option
    assert "wan: text prompt" in text and "svd: refine" in text and "Wan2.2-I2V-A14B-Diffusers" in text


def test_web_ui_offers_a_prompt_for_a_wan_folder_and_its_command_replays(wan_folder, tmp_path, monkeypatch):
    import io
    import shlex
    import time

    pytest.importorskip("fastapi")
    av = pytest.importorskip("av")
    from fastapi.testclient import TestClient
    from PIL import Image

    from stillmotion.cli import main
    from stillmotion.ui.server import create_app

    buf = io.BytesIO()
    Image.fromarray(_scene(48, 32).image).save(buf, "PNG")
    photo = buf.getvalue()
    app = create_app(model_dir=wan_folder, work_root=tmp_path)
    with TestClient(app, headers={"X-Stillmotion": "1"}, base_url="http://127.0.0.1:7860") as client:
        info = client.get("/api/info").json()["engines"]["diffusion"]
        assert info["available"] and info["backbone"] == "wan"
        sid = client.post("/api/session").json()["session"]
        r = client.post(f"/api/s/{sid}/image", files={"file": ("p.png", photo, "application/octet-stream")})
        assert r.status_code == 200
        arrows = [{"points": [[10, 10], [30, 12]]}]
        body = {"kind": "full", "engine": "diffusion", "frames": 2, "fps": 8, "steps": 1, "seed": 3,
                "size": 64, "prompt": "clouds drift", "arrows": arrows}  # fmt: skip
        r = client.post(f"/api/s/{sid}/jobs", json=body)
        assert r.status_code == 200, r.text
        jid, command = r.json()["id"], r.json()["command"]
        end = time.monotonic() + 600
        while (status := client.get(f"/api/s/{sid}/jobs/{jid}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < end, "job did not finish"
            time.sleep(0.1)
        assert status["state"] == "done", status
        assert status["report"]["backbone"] == "wan2.1-i2v"
        assert "--prompt 'clouds drift'" in command
        mp4 = client.get(status["files"]["mp4"]).content
        drawing = client.post(f"/api/s/{sid}/arrows/export", json=body).content
    with av.open(io.BytesIO(mp4)) as container:
        page = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.png").write_bytes(photo)
    (tmp_path / "drawing.json").write_bytes(drawing)
    with pytest.raises(SystemExit) as done:
        main(shlex.split(command)[1:])
    assert done.value.code == 0
    with av.open(str(tmp_path / "animation.mp4")) as container:
        cli = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert page.shape[0] == 2 and np.array_equal(page, cli)


def test_arrows_steer_wan_through_warp_guided_control(wan_folder):
    from stillmotion.engines.wan import animate_wan

    field = np.zeros((16, 32, 2), np.float32)
    field[4:12, 8:24, 0] = 1.0
    it, stats = animate_wan(_scene(32, 16), field, model=wan_folder, frames=9, steps=4, size=(32, 16),
                            follow=0.5, freedom=0.5)  # fmt: skip
    assert len(list(it)) == 9
    assert stats["control"] == "warp-guided" and stats["steps_run"] == 2 and stats["unet_calls"] == 2
    it, stats = animate_wan(_scene(32, 16), field, model=wan_folder, frames=9, steps=2, size=(32, 16),
                            control="none")  # fmt: skip
    assert len(list(it)) == 9 and stats["control"] == "none"
    with pytest.raises(UserInputError, match="SVD-only"):
        animate_wan(_scene(32, 16), field, model=wan_folder, frames=9, control="trained")
