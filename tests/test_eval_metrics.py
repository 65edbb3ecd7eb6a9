"""Weightless metrics: PSNR/SSIM against scikit-image on real frames, motion metrics on known motion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stillmotion.evaluation import frame_metrics as fm
from stillmotion.evaluation import motion_metrics as mm
from stillmotion.evaluation.frechet import (
    SmallSampleWarning,
    frechet_distance,
    frechet_distance_features,
    gaussian_stats,
)


def _frames(shared_data, names):
    return [np.asarray(Image.open(shared_data / n).convert("RGB")) for n in names]


def test_psnr_ssim_agree_with_scikit_image_on_real_frames(shared_data):
    rw = "flow_gt/middlebury_rubberwhale"
    fl = "videos/two_stream_flames"
    pairs = [
        _frames(shared_data, [f"{rw}/frame10.png", f"{rw}/frame11.png"]),
        _frames(shared_data, [f"{rw}/frame07.png", f"{rw}/frame14.png"]),
        _frames(shared_data, [f"{fl}/frame_00000000.png", f"{fl}/frame_00000005.png"]),
    ]
    for a, b in pairs:
        ref_psnr = peak_signal_noise_ratio(a, b, data_range=255)
        ref_ssim = structural_similarity(
            a,
            b,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
        assert fm.psnr(a, b) == pytest.approx(ref_psnr, abs=1e-4)
        assert fm.ssim(a, b) == pytest.approx(ref_ssim, abs=1e-4)
        # grey frames too (no channel axis)
        ga, gb = a.mean(-1).astype(np.uint8), b.mean(-1).astype(np.uint8)
        ref_g = structural_similarity(
            ga, gb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        assert fm.ssim(ga, gb) == pytest.approx(ref_g, abs=1e-4)
    # batched per-frame versions equal the single-image ones
    a = np.stack([p[0] for p in pairs[2:]] * 3)
    b = np.stack([p[1] for p in pairs[2:]] * 3)
    assert np.allclose(fm.ssim_per_frame(a, b), fm.ssim(a[0], b[0]), atol=1e-12)
    assert np.allclose(fm.psnr_per_frame(a, b), fm.psnr(a[0], b[0]))
    assert fm.psnr(a, a) == math.inf
    assert fm.ssim(a[0], a[0]) == pytest.approx(1.0)


def test_adjacent_consistency_of_still_and_changing_videos():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    still = np.stack([img] * 4)
    assert np.all(fm.adjacent_mean_abs_diff(still) == 0)
    assert np.allclose(fm.adjacent_ssim(still), 1.0)
    noisy = np.stack([img, rng.integers(0, 256, img.shape, dtype=np.uint8)])
    assert fm.adjacent_mean_abs_diff(noisy)[0] > 50
    assert fm.adjacent_ssim(noisy)[0] < 0.2


def _textured(h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _translate(img, dx, dy):
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)


def test_motion_fidelity_of_a_known_translation():
    img = _textured()
    frames = np.stack([_translate(img, 2 * t, 0) for t in range(5)])
    flows = mm.video_flows(frames)
    requested = np.zeros(img.shape[:2] + (2,), np.float32)
    requested[..., 0] = 2.0
    region = np.zeros(img.shape[:2], bool)
    region[16:-16, 16:-16] = True
    good = mm.motion_fidelity(requested, flows, region=region)
    assert good.epe < 0.3 and good.cosine > 0.98
    wrong = requested[..., ::-1].copy()  # ask for vertical motion
    bad = mm.motion_fidelity(wrong, flows, region=region)
    assert bad.epe > 2.0 and abs(bad.cosine) < 0.2
    # a still video where motion was requested: cosine counts 0, EPE is the requested speed
    still = mm.motion_fidelity(requested, np.zeros_like(flows), region=region)
    assert still.cosine == 0 and still.epe == pytest.approx(2.0)
    # the default region is where the request moves
    assert mm.motion_region(requested).all()


def test_warp_error_low_for_translation_high_for_flicker():
    img = _textured(seed=1)
    frames = np.stack([_translate(img, t, t) for t in range(4)])
    smooth = mm.warp_error_per_frame(frames)
    rng = np.random.default_rng(1)
    flicker = np.stack(
        [np.clip(f.astype(int) + rng.integers(-60, 60, f.shape), 0, 255).astype(np.uint8) for f in frames]
    )
    rough = mm.warp_error_per_frame(flicker)
    assert smooth.shape == (3,)
    assert smooth.max() < 0.01
    assert rough.min() > 5 * smooth.max()


def test_consistency_mask_flags_disagreement():
    fw = np.zeros((20, 20, 2), np.float32)
    fw[..., 0] = 1.0
    bw = -fw
    assert mm.consistency_mask(fw, bw)[:, :-1].all()
    assert not mm.consistency_mask(fw, bw)[:, -1].any()  # lands outside the frame
    assert not mm.consistency_mask(fw, fw).any()


def test_still_region_drift_and_join_smoothness():
    img = _textured(seed=2)
    frames = np.stack([img] * 6).astype(np.int16)
    frames[:, :, :64] += np.arange(6)[:, None, None, None] * 3  # left half changes
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    still = np.zeros(img.shape[:2], bool)
    still[:, 64:] = True
    assert np.all(mm.still_region_drift(frames, img, still) == 0)
    assert mm.still_region_drift(frames, img, ~still)[-1] > 10
    # a video with a small step everywhere and a big jump at frame 4
    base = np.stack([_translate(img, t, 0) for t in range(8)])
    seam = base.copy()
    seam[4:] = np.stack([_translate(img, t + 10, 0) for t in range(4, 8)])
    assert mm.join_smoothness(seam, [4]) > 2.0
    assert mm.join_smoothness(base, [4]) == pytest.approx(1.0, rel=0.3)
    assert math.isnan(mm.join_smoothness(base, []))


def test_frechet_matches_closed_form_and_is_zero_for_identical_sets():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    # diagonal Gaussians: d = |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(closed, rel=1e-10)
    # general SPD covariances against scipy's sqrtm formula
    m1, m2 = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(8), m2 @ m2.T + 0.1 * np.eye(8)
    ref = np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert frechet_distance(np.zeros(8), s1, np.zeros(8), s2) == pytest.approx(ref, rel=1e-8)
    # 1-D: (m1-m2)^2 + (s1-s2)^2 with standard deviations s
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # identical sets -> 0, also when rank-deficient (n <= D) with a warning
    feats = rng.normal(size=(50, 10))
    assert frechet_distance_features(feats, feats) == pytest.approx(0.0, abs=1e-8)
    with pytest.warns(SmallSampleWarning, match="rank-deficient"):
        small = rng.normal(size=(5, 10))
        assert frechet_distance_features(small, small) == pytest.approx(0.0, abs=1e-8)
    # samples from known Gaussians approach the closed form
    x = rng.normal(0.0, 1.0, size=(20000, 2))
    y = rng.normal(1.0, 2.0, size=(20000, 2))
    assert frechet_distance(*gaussian_stats(x), *gaussian_stats(y)) == pytest.approx(
        2 * 1.0 + 2 * 1.0, rel=0.05
    )


def _band_clip(
    d: tuple[float, float], through_autoencoder: bool, frames: int = 8, flicker: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` frames of a smooth random texture moving exactly ``d`` px/frame inside a thin band
    (16 px tall, on the 8-px block grid), the rest a still texture; optionally through the bundled
    models' kind of autoencoder (8-px DCT blocks, 48 of 192 coefficients kept), with ``flicker`` x each
    latent channel's std of fresh noise added per frame (a small model's frames changing in place),
    still pixels pasted back."""
    import cv2
    import torch

    from stillmotion.diffusion.autoencoder import SpaceToDepthAutoencoder

    rng = np.random.default_rng(3)
    big = rng.uniform(0, 255, (200, 260, 3)).astype(np.float32)
    big = np.stack([cv2.GaussianBlur(big[..., c], (0, 0), 2.5) for c in range(3)], -1)
    big = ((big - big.min()) / (big.max() - big.min()) * 255).astype(np.uint8)
    h, w = 96, 128
    band = np.zeros((h, w), bool)
    band[40:56, 16:112] = True
    still = big[100 : 100 + h, 100 : 100 + w]
    clip = []
    for t in range(frames):
        shift = np.float32([[1, 0, -40 + d[0] * t], [0, 1, -40 + d[1] * t]])  # content moves +d per frame
        f = cv2.warpAffine(big, shift, (w, h), flags=cv2.INTER_LINEAR)
        f[~band] = still[~band]
        clip.append(f)
    video = np.stack(clip)
    if through_autoencoder:
        ae = SpaceToDepthAutoencoder(downscale_factor=8, latent_channels=48, scaling_factor=1.5)
        with torch.no_grad():
            x = torch.from_numpy(video.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
            z = ae.encode(x).latent_dist.mode()
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(5))
            y = ae.decode(z + flicker * noise * z.std((0, 2, 3), keepdim=True)).sample
        video = ((y / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        video[:, ~band] = still[~band]
    inner = np.zeros_like(band)
    inner[44:52, 20:108] = True  # >= 4 px inside the band, as bench_embedded meters
    return video, inner


@pytest.mark.parametrize("through_autoencoder", [False, True])
@pytest.mark.parametrize("d", [(1.0, 0.0), (0.6, 0.8), (0.5, 0.0), (0.0, 2.0)])
def test_fine_flow_reads_a_known_shift_in_a_thin_region(d, through_autoencoder):
    """The fine-flow meter reads a known translation within 5% in speed, in direction, raw and through
    the autoencoder; the project's DIS reads these frames lower (its smoothness pass and patches take in
    the still pixels around the thin band)."""
    from stillmotion.motion.flow import compute_flow

    video, inner = _band_clip(d, through_autoencoder)
    fine = np.mean([mm.fine_flow(video[i], video[i + 1]) for i in range(len(video) - 1)], 0)[inner]
    dis = np.mean([compute_flow(video[i], video[i + 1]) for i in range(len(video) - 1)], 0)[inner]
    true = np.hypot(*d)
    speed = float(np.linalg.norm(fine, axis=-1).mean())
    assert speed == pytest.approx(true, rel=0.05)
    cos = (fine @ np.asarray(d, np.float32)) / (np.linalg.norm(fine, axis=-1) * true + 1e-9)
    assert float(cos.mean()) > 0.99
    assert abs(speed - true) < abs(float(np.linalg.norm(dis, axis=-1).mean()) - true)


def test_fine_flow_reads_still_frames_as_still():
    video, inner = _band_clip((0.0, 0.0), True)
    assert np.abs(mm.fine_flow(video[0], video[1])).max() < 1e-3


@pytest.mark.parametrize("d", [(1.0, 0.0), (0.6, 0.8)])
def test_clip_flow_reads_a_known_shift_through_flicker(d):
    """16 frames through the autoencoder with flicker (warp error ~0.45 x 1000, as the bundled model's
    warp-guided clips): the clip's mean motion reads within 8% in speed, in direction."""
    video, inner = _band_clip(d, True, frames=16, flicker=0.2)
    flow = mm.clip_flow(video)[inner]
    true = np.hypot(*d)
    assert float(np.linalg.norm(flow, axis=-1).mean()) == pytest.approx(true, rel=0.08)
    cos = (flow @ np.asarray(d, np.float32)) / (np.linalg.norm(flow, axis=-1) * true + 1e-9)
    assert float(cos.mean()) > 0.99


def test_clip_flow_reads_flicker_on_still_frames_as_almost_still():
    """Still frames that flicker (warp error ~0.9 x 1000): frames 4 apart read under 0.06 px/frame, less
    than half of what consecutive pairs read."""
    video, inner = _band_clip((0.0, 0.0), True, frames=16, flicker=0.3)
    clip = float(np.linalg.norm(mm.clip_flow(video)[inner], axis=-1).mean())
    pairs = np.mean([mm.fine_flow(video[i], video[i + 1]) for i in range(len(video) - 1)], 0)[inner]
    assert clip < 0.06
    assert clip < 0.5 * float(np.linalg.norm(pairs, axis=-1).mean())
    with pytest.raises(ValueError):
        mm.clip_flow(video[:1])


def test_seam_ratio_by_stretch_judges_a_wide_seam_against_stretches_as_wide():
    # steps that vary (0.2 .. 0.4) and a 3-step seam that is like any other 3 steps: the slowest of three
    # steps is below the median single step, so seam_ratio reads a slowdown that is not there
    rng = np.random.default_rng(0)
    speeds = list(rng.uniform(0.2, 0.4, 200))
    seams = [range(j, j + 3) for j in range(20, 200, 25)]
    assert mm.seam_ratio(speeds, seams, pick=min) < 0.85
    assert mm.seam_ratio_by_stretch(speeds, seams, pick=min) == pytest.approx(1.0, abs=0.12)
    # a real stall at every seam still reads as one
    stalled = list(speeds)
    for seam in seams:
        stalled[seam[1] - 1] = 0.05
    assert mm.seam_ratio_by_stretch(stalled, seams, pick=min) < 0.3
    # one-step seams: the same figure as seam_ratio
    single = [range(j, j + 1) for j in range(20, 200, 25)]
    assert mm.seam_ratio_by_stretch(speeds, single) == pytest.approx(mm.seam_ratio(speeds, single))
    assert math.isnan(mm.seam_ratio_by_stretch(speeds, []))
