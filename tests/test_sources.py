"""Frame and depth sources, calibration files and result files of demo.py, one by one:
videos streamed one frame at a time, natural frame order, every depth format read to the same
metres, K from files, motions.csv rows against hand-computed values, atomic outputs."""
import csv
import math
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from motion_rcnn_d2.data.calibration import (
    assumed_intrinsics,
    check_principal_point,
    intrinsics_matrix,
    read_calib,
)
from motion_rcnn_d2.data.depth_files import read_depth
from motion_rcnn_d2.data.formats import DataFormatError
from motion_rcnn_d2.data.sources import DepthFiles, FrameFiles, FramePairs, VideoFrames
from motion_rcnn_d2.geometry import rotation_x, rotation_z
from motion_rcnn_d2.utils.outputs import MotionsCSV, VideoOutput, motion_rows, rotation_deg


def _frames(count, height=24, width=40):
    """Distinct frames: frame i has grey level 20 i + a horizontal ramp (exactly decodable)."""
    ramp = np.tile(np.arange(width, dtype=np.uint8), (height, 1))
    return [np.repeat((ramp + 20 * i)[:, :, None], 3, axis=2).astype(np.uint8)
            for i in range(count)]


def _write_video(path, frames, fourcc="FFV1", fps=10.0):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return str(path)


def _write_pfm(path, depth, big_endian):
    """A one-channel PFM by hand: header, then rows bottom to top; scale > 0 = big-endian."""
    dtype = ">f4" if big_endian else "<f4"
    header = f"Pf\n{depth.shape[1]} {depth.shape[0]}\n{1.0 if big_endian else -1.0}\n"
    with open(path, "wb") as f:
        f.write(header.encode() + np.ascontiguousarray(depth[::-1], dtype=dtype).tobytes())


# ------------------------------------------------------------------------------ frames
def test_video_frames_are_decoded_one_at_a_time(tmp_path):
    frames = _frames(7)
    video = VideoFrames(_write_video(tmp_path / "clip.avi", frames))  # FFV1: lossless
    assert (video.count, video.fps, video.width, video.height) == (7, 10.0, 40, 24)
    pairs = iter(FramePairs(video))
    first = next(pairs)
    # only frames 0 and 1 have been decoded so far
    assert video._capture.get(cv2.CAP_PROP_POS_FRAMES) == 2
    assert first["image_id"] == "clip_000000" and first["frame"] == 0
    np.testing.assert_array_equal(first["image"], frames[0])
    np.testing.assert_array_equal(first["image_next"], frames[1])
    rest = list(pairs)
    assert [p["frame"] for p in rest] == [1, 2, 3, 4, 5]
    for pair in rest:
        np.testing.assert_array_equal(pair["image"], frames[pair["frame"]])
        np.testing.assert_array_equal(pair["image_next"], frames[pair["frame"] + 1])
    with pytest.raises(RuntimeError, match="clip.avi' are streamed once"):
        next(video.frames())


@pytest.mark.parametrize("step,max_pairs,expected", [(3, None, [(0, 3), (3, 6)]),
                                                     (2, None, [(0, 2), (2, 4), (4, 6)]),
                                                     (1, 2, [(0, 1), (1, 2)])])
def test_step_and_max_pairs(tmp_path, step, max_pairs, expected):
    frames = _frames(7)
    video = VideoFrames(_write_video(tmp_path / "clip.avi", frames))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"f{i}.png"), frame)
    for source in (video, FrameFiles(str(folder))):
        pairs = FramePairs(source, step=step, max_pairs=max_pairs)
        assert len(pairs) == len(expected)
        got = list(pairs)
        assert [(p["frame"], p["frame"] + step) for p in got] == expected
        for pair, (t, t1) in zip(got, expected):
            np.testing.assert_array_equal(pair["image"], frames[t])
            np.testing.assert_array_equal(pair["image_next"], frames[t1])


def test_mp4_video_count_and_rate(tmp_path):
    frames = _frames(5, 48, 64)
    video = VideoFrames(_write_video(tmp_path / "clip.mp4", frames, "mp4v", fps=25.0))
    assert (video.count, video.fps) == (5, 25.0)
    got = list(video.frames())
    assert [index for index, _, _ in got] == [0, 1, 2, 3, 4]
    for (_, _, image), frame in zip(got, frames):  # lossy codec: close, not equal
        assert np.abs(image.astype(int) - frame).mean() < 8


def test_frame_folder_in_natural_order_and_globs(tmp_path):
    for name in ("f10.png", "f2.png", "f1.png", ".hidden", "g1.jpg"):
        (tmp_path / name).write_bytes(b"")
    cv2.imwrite(str(tmp_path / "f1.png"), _frames(1)[0])
    source = FrameFiles(str(tmp_path / "f*.png"))
    assert [os.path.basename(p) for p in source.paths] == ["f1.png", "f2.png", "f10.png"]
    (tmp_path / "notes.txt").write_text("not a frame")
    with pytest.raises(DataFormatError, match="notes.txt.*is not a .png/.jpg/.jpeg file"):
        FrameFiles(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FrameFiles(str(tmp_path / "nowhere"))


def test_a_pair_needs_two_frames(tmp_path):
    frames = _frames(3)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i}.png"), frame)
    with pytest.raises(ValueError, match=r"0.png' has 1 frame\(s\): a pair needs two"):
        FramePairs(FrameFiles(str(tmp_path / "0.png")))
    with pytest.raises(ValueError, match=r"has 3 frame\(s\): a pair needs two, 3 frame"):
        FramePairs(FrameFiles(str(tmp_path)), step=3)
    assert len(FramePairs(FrameFiles(str(tmp_path)), step=2)) == 1


def test_frames_of_another_size_name_the_file(tmp_path):
    frames = _frames(3)
    frames[2] = frames[2][:-2]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i}.png"), frame)
    with pytest.raises(ValueError, match=r"2.png' is 40x22 but the first frame is 40x24"):
        list(FramePairs(FrameFiles(str(tmp_path))))


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 10])
def test_unreadable_video_names_the_file(tmp_path, content):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match="clip.mp4"):
        VideoFrames(str(path))
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        VideoFrames(str(tmp_path / "missing.mp4"))


# ------------------------------------------------------------------------------- depth
def _depth_cm(height=6, width=5):
    raw = (np.arange(height * width, dtype=np.uint16).reshape(height, width) * 137 + 250)
    raw[0, 0] = 0  # no depth
    raw[1, 1] = 65535  # sky
    return raw


def test_every_depth_format_reads_the_same_metres(tmp_path):
    raw = _depth_cm()
    cv2.imwrite(str(tmp_path / "d_cm.png"), raw)
    cv2.imwrite(str(tmp_path / "d_mm.png"), (raw.astype(np.uint32) * 10).clip(0, 65535)
                .astype(np.uint16))
    metres = raw.astype(np.float32) / np.float32(100.0)
    metres[0, 0], metres[1, 1], metres[2, 2], metres[3, 3] = np.nan, np.inf, -1.5, -np.inf
    np.save(tmp_path / "d.npy", metres)
    np.save(tmp_path / "d64.npy", metres.astype(np.float64)[:, :, None])  # HxWx1, float64
    _write_pfm(tmp_path / "d_le.pfm", metres, big_endian=False)
    _write_pfm(tmp_path / "d_be.pfm", metres, big_endian=True)
    expected = raw.astype(np.float32) / np.float32(100.0)
    expected[0, 0] = expected[1, 1] = expected[2, 2] = expected[3, 3] = 0.0
    expected_png = expected.copy()
    expected_png[2, 2], expected_png[3, 3] = raw[2, 2] / np.float32(100), raw[3, 3] / np.float32(100)
    got = {name: read_depth(str(tmp_path / name), scale)
           for name, scale in (("d_cm.png", 100), ("d_mm.png", 1000), ("d.npy", 100),
                               ("d64.npy", 1), ("d_le.pfm", 1), ("d_be.pfm", 1))}
    np.testing.assert_array_equal(got["d_cm.png"], expected_png)
    np.testing.assert_array_equal(got["d_mm.png"], expected_png)
    for name in ("d.npy", "d64.npy", "d_le.pfm", "d_be.pfm"):
        assert got[name].dtype == np.float32 and got[name].shape == raw.shape
        np.testing.assert_array_equal(got[name], expected, err_msg=name)


def test_bad_depth_files_name_the_file(tmp_path):
    zeros = np.zeros((4, 5), np.float32)
    zeros[0, 0] = np.nan
    np.save(tmp_path / "invalid.npy", zeros - 1.0)
    with pytest.raises(DataFormatError, match="invalid.npy' has no valid value"):
        read_depth(str(tmp_path / "invalid.npy"))
    cv2.imwrite(str(tmp_path / "zero.png"), np.zeros((4, 5), np.uint16))
    with pytest.raises(DataFormatError, match="zero.png' has no valid value"):
        read_depth(str(tmp_path / "zero.png"))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}]), allow_pickle=True)
    with pytest.raises(DataFormatError, match="objects.npy"):
        read_depth(str(tmp_path / "objects.npy"))
    (tmp_path / "d.exr").write_bytes(b"x")
    with pytest.raises(DataFormatError, match="d.exr' is not a depth file.*.png, .npy, .pfm"):
        read_depth(str(tmp_path / "d.exr"))
    (tmp_path / "short.pfm").write_bytes(b"Pf\n5 4\n-1\n" + b"\0" * 12)
    with pytest.raises(DataFormatError, match="short.pfm"):
        read_depth(str(tmp_path / "short.pfm"))
    np.save(tmp_path / "rgb.npy", np.ones((4, 5, 3), np.float32))
    with pytest.raises(DataFormatError, match="rgb.npy' is not a depth map"):
        read_depth(str(tmp_path / "rgb.npy"))


def test_depth_count_and_size_are_checked_before_the_first_pair(tmp_path):
    frames = _frames(3)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), frame)
        np.save(tmp_path / f"d{i}.npy", np.full(frame.shape[:2], 10.0 + i, np.float32))
    source = FrameFiles(str(tmp_path / "f*.png"))
    with pytest.raises(ValueError, match=r"2 depth files \('.*d0.npy' ...\) for 3 frames"):
        FramePairs(source, DepthFiles(str(tmp_path / "d[01].npy")))
    np.save(tmp_path / "d0.npy", np.ones((24, 41), np.float32))
    with pytest.raises(ValueError, match=r"d0.npy' is 41x24 but the frames are 40x24"):
        FramePairs(source, DepthFiles(str(tmp_path / "d*.npy")))
    np.save(tmp_path / "d0.npy", np.full((24, 40), 10.0, np.float32))
    pairs = list(FramePairs(source, DepthFiles(str(tmp_path / "d*.npy"))))
    assert [float(p["depth"][0, 0]) for p in pairs] == [10.0, 11.0]
    assert [float(p["depth_next"][0, 0]) for p in pairs] == [11.0, 12.0]


# ------------------------------------------------------------------------------ camera
def test_calibration_files(tmp_path):
    path = tmp_path / "K.txt"
    path.write_text("# camera 0\n721.5, 0, 609.5\n0 721.5 172.8  # row 2\n[0 0 1]\n")
    np.testing.assert_array_equal(read_calib(str(path)),
                                  intrinsics_matrix(721.5, 721.5, 609.5, 172.8))
    path.write_text("721.5 0 609.5 0 721.5 172.8 0 0")
    with pytest.raises(ValueError, match="K.txt' is in no format this reader knows"):
        read_calib(str(path))
    path.write_text("0 0 609.5 0 721.5 172.8 0 0 1")
    with pytest.raises(ValueError, match="K.txt'.*fx > 0"):
        read_calib(str(path))
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        read_calib(str(tmp_path / "nowhere.txt"))


def test_principal_point_must_fit_the_frames():
    np.testing.assert_array_equal(assumed_intrinsics(1242, 375),
                                  [[725.0, 0, 620.5], [0, 725.0, 187.0], [0, 0, 1]])
    K = intrinsics_matrix(725.0, 725.0, 620.5, 187.0)
    check_principal_point(K, 1242, 375, "clip.mp4")
    check_principal_point(K, 1000, 300, "clip.mp4")  # a crop: still near the centre
    with pytest.raises(ValueError, match=r"clip.mp4: the frames are 640x480.*\(620.5, 187\)"):
        check_principal_point(K, 640, 480, "clip.mp4")
    with pytest.raises(ValueError, match=r"1920x1080"):
        check_principal_point(K, 1920, 1080, "clip.mp4")


# ----------------------------------------------------------------------------- outputs
def test_rotation_deg_is_accurate_for_small_and_large_angles():
    for angle in (1e-5, 1e-3, 0.5, 3.0):
        R = rotation_x(torch.tensor(angle)).float()  # float32, as the models give it
        assert rotation_deg(R) == pytest.approx(math.degrees(angle), rel=1e-5, abs=1e-9)
    assert rotation_deg(torch.eye(3)) == 0.0


def test_motion_rows_by_hand():
    instances = Instances((10, 20))
    instances.pred_boxes = Boxes(torch.zeros(2, 4))
    instances.scores = torch.tensor([0.9, 0.6])
    instances.pred_classes = torch.tensor([1, 0])
    instances.pred_rotations = torch.stack([rotation_z(torch.tensor(math.radians(2.0))),
                                            torch.eye(3)]).float()
    instances.pred_translations = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    instances.pred_moving_scores = torch.tensor([0.8, 0.3])
    output = {"instances": instances,
              "camera_motion": {"rotation": torch.eye(3), "translation": torch.tensor([0, 0, 1.2])}}
    rows = motion_rows(output, ["Car", "Van"], seconds=0.2, moving_threshold=0.5)
    assert len(rows) == 2
    assert rows[0]["class"] == "Van" and rows[1]["class"] == "Car"
    assert (rows[0]["moving"], rows[1]["moving"]) == (1, 0)
    assert float(rows[0]["rotation_deg"]) == pytest.approx(2.0, rel=1e-6)
    assert float(rows[0]["translation_m"]) == 5.0 and float(rows[0]["speed_mps"]) == 25.0
    assert (rows[0]["tx_m"], rows[0]["ty_m"], rows[0]["tz_m"]) == ("3", "4", "0")
    assert float(rows[1]["camera_speed_mps"]) == pytest.approx(6.0)
    assert float(rows[1]["camera_translation_m"]) == pytest.approx(1.2)
    # no objects: one row with the camera; no frame rate: no speeds
    empty = motion_rows({"camera_motion": output["camera_motion"]}, seconds=None)
    assert len(empty) == 1 and "object" not in empty[0] and empty[0]["camera_speed_mps"] == ""


def test_outputs_are_renamed_only_when_complete(tmp_path):
    pictures = [np.full((21, 33, 3), 40 * i, np.uint8) for i in range(3)]
    with VideoOutput(str(tmp_path / "v.avi"), fps=5) as video, \
            MotionsCSV(str(tmp_path / "m.csv"), fps=5) as table:
        for i, picture in enumerate(pictures):
            video.write(picture)
            table.add(f"p{i}", i, {})
        pid = os.getpid()
        assert sorted(os.listdir(tmp_path)) == [f"m.tmp{pid}.csv", f"v.tmp{pid}.avi"]
    assert sorted(os.listdir(tmp_path)) == ["m.csv", "v.avi"]
    capture = cv2.VideoCapture(str(tmp_path / "v.avi"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) \
        == (34, 22)  # even sides
    with open(tmp_path / "m.csv") as f:
        assert [(r["image_id"], r["time_s"]) for r in csv.DictReader(f)] == \
            [("p0", "0"), ("p1", "0.2"), ("p2", "0.4")]
    with pytest.raises(RuntimeError, match="interrupted"):
        with VideoOutput(str(tmp_path / "w.mp4"), fps=5) as video, \
                MotionsCSV(str(tmp_path / "n.csv")) as table:
            video.write(pictures[0])
            table.add("p0", 0, {})
            raise RuntimeError("interrupted")
    assert sorted(os.listdir(tmp_path)) == ["m.csv", "v.avi"]
    with pytest.raises(ValueError, match="out.gif': unknown container"):
        VideoOutput(str(tmp_path / "out.gif"), fps=5)
