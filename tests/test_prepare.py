"""`stillmotion prepare`: real videos -> clip cache (flows, strength, static-camera flag, shards, index),
skipping finished videos, listing unreadable ones; synthetic clips; latents; the cache dataset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from stillmotion.training.cache import ClipCache, read_index, write_index
from stillmotion.training.prepare import PrepareSettings, prepare_synthetic, prepare_videos

SMALL = PrepareSettings(frames=6, size=(32, 32), max_clips_per_video=2)


@pytest.fixture(scope="module")
def videos_cache(shared_data, tmp_path_factory):
    cache = tmp_path_factory.mktemp("videos_cache")
    report = prepare_videos(shared_data / "videos", cache, SMALL)
    return cache, report


def test_prepare_real_videos_writes_expected_shards(videos_cache, shared_data):
    cache, report = videos_cache
    assert not report.failed and not report.skipped
    expected = {"dynca/water_3.gif", "dyntex/campfire_pot_fire.avi", "dyntex/dyntex_flag_571c110.avi",
                "dyntex/dyntex_fountain_6486110.avi", "two_stream_flames"}
    assert set(report.done) == expected
    index = read_index(cache)
    assert set(index["videos"]) == expected
    by_video = {v: [c for c in index["clips"] if c["video"] == v] for v in expected}
    assert all(len(clips) == 2 for clips in by_video.values())  # each has >= 12 frames: 2 clips of 6
    clip = by_video["dyntex/dyntex_fountain_6486110.avi"][1]
    assert clip["start"] == 6 and clip["frames"] == 6 and (clip["height"], clip["width"]) == (32, 32)
    with safe_open(str(cache / clip["shard"]), "np") as f:
        frames, flows = f.get_tensor(f"{clip['key']}.frames"), f.get_tensor(f"{clip['key']}.flows")
    assert frames.dtype == np.uint8 and frames.shape == (6, 32, 32, 3)
    assert flows.dtype == np.float16 and flows.shape == (5, 32, 32, 2)
    # Strength is eq. 8 of the stored flows (px/frame at 512 px); the tripod videos are static-camera,
    # the two whose whole frame moves (water texture, flames) are not.
    from stillmotion.motion.strength import motion_strength

    assert clip["strength"] == pytest.approx(motion_strength(flows.astype(np.float32)), rel=1e-3)
    assert all(c["strength"] > 0.5 for c in index["clips"])
    tripod = ("dyntex/campfire_pot_fire.avi", "dyntex/dyntex_flag_571c110.avi",
              "dyntex/dyntex_fountain_6486110.avi")
    for v in tripod:
        assert all(c["static_camera"] for c in by_video[v]), by_video[v]
    assert not any(c["static_camera"] for c in by_video["dynca/water_3.gif"] + by_video["two_stream_flames"])


def test_rerun_skips_finished_videos_and_redoes_unfinished_ones(videos_cache, shared_data, tmp_path):
    cache, _ = videos_cache
    work = tmp_path / "cache"
    shutil.copytree(cache, work)
    stamps = {p.name: p.stat().st_mtime_ns for p in (work / "shards").iterdir()}
    again = prepare_videos(shared_data / "videos", work, SMALL)
    assert not again.done and len(again.skipped) == 5 and again.new_clips == 0
    assert {p.name: p.stat().st_mtime_ns for p in (work / "shards").iterdir()} == stamps

    # A video that a killed run left unfinished (not recorded in the index) is redone; its stray
    # shard is replaced.
    index = read_index(work)
    index["videos"].pop("dynca/water_3.gif")
    index["clips"] = [c for c in index["clips"] if c["video"] != "dynca/water_3.gif"]
    write_index(work, index)
    third = prepare_videos(shared_data / "videos", work, SMALL)
    assert third.done == ["dynca/water_3.gif"] and third.new_clips == 2 and len(third.skipped) == 4
    assert len(read_index(work)["clips"]) == 10


def test_unreadable_videos_are_listed_and_skipped(shared_data, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(shared_data / "videos" / "dynca" / "water_3.gif", videos / "water.gif")
    (videos / "broken.mp4").write_bytes(b"this is not a video")
    frames = videos / "bad_frames"
    frames.mkdir()
    for i in range(3):
        (frames / f"{i:03d}.png").write_bytes(b"not a png either")
    report = prepare_videos(videos, tmp_path / "cache", PrepareSettings(frames=6, size=(32, 32)))
    assert report.done == ["water.gif"] and report.clips == 2
    assert set(report.failed) == {"broken.mp4", "bad_frames"}
    assert "broken.mp4" in report.failed["broken.mp4"]
    assert set(read_index(tmp_path / "cache")["failed"]) == {"broken.mp4", "bad_frames"}
    assert "unreadable: broken.mp4" in report.summary()


def test_cache_settings_must_match(shared_data, tmp_path):
    from stillmotion.errors import UserInputError

    videos = tmp_path / "v"
    videos.mkdir()
    shutil.copy(shared_data / "videos" / "dynca" / "water_3.gif", videos / "water.gif")
    prepare_videos(videos, tmp_path / "cache", PrepareSettings(frames=6, size=(32, 32)))
    with pytest.raises(UserInputError, match="was prepared with"):
        prepare_videos(videos, tmp_path / "cache", PrepareSettings(frames=8, size=(32, 32)))


def test_camera_pan_is_not_static(shared_data):
    """A real tripod clip is static; the same clip seen through a panning window (1 px/frame) is not."""
    import cv2

    from stillmotion.io.video_reader import open_frames
    from stillmotion.motion.flow import FlowEstimator
    from stillmotion.training.camera import STATIC_THRESHOLD, is_static_camera

    frames = []
    for i, f in enumerate(open_frames(shared_data / "videos" / "dyntex" / "campfire_pot_fire.avi")):
        if i >= 13:
            break
        frames.append(f)
    flow = FlowEstimator("dis")

    def clip_flows(dx_per_frame: float) -> np.ndarray:
        crop = []
        for i, f in enumerate(frames):
            x0 = int(100 + i * dx_per_frame)
            crop.append(cv2.resize(f[60:660, x0 : x0 + 600], (256, 256), interpolation=cv2.INTER_AREA))
        return np.stack([flow(a, b) for a, b in zip(crop[:-1], crop[1:], strict=True)])

    still, still_motion = is_static_camera(clip_flows(0.0))
    panned, pan_motion = is_static_camera(clip_flows(0.5 * 600 / 512 * 2))  # 1 px/frame at 512
    assert still and still_motion < STATIC_THRESHOLD
    assert not panned and pan_motion == pytest.approx(1.0, rel=0.25)


def test_synthetic_clips_carry_their_known_flow(tmp_path):
    import skimage.data

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage.data.coffee()).save(photos / "coffee.png")
    settings = PrepareSettings(frames=8, size=(48, 32))
    report = prepare_synthetic(photos, tmp_path / "cache", settings, clips_per_photo=3)
    assert report.clips == 3 and report.done == ["synthetic:coffee.png"]
    cache = ClipCache(tmp_path / "cache")
    for i, c in enumerate(cache.clips):
        frames, flows = cache.read(i, "frames"), cache.read(i, "flows").astype(np.float32)
        assert frames.shape == (8, 32, 48, 3) and flows.shape == (7, 32, 48, 2)
        assert np.array_equal(flows[0], flows[-1])  # one static Eulerian field for every pair
        speed = np.hypot(flows[0, ..., 0], flows[0, ..., 1])
        moving = speed > 0.5 * speed.max()
        assert speed.max() > 0 and c["strength"] > 0 and c["arrows"]
        # the content moves where the field moves; pixels farther from any motion than it can carry
        # content over the clip stay exactly as they were
        import cv2

        reach = int(np.ceil(speed.max() * 7)) + 2
        near = cv2.dilate((speed > 0).astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)) > 0
        change = np.abs(frames[-1].astype(int) - frames[0].astype(int)).max(-1)
        assert change[~near].max(initial=0) == 0
        assert change[moving].mean() > 0.5
    again = prepare_synthetic(photos, tmp_path / "cache", settings, clips_per_photo=3)
    assert again.skipped == ["synthetic:coffee.png"] and again.new_clips == 0


def test_synthetic_speed_range_sets_the_arrow_speeds(tmp_path):
    import skimage.data

    from stillmotion.errors import UserInputError

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage.data.coffee()).save(photos / "coffee.png")
    settings = PrepareSettings(frames=6, size=(64, 64))
    peaks = {}
    for name, speed in (("slow", (1.0, 1.0)), ("fast", (8.0, 8.0))):
        prepare_synthetic(photos, tmp_path / name, settings, clips_per_photo=2, speed=speed)
        cache = ClipCache(tmp_path / name)
        peaks[name] = [float(np.hypot(*cache.read(i, "flows")[0].astype(np.float32).transpose(2, 0, 1)).max())
                       for i in range(len(cache.clips))]
    # same seed, same arrows: only the speed differs; the field peaks at its fastest arrow (1/8 px at 64 px)
    assert peaks["slow"] == pytest.approx([64 / 512] * 2, rel=0.05)
    assert peaks["fast"] == pytest.approx([8 * 64 / 512] * 2, rel=0.05)
    with pytest.raises(UserInputError, match="--speed"):
        prepare_synthetic(photos, tmp_path / "bad", settings, speed=(3.0, 1.0))


def test_latents_are_cached_with_a_vae_and_the_dataset_reads_them(shared_data, tmp_path):
    from stillmotion.diffusion.autoencoder import SpaceToDepthAutoencoder
    from stillmotion.training.dataset import ClipDataset

    vae_dir = tmp_path / "vae"
    SpaceToDepthAutoencoder(downscale_factor=2).save_pretrained(vae_dir)
    videos = tmp_path / "v"
    videos.mkdir()
    shutil.copy(shared_data / "videos" / "dynca" / "water_3.gif", videos / "water.gif")
    prepare_videos(videos, tmp_path / "cache", PrepareSettings(frames=6, size=(32, 32), vae=str(vae_dir)))
    cache = ClipCache(tmp_path / "cache")
    latents = cache.read(0, "latents")
    assert latents.dtype == np.float16 and latents.shape == (6, 12, 16, 16)
    pixels = torch.from_numpy(cache.read(0, "frames")).permute(0, 3, 1, 2).float() / 127.5 - 1
    expect = SpaceToDepthAutoencoder(downscale_factor=2).encode(pixels).latent_dist.mode()
    assert np.allclose(latents.astype(np.float32), expect.numpy(), atol=2e-3)
    ds = ClipDataset(tmp_path / "cache", num_frames=4, flip=False, use_latents=True)
    sample = ds[(0, 3)]
    assert sample["latents"].shape == (4, 12, 16, 16) and sample["image"].shape == (3, 32, 32)
    assert "frames" not in sample


def test_dataset_windows_flips_and_sharding(videos_cache):
    from stillmotion.training.dataset import ClipDataset, ClipSampler

    cache, _ = videos_cache
    plain = ClipDataset(cache, num_frames=4, flip=False)
    flipping = ClipDataset(cache, num_frames=4, flip=True)
    flipped = 0
    for seed in range(12):
        a, b = plain[(3, seed)], flipping[(3, seed)]
        assert np.array_equal(b["frames"], flipping[(3, seed)]["frames"])  # deterministic by seed
        if np.array_equal(a["frames"], b["frames"]):
            assert np.array_equal(a["flows"], b["flows"])
            continue
        flipped += 1
        assert np.array_equal(a["frames"][..., ::-1], b["frames"])
        assert np.array_equal(a["flows"][:, 0, :, ::-1], -b["flows"][:, 0])  # x mirrored and negated
        assert np.array_equal(a["flows"][:, 1, :, ::-1], b["flows"][:, 1])
        assert a["strength"] == pytest.approx(b["strength"])
    assert 0 < flipped < 12
    # Two ranks with batch 1 see exactly what one process with batch 2 sees, step by step.
    one = iter(ClipSampler(len(plain), 2, seed=5))
    r0, r1 = iter(ClipSampler(len(plain), 1, seed=5, rank=0, world_size=2)), iter(
        ClipSampler(len(plain), 1, seed=5, rank=1, world_size=2))
    for _ in range(20):
        assert [next(one), next(one)] == [next(r0), next(r1)]
    # ... and a sampler started at step k continues the stream exactly.
    full = iter(ClipSampler(len(plain), 3, seed=5))
    stream = [next(full) for _ in range(30)]
    later = iter(ClipSampler(len(plain), 3, seed=5, start_step=4))
    assert [next(later) for _ in range(18)] == stream[12:30]
    # every clip appears once per epoch
    assert sorted(c for c, _ in stream[: len(plain)]) == list(range(len(plain)))


def test_prepare_command_line(shared_data, tmp_path):
    from stillmotion.cli import main

    videos = tmp_path / "v"
    videos.mkdir()
    shutil.copy(shared_data / "videos" / "dynca" / "water_3.gif", videos / "water.gif")
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", str(videos), "-o", str(tmp_path / "cache"), "--frames", "6", "--size", "32x24"])
    assert exit_info.value.code == 0
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["settings"]["size"] == [32, 24] and len(index["clips"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "-o", str(tmp_path / "c2")])
    assert exit_info.value.code == 2
