"""Streaming video writers: formats by extension, read-back, atomic output, clear errors."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from stillmotion.errors import UserInputError
from stillmotion.io.video_writer import open_video_writer, video_format, write_video


def clip(n: int = 7, h: int = 61, w: int = 81) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    return [np.stack([(xx * 3 + i * 2) % 256, (yy * 4) % 256, (xx + yy + i) % 256], -1).astype(np.uint8)
            for i in range(n)]  # fmt: skip


def decode(path) -> tuple[list[np.ndarray], av.video.stream.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream


def test_format_by_extension():
    assert video_format("a.mp4") == "mp4"
    assert video_format("a.GIF") == "gif"
    assert video_format("a.webp") == "webp"
    assert video_format("frames/") == "png"
    assert video_format("frames") == "png"
    with pytest.raises(UserInputError, match=r"\.avi"):
        video_format("a.avi")


def test_mp4_is_h264_yuv420p_faststart_with_every_frame(tmp_path):
    frames = clip()
    out = tmp_path / "clip.mp4"
    assert write_video(out, iter(frames), fps=24) == 7
    decoded, stream = decode(out)
    assert len(decoded) == 7
    assert stream.codec_context.name == "h264"
    assert stream.codec_context.pix_fmt == "yuv420p"
    assert stream.average_rate == 24
    # Odd sides are padded to even ones by repeating the edge; the picture itself is intact.
    assert (stream.width, stream.height) == (82, 62)
    for a, b in zip(decoded, frames, strict=True):
        assert np.abs(a[:61, :81].astype(int) - b).mean() < 4
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: playable while downloading


def test_gif_loops_and_reads_back(tmp_path):
    frames = clip(5)
    out = tmp_path / "clip.gif"
    write_video(out, frames, fps=10)
    decoded, stream = decode(out)
    assert len(decoded) == 5 and decoded[0].shape == (61, 81, 3)
    assert np.abs(decoded[0].astype(int) - frames[0]).mean() < 6  # 256 colours, dithered
    with Image.open(out) as im:
        assert im.n_frames == 5 and im.info.get("loop") == 0


def test_webp_is_animated_and_loops(tmp_path):
    # FFmpeg (hence PyAV) cannot decode animated WebP; Pillow can.
    frames = clip(6)
    out = tmp_path / "clip.webp"
    write_video(out, frames, fps=12)
    with Image.open(out) as im:
        assert im.n_frames == 6 and im.size == (81, 61) and im.info.get("loop") == 0
        im.seek(3)
        assert np.abs(np.asarray(im.convert("RGB")).astype(int) - frames[3]).mean() < 6


@pytest.mark.parametrize("name", ["frames/", "frames"])
def test_png_folder_is_lossless(tmp_path, name):
    frames = clip(4)
    write_video(f"{tmp_path}/{name}", frames, fps=5)
    files = sorted((tmp_path / "frames").iterdir())
    assert [f.name for f in files] == [f"frame_{i:05d}.png" for i in range(4)]
    for f, frame in zip(files, frames, strict=True):
        assert np.array_equal(np.asarray(Image.open(f).convert("RGB")), frame)


@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif", "clip.webp", "frames/"])
def test_failure_half_way_leaves_nothing(tmp_path, name):
    frames = clip(3)
    with pytest.raises(RuntimeError, match="boom"):
        with open_video_writer(tmp_path / name, fps=10) as writer:
            writer.write(frames[0])
            writer.write(frames[1])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_frame_errors_are_clear_and_leave_nothing(tmp_path):
    frames = clip(2)
    with pytest.raises(UserInputError, match="81x61"):
        with open_video_writer(tmp_path / "a.mp4", fps=10) as writer:
            writer.write(frames[0])
            writer.write(frames[1][:, :40])
    with pytest.raises(UserInputError, match="uint8"):
        with open_video_writer(tmp_path / "b.mp4", fps=10) as writer:
            writer.write(frames[0].astype(np.float32))
    with pytest.raises(UserInputError, match="no frames"):
        write_video(tmp_path / "c.mp4", [], fps=10)
    with pytest.raises(UserInputError, match="fps"):
        open_video_writer(tmp_path / "d.mp4", fps=0)
    assert list(tmp_path.iterdir()) == []


def test_replacing_an_existing_output_is_atomic(tmp_path):
    out = tmp_path / "clip.mp4"
    write_video(out, clip(3), fps=10)
    before = out.read_bytes()
    with pytest.raises(RuntimeError):
        with open_video_writer(out, fps=10) as writer:
            writer.write(clip(1)[0])
            raise RuntimeError("stop")
    assert out.read_bytes() == before
    write_video(out, clip(5), fps=10)
    assert len(decode(out)[0]) == 5
