"""Optical flow: accuracy on real ground truth, shapes, sequences, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stillmotion.errors import UserInputError
from stillmotion.io.flo import read_flo, valid_flow_mask
from stillmotion.motion.flow import (
    DEFAULT_METHOD,
    FlowEstimator,
    dis_preset_flow,
    estimate_flow,
    flow_sequence,
    iter_flows,
)

# The targets for the default method (EPE in pixels).
RUBBERWHALE_TARGET = 0.15
SINTEL_TARGET = 0.28


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def epe(flow: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    """Mean end-point error over ``valid`` pixels."""
    return float(np.linalg.norm(flow - gt, axis=-1)[valid].mean())


def rubberwhale(root):
    d = root / "flow_gt" / "middlebury_rubberwhale"
    gt = read_flo(d / "flow10.flo")
    return _rgb(d / "frame10.png"), _rgb(d / "frame11.png"), gt, valid_flow_mask(gt)


def sintel_alley(root):
    d = root / "flow_gt" / "sintel" / "alley_1"
    gt = read_flo(d / "gt" / "frame_0002.flo")
    invalid = np.asarray(Image.open(d / "gt" / "invalid_frame_0002.png")) > 0
    # "EPE all": every pixel with a valid ground truth, occluded ones included.
    frames = _rgb(d / "clean" / "frame_0002.png"), _rgb(d / "clean" / "frame_0003.png")
    return *frames, gt, valid_flow_mask(gt) & ~invalid


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    big = np.asarray(Image.fromarray(small.astype(np.uint8)).resize((w + 16, h + 16), Image.BICUBIC))
    return big


@pytest.mark.parametrize(
    "name, loader, target",
    [("RubberWhale", rubberwhale, RUBBERWHALE_TARGET), ("Sintel alley_1 clean", sintel_alley, SINTEL_TARGET)],
)
def test_default_method_meets_epe_targets(shared_data, name, loader, target):
    a, b, gt, valid = loader(shared_data)
    flow = estimate_flow(a, b)
    assert flow.shape == gt.shape and flow.dtype == np.float32
    error = epe(flow, gt, valid)
    assert error <= target, f"{name}: EPE {error:.3f} px > {target}"
    # And it beats the stock preset it is tuned from.
    assert error < epe(dis_preset_flow(a, b, "medium"), gt, valid)


def test_default_is_dis_and_needs_no_weights():
    assert DEFAULT_METHOD == "dis"
    FlowEstimator()  # builds without any file


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_known_translation(method):
    big = _textured(96, 128)
    a = big[8:104, 8:136]
    b = big[8 + 2 : 104 + 2, 8 - 3 : 136 - 3]  # content moves by (+3, -2)
    flow = estimate_flow(a, b, method)
    assert flow.shape == (96, 128, 2)
    inner = flow[16:-16, 16:-16]
    assert np.abs(np.median(inner.reshape(-1, 2), axis=0) - [3, -2]).max() < 0.25


def test_accepts_gray_and_float_frames():
    big = _textured(64, 64)
    a, b = big[8:72, 8:72], big[8:72, 7:71]
    f_u8 = estimate_flow(a, b)
    f_float = estimate_flow(a.astype(np.float32) / 255, b.astype(np.float32) / 255)
    gray = np.asarray(Image.fromarray(a).convert("L")), np.asarray(Image.fromarray(b).convert("L"))
    f_gray = estimate_flow(*gray)
    np.testing.assert_allclose(f_u8, f_float, atol=1e-3)
    np.testing.assert_allclose(f_u8, f_gray, atol=1e-3)


def test_odd_and_small_sizes():
    big = _textured(40, 40)
    a, b = big[8:35, 8:47], big[8:35, 9:48]
    assert estimate_flow(a, b).shape == (27, 39, 2)


def test_sequence_streams_pairs():
    big = _textured(64, 80)
    frames = [big[8:72, 8 - k : 88 - k] for k in range(5)]  # moves right by 1 px a frame
    seq = flow_sequence(frames, dtype=np.float16)
    assert seq.shape == (4, 64, 80, 2) and seq.dtype == np.float16
    est = FlowEstimator("dis")
    streamed = list(iter_flows(iter(frames), est))
    assert len(streamed) == 4
    np.testing.assert_allclose(seq.astype(np.float32), np.stack(streamed), atol=1e-2)
    assert abs(float(np.median(seq[..., 0])) - 1.0) < 0.2


def test_flow_of_real_video(shared_data):
    from stillmotion.io.video_reader import open_frames

    src = open_frames(shared_data / "videos" / "dynca" / "water_3.gif", max_frames=4)
    seq = flow_sequence(src, total=src.frame_count)
    assert seq.shape == (3, src.height, src.width, 2)
    assert np.isfinite(seq).all() and np.abs(seq).max() > 0.1  # real water moves


def test_errors():
    a = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(UserInputError, match="unknown flow method 'pwc'"):
        estimate_flow(a, a, "pwc")
    with pytest.raises(UserInputError, match="differ in size"):
        estimate_flow(a, np.zeros((21, 30, 3), np.uint8))
    with pytest.raises(UserInputError, match="needs a weights file"):
        estimate_flow(a, a, "raft")
    with pytest.raises(UserInputError, match="only used by --method raft"):
        FlowEstimator("dis", weights="x.pth")
    with pytest.raises(UserInputError, match="at least two frames"):
        flow_sequence([a])
    with pytest.raises(UserInputError, match="image array"):
        estimate_flow(np.zeros((4,)), np.zeros((4,)))


# --- visualisation (motion/viz.py) ---------------------------------------------------------------


def test_colour_wheel():
    from stillmotion.motion.viz import make_colorwheel

    wheel = make_colorwheel()
    assert wheel.shape == (55, 3)
    np.testing.assert_array_equal(wheel[0], [1, 0, 0])  # starts at red
    assert wheel.min() >= 0 and wheel.max() <= 1
    # Neighbouring colours change gradually all around the wheel (no jumps between ramps).
    assert np.abs(np.diff(np.vstack([wheel, wheel[:1]]), axis=0)).max() <= 1 / 4 + 1e-9


def test_flow_to_color_directions_and_magnitudes():
    from stillmotion.motion.viz import flow_to_color

    vectors = [[1, 0], [0, 1], [-1, 0], [0, -1], [0, 0], [0.5, 0], [2, 0], [np.nan, 0], [2e9, 0]]
    f = np.array([vectors], np.float32)
    c = flow_to_color(f, max_magnitude=1.0)[0].astype(int)
    right, down, left, up, still, half, over, nan, unknown = c
    assert right[0] == 255 and right[1] < 40 and right[2] < 40  # red
    assert down[0] == 255 and down[1] > 200 and down[2] < 40  # yellow
    assert left[2] == 255 and left[1] > 150 and left[0] < 40  # cyan-blue
    assert up[2] == 255 and 40 < up[0] < 150 and up[1] < 40  # violet
    assert (still == 255).all()  # white = still
    assert half[0] == 255 and 100 < half[1] < 160  # half speed: paler red
    assert over[0] < 200 and over[1] == 0  # beyond the scale: darker
    assert (nan == 0).all() and (unknown == 0).all()
    auto = flow_to_color(f[:, :4])  # default scale: the largest magnitude
    assert auto.dtype == np.uint8 and auto.shape == (1, 4, 3)


def test_field_picture_and_outlines():
    from stillmotion.inputs.arrows import Arrow
    from stillmotion.motion.viz import draw_mask_outline, field_picture

    image = np.full((40, 60, 3), 90, np.uint8)
    flow = np.zeros((40, 60, 2), np.float32)
    flow[10:30, 10:50, 0] = 1.0
    mask = np.zeros((40, 60), bool)
    mask[10:30, 10:50] = True
    arrows = [Arrow(((15.0, 20.0), (40.0, 20.0)))]
    side = field_picture(image, flow, arrows, mask)
    assert side.shape == (40, 120, 3)
    assert (side[20, 60 + 5] == 255).all()  # still pixel on the field panel is white
    assert not (side[:, :60] == 90).all()  # arrow and outline drawn on the image panel
    overlay = field_picture(image, flow, arrows, mask, layout="overlay")
    assert overlay.shape == (40, 60, 3)
    outlined = draw_mask_outline(image, mask)
    changed = (outlined != image).any(-1)
    assert changed[10, 30] and not changed[20, 30] and not changed[2, 2]  # only the border


def test_render_flow_video(tmp_path):
    from stillmotion.io.video_reader import open_frames
    from stillmotion.motion.viz import render_flow_video

    frames = [np.full((32, 48, 3), 40 * k, np.uint8) for k in range(3)]
    flows = [np.full((32, 48, 2), k, np.float32) for k in range(3)]
    path = render_flow_video(tmp_path / "v.mp4", frames, flows, fps=8)
    src = open_frames(path)
    assert src.size == (96, 32) and len(list(src)) == 3 and src.fps == pytest.approx(8)
    with pytest.raises(UserInputError):
        render_flow_video(tmp_path / "empty.mp4", [], [], fps=8)
    assert not (tmp_path / "empty.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
