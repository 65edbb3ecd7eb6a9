"""Middlebury .flo files and the .npz flow-sequence archive."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from stillmotion.errors import UserInputError
from stillmotion.io.flo import FLO_MAGIC, FlowSequenceWriter, read_flo, valid_flow_mask, write_flo


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (37, 64), (388, 584)])
def test_round_trip(tmp_path, shape):
    rng = np.random.default_rng(0)
    flow = rng.normal(0, 20, (*shape, 2)).astype(np.float32)
    path = write_flo(tmp_path / "f.flo", flow)
    back = read_flo(path)
    assert back.dtype == np.float32 and back.shape == flow.shape
    np.testing.assert_array_equal(back, flow)
    assert path.stat().st_size == 12 + flow.size * 4


def test_layout_is_middlebury(tmp_path):
    flow = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], np.float32)  # H=1, W=3
    path = write_flo(tmp_path / "f.flo", flow)
    data = path.read_bytes()
    assert data[:4] == b"PIEH"
    assert struct.unpack("<fii", data[:12]) == (FLO_MAGIC, 3, 1)
    assert struct.unpack("<6f", data[12:]) == (1, 2, 3, 4, 5, 6)  # interleaved u, v row by row


def test_non_contiguous_and_float64_input(tmp_path):
    flow = np.random.default_rng(1).normal(size=(10, 12, 2))[:, ::2]
    back = read_flo(write_flo(tmp_path / "f.flo", flow))
    np.testing.assert_allclose(back, flow.astype(np.float32))


def test_overwrite_is_atomic_and_bad_shape_writes_nothing(tmp_path):
    path = tmp_path / "f.flo"
    write_flo(path, np.ones((2, 2, 2), np.float32))
    with pytest.raises(UserInputError, match="shape"):
        write_flo(path, np.ones((2, 2, 3), np.float32))
    assert read_flo(path).shape == (2, 2, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.flo"]


def _bad(tmp_path, data: bytes):
    path = tmp_path / "bad.flo"
    path.write_bytes(data)
    return path


def test_wrong_magic(tmp_path):
    path = _bad(tmp_path, struct.pack("<fii", 1.0, 2, 2) + bytes(32))
    with pytest.raises(UserInputError, match=f"{path} is not a Middlebury .flo file: magic"):
        read_flo(path)


def test_truncated_header(tmp_path):
    path = _bad(tmp_path, struct.pack("<f", FLO_MAGIC))
    with pytest.raises(UserInputError, match="truncated"):
        read_flo(path)


def test_truncated_data(tmp_path):
    path = _bad(tmp_path, struct.pack("<fii", FLO_MAGIC, 4, 3) + bytes(4 * 4 * 3 * 2 - 4))
    with pytest.raises(UserInputError, match=r"truncated: .* a 4x3 field needs 108"):
        read_flo(path)


def test_trailing_data_and_bad_size(tmp_path):
    path = _bad(tmp_path, struct.pack("<fii", FLO_MAGIC, 1, 1) + bytes(12))
    with pytest.raises(UserInputError, match="trailing"):
        read_flo(path)
    path = _bad(tmp_path, struct.pack("<fii", FLO_MAGIC, -1, 5))
    with pytest.raises(UserInputError, match="invalid size"):
        read_flo(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        read_flo(tmp_path / "absent.flo")


def test_real_ground_truth(shared_data):
    gt = read_flo(shared_data / "flow_gt" / "middlebury_rubberwhale" / "flow10.flo")
    assert gt.shape == (388, 584, 2)
    valid = valid_flow_mask(gt)
    assert 0.5 < valid.mean() < 1.0  # RubberWhale marks unknown flow (> 1e9) in places
    assert np.abs(gt[valid]).max() < 20
    sintel = read_flo(shared_data / "flow_gt" / "sintel" / "alley_1" / "gt" / "frame_0002.flo")
    assert sintel.shape == (436, 1024, 2) and valid_flow_mask(sintel).all()


def test_sequence_archive_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    flows = rng.normal(0, 5, (4, 6, 7, 2)).astype(np.float32)
    path = tmp_path / "seq.npz"
    with FlowSequenceWriter(path, dtype=np.float16) as out:
        for f in flows:
            out.append(f)
        out.extras["strength"] = 1.25
        out.extras["fps"] = 12.5
    with np.load(path) as d:  # no pickle needed
        assert sorted(d.files) == ["flow", "fps", "strength"]
        assert d["flow"].shape == (4, 6, 7, 2) and d["flow"].dtype == np.float16
        np.testing.assert_allclose(d["flow"], flows, atol=5e-3)
        assert float(d["strength"]) == 1.25 and float(d["fps"]) == 12.5


def test_sequence_archive_writes_nothing_on_error(tmp_path):
    path = tmp_path / "seq.npz"
    with pytest.raises(UserInputError, match="no flow fields"):
        with FlowSequenceWriter(path):
            pass
    with pytest.raises(RuntimeError):
        with FlowSequenceWriter(path) as out:
            out.append(np.zeros((3, 3, 2), np.float32))
            raise RuntimeError("decoder failed")
    with pytest.raises(ValueError, match="first was"):
        with FlowSequenceWriter(path) as out:
            out.append(np.zeros((3, 3, 2), np.float32))
            out.append(np.zeros((4, 3, 2), np.float32))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserInputError, match=".npz"):
        FlowSequenceWriter(tmp_path / "seq.npy")
