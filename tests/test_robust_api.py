"""Issue 15 in the Python API: every public function checks its arguments and raises UserInputError
(a ValueError) naming the bad one, instead of AttributeError / TypeError / cv2.error deep inside."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image

import stillmotion
from stillmotion import api
from stillmotion.errors import UserInputError

IMAGE = np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8)
ARROW = "4,4,20,6"


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(IMAGE).save(path)
    return path


def test_arrows_as_number_tuples_are_accepted():
    frames = stillmotion.animate(IMAGE, [(4, 4, 20, 6)], frames=2)
    expected = stillmotion.animate(IMAGE, [ARROW], frames=2)
    assert frames.shape == (2, 24, 32, 3)
    np.testing.assert_array_equal(frames, expected)
    with_strength = stillmotion.animate(IMAGE, [(4, 4, 20, 6, 2.0)], frames=2)
    assert with_strength.shape == (2, 24, 32, 3)


@pytest.mark.parametrize(
    "arrows, needle",
    [
        ((4, 4, 20, 6), "arrows[0] = 4"),  # one arrow not wrapped in a list
        (ARROW, "wrap a single arrow in a list"),  # a bare string
        ([(4, 4, 20)], "arrows[0]"),
        ([None], "arrows[0] = None"),
        ([object()], "arrows[0]"),
        ([stillmotion.Arrow(points=None)], "points must be"),
        ([stillmotion.Arrow(((4, 4), (20, 6)), strength="1")], "strength must be a number"),
        ([stillmotion.Arrow(((4, 4), (20, 6)), strength=1e308)], "10000"),
        (5, "arrows must be a list"),
    ],
)
def test_bad_arrows_are_user_errors(arrows, needle):
    with pytest.raises(UserInputError) as info:
        stillmotion.animate(IMAGE, arrows, frames=2)
    assert needle in str(info.value)


def test_arrows_none_means_no_arrows():
    with pytest.raises(UserInputError, match="nothing to animate"):
        stillmotion.animate(IMAGE, None, frames=2)
    field = np.zeros((24, 32, 2), np.float32)
    field[..., 0] = 0.5
    assert stillmotion.animate(IMAGE, None, motion=field, frames=2).shape == (2, 24, 32, 3)


@pytest.mark.parametrize("strength", ["1", None, float("nan"), -1.0, 1e300, True, 3 + 0j])
def test_bad_strength_is_a_user_error(strength):
    with pytest.raises(UserInputError, match="strength"):
        stillmotion.animate(IMAGE, [ARROW], frames=2, strength=strength)


@pytest.mark.parametrize(
    "mask, needle",
    [
        (np.ones((1, 24, 32, 1), np.uint8), "shape"),  # 4-D
        (np.zeros((0, 0), np.uint8), "at least one pixel"),  # empty
        (np.zeros((24, 32), bool), "all black"),
        (np.ones((24, 32), complex), "dtype"),
        (np.full((24, 32), np.nan), "NaN"),
        (5, "mask must be a file path"),
    ],
)
def test_bad_mask_is_a_user_error(mask, needle):
    with pytest.raises(UserInputError) as info:
        stillmotion.animate(IMAGE, [ARROW], mask=mask, frames=2)
    assert needle in str(info.value)


def test_zero_one_float_mask_means_what_it_says():
    mask = np.zeros((24, 32))
    mask[:, :16] = 1.0
    frames = stillmotion.animate(IMAGE, [ARROW], mask=mask, frames=3, loop=False)
    np.testing.assert_array_equal(frames[-1][:, 16:], IMAGE[:, 16:])  # outside the mask: untouched
    assert not np.array_equal(frames[-1][:, :16], IMAGE[:, :16])


@pytest.mark.parametrize(
    "image, needle",
    [
        (None, "image must be a file path"),
        (np.zeros((24, 32), np.uint8), "uint8 (H, W, 3)"),
        (np.zeros((24, 32, 3), np.float32), "uint8 (H, W, 3)"),
        (np.zeros((1, 32, 3), np.uint8), "too small"),
        (12, "image must be a file path"),
    ],
)
def test_bad_image_is_a_user_error(image, needle):
    with pytest.raises(UserInputError) as info:
        stillmotion.animate(image, [ARROW], frames=2)
    assert needle in str(info.value)


def test_binary_arrows_file_is_a_user_error(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserInputError, match="not a text"):
        stillmotion.animate(IMAGE, arrows_file=path, frames=2)
    with pytest.raises(UserInputError, match="arrows_file must be a file path"):
        stillmotion.animate(IMAGE, arrows_file=123, frames=2)


@pytest.mark.parametrize("frames", [True, 0, 2.5, "3", -1])
def test_bad_frames_are_user_errors(frames):
    with pytest.raises(UserInputError, match="frames"):
        stillmotion.animate(IMAGE, [ARROW], frames=frames)


@pytest.mark.parametrize(
    "motion, needle",
    [
        (np.ones((24, 32, 2), complex), "real numbers"),
        (np.ones((24, 32, 2), bool), "real numbers"),
        (np.ones((24, 32, 3), np.float32), "shape"),
        (np.ones((0, 24, 32, 2), np.float32), "shape"),
        (np.full((24, 32, 2), np.inf, np.float32), "NaN or infinite"),
        (np.full((24, 32, 2), 1e30, np.float32), "limit is 10000"),
        ([[1.0, 2.0]], "motion must be an array"),
    ],
)
def test_bad_motion_arrays_are_user_errors(motion, needle):
    with pytest.raises(UserInputError) as info:
        stillmotion.animate(IMAGE, motion=motion, frames=2)
    assert needle in str(info.value)


def test_numpy_scalars_are_accepted(tmp_path):
    report = stillmotion.animate_to_file(IMAGE, tmp_path / "o.mp4", [ARROW], frames=np.int64(2),
                                         fps=np.float32(30), strength=np.float64(1.5))  # fmt: skip
    assert report["fps"] == 30.0 and report["frames"] == 2
    frames = stillmotion.animate(IMAGE, [ARROW], frames=np.int32(2), size=(np.int64(16), 12))
    assert frames.shape == (2, 12, 16, 3)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"fps": "30"}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"fps": True}, "fps"),
        ({"loop": "yes"}, "loop must be True or False"),
        ({"engine": 3}, "engine"),
        ({"size": "16x12"}, "size"),
        ({"size": (16.0, 12.0)}, "size"),
        ({"output_type": "list"}, "output_type"),
    ],
)
def test_other_bad_arguments_are_user_errors(kwargs, needle):
    with pytest.raises(UserInputError, match=needle):
        stillmotion.animate(IMAGE, [ARROW], frames=2, **kwargs)


def test_diffusion_options_are_checked_before_the_model_loads():
    for options, needle in [({"steps": 0}, "steps"), ({"omega": float("nan")}, "omega"),
                            ({"gamma": 2.0}, "gamma"), ({"seed": "1"}, "seed"),
                            ({"device": "tpu"}, "device"), ({"stepz": 3}, "takes no option")]:  # fmt: skip
        with pytest.raises(UserInputError, match=needle):
            scene, field = api.prepare(IMAGE, [ARROW])
            api.render(scene, field, engine="diffusion", frames=2, **options)


def test_zero_motion_warns_that_the_video_is_still():
    with pytest.warns(UserWarning, match="still picture"):
        stillmotion.animate(IMAGE, motion=np.zeros((24, 32, 2), np.float32), frames=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stillmotion.animate(IMAGE, [ARROW], frames=2)  # real motion: no warning


def test_render_checks_a_hand_made_field():
    scene, field = api.prepare(IMAGE, [ARROW])
    with pytest.raises(UserInputError, match="NaN"):
        api.render(scene, np.full_like(field, np.nan), frames=2)
    with pytest.raises(UserInputError, match="at strength 10000"):
        api.render(scene, field * 100, frames=2, strength=10000.0)
    with pytest.raises(UserInputError, match="scene must be a Scene"):
        api.render(IMAGE, field, frames=2)


def test_animate_to_file_refuses_outputs_that_are_inputs(photo, tmp_path):
    folder = photo.parent
    with pytest.raises(UserInputError, match="holds the input"):
        stillmotion.animate_to_file(photo, folder, [ARROW], frames=2, overwrite=True)
    with pytest.raises(UserInputError, match="is also the input"):
        stillmotion.animate_to_file(photo, tmp_path / "o.mp4", [ARROW], frames=2, save_motion=photo)
    with pytest.raises(UserInputError, match="output must be a file path"):
        stillmotion.animate_to_file(photo, None, [ARROW], frames=2)
    with pytest.raises(UserInputError, match=r"\.json"):
        stillmotion.animate_to_file(photo, tmp_path / "o.mp4", [ARROW], frames=2, report=tmp_path / "r.txt")
    with pytest.raises(UserInputError, match="overwrite must be True or False"):
        stillmotion.animate_to_file(photo, tmp_path / "o.mp4", [ARROW], frames=2, overwrite="yes")
    assert sorted(os.listdir(tmp_path)) == ["p.png"]


def test_large_scene_refused_for_warp_and_shrunk_for_diffusion(monkeypatch):
    # The pixel budget is lowered so that a small array stands for a 12000x8000 photo.
    monkeypatch.setattr(api, "MAX_WORK_PIXELS", 24 * 32 - 1)
    with pytest.raises(UserInputError, match="pass --size"):
        api.prepare(IMAGE, [ARROW])
    scene, field = api.prepare(IMAGE, [ARROW], size=(16, 12))
    assert (scene.width, scene.height) == (16, 12)
    scene, field = api.prepare(IMAGE, [ARROW], max_pixels=200)
    assert scene.width * scene.height <= 200 and field.shape[:2] == (scene.height, scene.width)


def test_other_public_functions_check_their_arguments(tmp_path):
    arrow = stillmotion.Arrow(((1, 1), (10, 2)))
    field = stillmotion.dense_flow_from_arrows([(1, 1, 10, 2)], 32, 24)  # number tuples accepted
    np.testing.assert_array_equal(field, stillmotion.dense_flow_from_arrows([arrow], 32, 24))
    for call, needle in [
        (lambda: stillmotion.dense_flow_from_arrows(None, 32, 24), "arrows must be a list"),
        (lambda: stillmotion.dense_flow_from_arrows([arrow], "32", 24), "whole numbers"),
        (lambda: stillmotion.dense_flow_from_arrows([arrow], 32, 24, mask=[[1]]), "mask must be"),
        (lambda: stillmotion.motion_strength(None), "real numbers"),
        (lambda: stillmotion.motion_strength(np.ones((4, 4, 2), complex)), "real numbers"),
        (lambda: stillmotion.motion_strength(np.ones(3)), "shape"),
        (lambda: stillmotion.write_video(tmp_path / "v.mp4", None, fps=10), "iterable"),
        (lambda: stillmotion.write_video(tmp_path / "v.mp4", [IMAGE], fps=True), "fps"),
    ]:
        with pytest.raises(UserInputError, match=needle):
            call()
    assert stillmotion.write_video(tmp_path / "v.mp4", [IMAGE, IMAGE], fps=np.float32(10)) == 2
