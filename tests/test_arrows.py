"""Arrows, arrow files (project JSON, LabelMe), masks, scenes: what users draw and how it goes wrong."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import Arrow, load_arrows_file, parse_arrow_option, save_arrows_json
from stillmotion.inputs.mask import load_mask
from stillmotion.inputs.scene import load_scene

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "stillmotion" / "assets" / "examples"


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(path)
    return path


def test_parse_arrow_option():
    a = parse_arrow_option("10,20,30,40", 0)
    assert a.points == ((10.0, 20.0), (30.0, 40.0))
    assert a.strength == 1.0
    assert math.isclose(a.length, math.hypot(20, 20))
    assert parse_arrow_option("1,2,3,4,0.5").strength == 0.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2,3", "4 or 5 numbers"),
        ("1,2,3,4,5,6", "4 or 5 numbers"),
        ("1,2,x,4", "must be a number"),
        ("5,5,5,5", "zero length"),
        ("nan,2,3,4", "non-finite"),
        ("1,2,inf,4", "non-finite"),
        ("1,2,3,4,-1", "strength"),
    ],
)
def test_parse_arrow_option_errors(text, message):
    with pytest.raises(UserInputError, match=message) as info:
        parse_arrow_option(text, 2)
    assert "--arrow #3" in str(info.value) or "arrow '#3'" in str(info.value)


def test_arrow_outside_image_names_the_arrow(image):
    with pytest.raises(UserInputError, match=r"arrow '#2' point \(100, 5\) lies outside the image \(80x60"):
        load_scene(image, ["1,1,10,10", "5,5,100,5"])


def test_single_point_trajectory(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"version": 1, "arrows": [{"points": [[3, 4]], "name": "lonely"}]}))
    with pytest.raises(UserInputError, match="arrow 'lonely' has a single point"):
        load_arrows_file(path)


def test_nan_in_file(tmp_path):
    path = tmp_path / "a.json"
    # Python's json reads the non-standard NaN literal; it must still be refused.
    path.write_text('{"arrows": [{"points": [[1, 2], [NaN, 4]]}]}')
    with pytest.raises(UserInputError, match="non-finite"):
        load_arrows_file(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"arrows": [', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"foo": 1}', "neither a stillmotion file"),
        ('{"arrows": {"a": 1}}', "must be a list"),
        ('{"arrows": [{"points": [[1, 2], [3]]}]}', r"list of \[x, y\] pairs"),
        ('{"arrows": [{"points": [[1, 2], ["a", 3]]}]}', "must be a number"),
        ('{"arrows": [{"from": [1, 2]}]}', "needs 'points'"),
        ('{"version": 2, "arrows": []}', "unsupported version"),
        ('{"arrows": [{"points": [[1, 2], [3, 4]], "strength": "fast"}]}', "'strength' must be a number"),
        ('{"image_size": [10], "arrows": []}', "image_size"),
        ('{"arrows": [], "mask": 5}', "'mask' must be a file path"),
        ('{"shapes": 5}', "'shapes' must be a list"),
        ('{"shapes": [1]}', "shape #1 must be an object"),
        ('{"shapes": [{"shape_type": "line", "label": "h"}]}', r"shape 'h': 'points' must be a list"),
        ('{"shapes": [], "imageWidth": "x", "imageHeight": 3}', "imageWidth and imageHeight"),
    ],
)
def test_malformed_arrow_files(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserInputError, match=message) as info:
        load_arrows_file(path)
    assert str(path) in str(info.value)


def test_missing_arrow_file(tmp_path):
    with pytest.raises(UserInputError, match="cannot read arrows file"):
        load_arrows_file(tmp_path / "nope.json")


def test_project_json_round_trip(tmp_path):
    arrows = [
        Arrow(((1.5, 2.0), (10.0, 12.0)), 0.5, "river"),
        Arrow(((5.0, 5.0), (9.0, 7.0), (20.0, 5.0)), 1.0, "path"),
    ]
    path = tmp_path / "arrows.json"
    save_arrows_json(path, arrows, image_size=(80, 60), mask="m.png")
    doc = load_arrows_file(path)
    assert doc.arrows == arrows
    assert doc.image_size == (80, 60)
    assert doc.mask_path == tmp_path / "m.png"


def test_start_end_form_and_scaling(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"image_size": [40, 30], "arrows": [{"start": [10, 10], "end": [20, 15]}]}))
    doc = load_arrows_file(path)
    (a,) = doc.arrows_for_image(80, 60)  # twice the size the file refers to
    assert a.points == ((20.0, 20.0), (40.0, 30.0))


def test_labelme_real_files(shared_data):
    folder = shared_data / "images" / "cinemagraphy3d"
    files = sorted(folder.glob("*_labelme.json"))
    assert files, f"no LabelMe files in {folder}"
    for path in files:
        raw = json.loads(path.read_text())
        lines = [s for s in raw["shapes"] if s["shape_type"] in ("line", "linestrip")]
        polygons = [s for s in raw["shapes"] if s["shape_type"] == "polygon"]
        doc = load_arrows_file(path)
        assert [a.name for a in doc.arrows] == [s["label"] for s in lines]
        for arrow, shape in zip(doc.arrows, lines, strict=True):
            assert arrow.points == tuple(tuple(p) for p in shape["points"])  # start -> end as drawn
        assert len(doc.mask_polygons) == len(polygons)
        assert doc.image_size == (raw["imageWidth"], raw["imageHeight"])
        # A scene at half size scales the arrows and turns the polygons into the mask.
        img = np.zeros((raw["imageHeight"] // 2, raw["imageWidth"] // 2, 3), np.uint8)
        scene = load_scene(img, arrows_file=path)
        assert len(scene.arrows) == len(lines)
        assert scene.arrows[0].start == pytest.approx(tuple(v / 2 for v in lines[0]["points"][0]))
        assert scene.mask is not None and 0 < scene.mask.mean() < 1
        # Users draw arrows inside the region they outline.
        for arrow in scene.arrows:
            x, y = (round(v) for v in arrow.start)
            assert scene.mask[min(y, img.shape[0] - 1), min(x, img.shape[1] - 1)], arrow.name


def test_bundled_example_scene():
    scene = load_scene(EXAMPLES / "waterfall.jpg", arrows_file=EXAMPLES / "waterfall_arrows.json")
    assert scene.image.shape == (360, 640, 3)
    assert len(scene.arrows) >= 1
    assert scene.mask is not None and scene.mask.shape == (360, 640)


def test_mask_reading(tmp_path):
    path = tmp_path / "m.png"
    m = np.zeros((30, 40), np.uint8)
    m[:, 20:] = 255
    Image.fromarray(m).save(path)
    mask = load_mask(path, 80, 60)  # any size, resized to the image
    assert mask.shape == (60, 80)
    assert not mask[:, :38].any() and mask[:, 42:].all()


def test_unreadable_mask(tmp_path, image):
    bad = tmp_path / "mask.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(UserInputError, match=f"cannot read mask {bad}"):
        load_scene(image, ["1,1,10,10"], mask=bad)
    with pytest.raises(UserInputError, match="does not exist"):
        load_scene(image, ["1,1,10,10"], mask=tmp_path / "absent.png")
