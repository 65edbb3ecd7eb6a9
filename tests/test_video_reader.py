"""Reading frames from video files, frame folders and image lists."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from stillmotion.errors import UserInputError
from stillmotion.io.video_reader import is_image_file, is_video_file, open_frames, read_frames


def _frame(k: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A frame whose brightness encodes its index (survives lossy coding)."""
    return np.full((h, w, 3), 20 + 20 * k, np.uint8)


def _index(frame: np.ndarray) -> int:
    return round((float(frame.mean()) - 20) / 20)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(12))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(10):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(k), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "frames"
    path.mkdir()
    # Natural order: frame2 comes before frame10 although "10" < "2" as text.
    for k in (0, 1, 2, 10, 11):
        Image.fromarray(_frame(k if k < 10 else k - 7)).save(path / f"frame{k}.png")
    (path / "notes.txt").write_text("not a frame")
    return path


def test_video_metadata_and_frames(mp4):
    src = open_frames(mp4)
    assert src.kind == "video"
    assert src.fps == pytest.approx(12.0)
    assert src.size == (64, 48) and src.width == 64 and src.height == 48
    assert src.frame_count == 10
    frames = list(src)
    assert len(frames) == 10
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert [_index(f) for f in frames] == list(range(10))
    assert len(list(src)) == 10  # iterable again


def test_stride_max_frames_resize(mp4):
    src = open_frames(mp4, stride=3, max_frames=3, resize=32)
    assert src.fps == pytest.approx(4.0)  # the rate of the frames it yields
    assert src.size == (32, 24)
    assert src.frame_count == 3
    frames = list(src)
    assert [_index(f) for f in frames] == [0, 3, 6]
    assert frames[0].shape == (24, 32, 3)
    assert read_frames(mp4, 2, resize=(40, 20)).shape == (2, 20, 40, 3)


def test_frames_are_streamed(mp4):
    it = iter(open_frames(mp4))
    first = next(it)
    assert _index(first) == 0  # decoding started without reading the whole file first
    it.close()


def test_folder_in_natural_order(folder):
    src = open_frames(folder)
    assert src.kind == "folder" and src.frame_count == 5 and src.fps == 25.0
    names = ["frame0.png", "frame1.png", "frame2.png", "frame10.png", "frame11.png"]
    assert [p.name for p in src.files] == names
    assert [_index(f) for f in src] == [0, 1, 2, 3, 4]
    assert open_frames(folder, fps=10, stride=2).fps == 5.0
    assert read_frames(folder, stride=2).shape == (3, 48, 64, 3)


def test_list_of_images(folder):
    files = [folder / "frame2.png", folder / "frame0.png"]
    src = open_frames(files)
    assert src.kind == "images" and src.frame_count == 2
    assert [_index(f) for f in src] == [2, 0]  # the given order


def test_real_gif_and_avi(shared_data):
    gif = open_frames(shared_data / "videos" / "dynca" / "water_3.gif")
    assert gif.size == (256, 256)
    assert len(list(gif)) == 12
    avi = open_frames(shared_data / "videos" / "dyntex" / "dyntex_fountain_6486110.avi", max_frames=5)
    assert avi.fps == pytest.approx(25.0) and avi.size == (352, 288)
    assert read_frames(avi.path, 5).shape == (5, 288, 352, 3)


def test_suffix_helpers():
    assert is_image_file("a/B.PNG") and is_image_file("x.jpg") and not is_image_file("x.gif")
    assert is_video_file("x.mp4") and is_video_file("x.gif") and not is_video_file("x.png")


def test_errors(tmp_path, folder, mp4):
    with pytest.raises(UserInputError, match="does not exist"):
        open_frames(tmp_path / "absent.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match="holds no image frames"):
        open_frames(empty)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00not a video at all" * 10)
    with pytest.raises(UserInputError, match=f"cannot read video {fake}"):
        open_frames(fake)
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"garbage")
    with pytest.raises(UserInputError, match=f"cannot read frame {bad_png}"):
        open_frames([bad_png])
    with pytest.raises(UserInputError, match="stride"):
        open_frames(mp4, stride=0)
    with pytest.raises(UserInputError, match="max_frames"):
        open_frames(mp4, max_frames=0)
    with pytest.raises(UserInputError, match="no input frames"):
        open_frames([])
    Image.fromarray(_frame(1, 30, 30)).save(folder / "frame12.png")
    with pytest.raises(UserInputError, match="all frames must have one size"):
        list(open_frames(folder))
    assert read_frames(folder, resize=(64, 48)).shape == (6, 48, 64, 3)  # resizing reconciles sizes
