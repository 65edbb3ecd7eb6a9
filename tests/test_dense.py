"""Dense motion fields from arrows (paper eqs. 5-7) and the global motion strength (eq. 8)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import BASE_CLIP_FRAMES, Arrow
from stillmotion.inputs.scene import load_scene
from stillmotion.motion.dense import (
    DEFAULT_THRESHOLD,
    default_sigma,
    dense_flow_from_arrows,
    sparse_flow_from_arrows,
)
from stillmotion.motion.strength import motion_strength


def _cosine(v: np.ndarray, w: tuple[float, float]) -> float:
    return float(np.dot(v, w) / (np.linalg.norm(v) * math.hypot(*w) + 1e-12))


def _random_arrows(rng, n: int, w: int, h: int) -> list[Arrow]:
    arrows = []
    for i in range(n):
        x0, y0 = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
        ang, length = rng.uniform(0, 2 * np.pi), rng.uniform(10, 80)
        x1 = float(np.clip(x0 + length * np.cos(ang), 0, w - 1))
        y1 = float(np.clip(y0 + length * np.sin(ang), 0, h - 1))
        arrows.append(Arrow(((x0, y0), (x1, y1)), float(rng.uniform(0.5, 2)), f"a{i}"))
    return arrows


def test_sigma_proportional_to_frame_size():
    assert default_sigma(512, 512) == 170
    assert default_sigma(1024, 576) == 340
    assert DEFAULT_THRESHOLD == 0.05


def test_sparse_flow_eq5():
    a = Arrow(((10.0, 20.0), (10.0 + 48.0, 20.0)), strength=0.5)
    pos, vec = sparse_flow_from_arrows([a])
    assert pos.tolist() == [[10.0, 20.0]]
    # Speed: the whole length in one base clip (24 steps), times the strength M_o.
    assert vec[0] == pytest.approx([48.0 / (BASE_CLIP_FRAMES - 1) * 0.5, 0.0])


def test_single_arrow_value_at_tail():
    a = Arrow(((100.0, 50.0), (130.0, 90.0)))
    field = dense_flow_from_arrows([a], 200, 160)
    v = field[50, 100]
    assert v == pytest.approx([30 / 24, 40 / 24], rel=1e-5)


def test_field_points_along_each_arrow_at_its_tail():
    rng = np.random.default_rng(0)
    w, h = 400, 300
    for _ in range(5):
        arrows = _random_arrows(rng, 6, w, h)
        field = dense_flow_from_arrows(arrows, w, h)
        for a in arrows:
            x, y = (round(c) for c in a.start)
            assert _cosine(field[y, x], (a.end[0] - a.start[0], a.end[1] - a.start[1])) > 0.95, a


def test_field_points_along_real_user_arrows(shared_data):
    for i in (0, 1):
        path = shared_data / "images" / "cinemagraphy3d" / f"{i}_labelme.json"
        scene = load_scene(np.zeros((720, 1280, 3), np.uint8), arrows_file=path)
        field = dense_flow_from_arrows(scene.arrows, scene.width, scene.height, mask=scene.mask)
        for a in scene.arrows:
            x, y = (round(c) for c in a.start)
            assert _cosine(field[y, x], (a.end[0] - a.start[0], a.end[1] - a.start[1])) > 0.95, (path, a.name)


def test_far_from_every_arrow_is_zero():
    w = h = 1024
    sigma = default_sigma(w, h)
    a = Arrow(((100.0, 100.0), (150.0, 120.0)))
    b = Arrow(((120.0, 300.0), (160.0, 260.0)))
    field = dense_flow_from_arrows([a, b], w, h)
    ys, xs = np.mgrid[:h, :w]
    dist = np.minimum(np.hypot(xs - 100, ys - 100), np.hypot(xs - 120, ys - 300))
    # eq. 7 with R = 0.05 relative to the fastest arrow: |field| <= S * exp(-(D/sigma)^2) * v_max for
    # S arrows, below R * v_max beyond sigma * sqrt(ln(S / R)) (1.94 sigma for two arrows).
    far = dist > sigma * math.sqrt(math.log(2 / DEFAULT_THRESHOLD))
    assert far.any()
    assert not field[far].any()
    near = dist < 1.5 * sigma
    assert (np.hypot(field[near, 0], field[near, 1]) > 0).all()


def test_outside_mask_is_zero():
    w, h = 120, 90
    mask = np.zeros((h, w), bool)
    mask[20:70, 30:100] = True
    arrows = [Arrow(((40.0, 30.0), (60.0, 40.0))), Arrow(((90.0, 60.0), (80.0, 40.0)))]
    field = dense_flow_from_arrows(arrows, w, h, mask=mask)
    assert not field[~mask].any()
    assert np.hypot(field[mask, 0], field[mask, 1]).min() > 0


def test_overlapping_arrows_do_not_add_speed_unless_asked():
    a = Arrow(((50.0, 50.0), (74.0, 50.0)))
    normalized = dense_flow_from_arrows([a, a], 100, 100)
    verbatim = dense_flow_from_arrows([a, a], 100, 100, normalize=False)
    assert normalized[50, 50] == pytest.approx([1.0, 0.0], rel=1e-5)
    assert verbatim[50, 50] == pytest.approx([2.0, 0.0], rel=1e-5)  # eq. 6 sums the weights


def test_trajectory_follows_its_segments():
    t = Arrow(((20.0, 100.0), (100.0, 100.0), (100.0, 20.0)))
    field = dense_flow_from_arrows([t], 200, 200, sigma=15)
    assert _cosine(field[100, 20], (1, 0)) > 0.99
    assert _cosine(field[100, 100], (0, -1)) > 0.99
    speed = t.length / (BASE_CLIP_FRAMES - 1)
    assert np.hypot(*field[100, 20]) == pytest.approx(speed, rel=1e-3)


def test_field_1024_from_20_arrows():
    arrows = _random_arrows(np.random.default_rng(1), 20, 1024, 1024)
    field = dense_flow_from_arrows(arrows, 1024, 1024)
    assert field.shape == (1024, 1024, 2) and field.dtype == np.float32
    assert np.isfinite(field).all()


def test_no_arrows_gives_zero_field():
    field = dense_flow_from_arrows([], 30, 20)
    assert field.shape == (20, 30, 2) and not field.any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sigma": 0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"mask": np.ones((5, 5), bool)}, "mask shape"),
    ],
)
def test_dense_errors(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        dense_flow_from_arrows([Arrow(((1.0, 1.0), (5.0, 5.0)))], 30, 20, **kwargs)


def test_motion_strength_eq8():
    flows = np.zeros((4, 64, 128, 2), np.float32)
    flows[..., 0] = 3.0
    flows[..., 1] = 4.0
    assert motion_strength(flows, reference_size=None) == pytest.approx(5.0)
    assert motion_strength(flows) == pytest.approx(5.0 * 512 / 128)  # in px/frame at 512 px
    flows[2:] = 0
    assert motion_strength(flows, reference_size=None) == pytest.approx(2.5)
    assert motion_strength(flows[0], reference_size=None) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        motion_strength(np.zeros((3, 3)))
