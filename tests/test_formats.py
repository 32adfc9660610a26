"""File formats: round trips, hand-computed encodings, bad files (errors name the file)."""
import cv2
import numpy as np
import pytest

import motion_rcnn_d2  # noqa: F401
from motion_rcnn_d2.data import formats as F


def _raw(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_vkitti_flow_png_hand_computed_pixels(tmp_path):
    # W = 5, H = 3: u is normalised by W - 1 = 4, v by H - 1 = 2.
    flow = np.zeros((3, 5, 2), np.float32)
    valid = np.ones((3, 5), bool)
    flow[0, 0] = (1.0, -2.0)
    flow[1, 2] = (-4.0, 2.0)
    valid[2, 4] = False
    flow[2, 4] = (3.0, 3.0)
    path = tmp_path / "flow.png"
    F.write_vkitti_flow_png(path, flow, valid)
    raw = _raw(path)
    assert raw.dtype == np.uint16 and raw.shape == (3, 5, 3)
    # OpenCV order B, G, R = (valid, v, u)
    assert raw[0, 0, 2] == round((1.0 / 4 + 1) * 65535 / 2) == 40959
    assert raw[0, 0, 1] == 0  # v = -2 = -(H - 1)
    assert raw[1, 2, 2] == 0 and raw[1, 2, 1] == 65535  # u = -(W - 1), v = +(H - 1)
    assert raw[0, 0, 0] == 1 and raw[2, 4, 0] == 0
    back, back_valid = F.read_vkitti_flow_png(path)
    assert back.dtype == np.float32 and back.shape == (3, 5, 2)
    np.testing.assert_array_equal(back_valid, valid)
    # 40959 -> (2 * 40959 / 65535 - 1) * 4
    assert back[0, 0, 0] == pytest.approx((2 * 40959 / 65535 - 1) * 4, abs=1e-6)
    np.testing.assert_allclose(back[valid], flow[valid], atol=4 / 65535 + 1e-6)
    assert (back[2, 4] == 0).all()


def test_vkitti_flow_png_round_trip_random(tmp_path):
    rng = np.random.default_rng(0)
    # the format holds |u| <= W - 1, |v| <= H - 1
    u, v = rng.uniform(-39, 39, (12, 40)), rng.uniform(-11, 11, (12, 40))
    flow = np.stack([u, v], 2).astype(np.float32)
    valid = rng.random((12, 40)) > 0.2
    F.write_vkitti_flow_png(tmp_path / "f.png", flow, valid)
    back, back_valid = F.read_vkitti_flow_png(tmp_path / "f.png")
    np.testing.assert_array_equal(back_valid, valid)
    # quantisation step (size - 1) * 2 / 65535, half of it at most
    np.testing.assert_allclose(back[valid][:, 0], flow[valid][:, 0], atol=39 / 65535 + 1e-5)
    np.testing.assert_allclose(back[valid][:, 1], flow[valid][:, 1], atol=11 / 65535 + 1e-5)


def test_kitti_flow_png_hand_computed(tmp_path):
    flow = np.array([[[1.5, -0.25], [0.0, 0.0]]], np.float32)
    valid = np.array([[True, False]])
    path = tmp_path / "kitti.png"
    F.write_kitti_flow_png(path, flow, valid)
    raw = _raw(path)
    assert raw[0, 0, 2] == 1.5 * 64 + 2**15 == 32864
    assert raw[0, 0, 1] == -0.25 * 64 + 2**15 == 32752
    assert raw[0, 0, 0] == 1 and tuple(raw[0, 1]) == (0, 0, 0)
    back, back_valid = F.read_kitti_flow_png(path)
    np.testing.assert_array_equal(back_valid, valid)
    np.testing.assert_array_equal(back[0, 0], [1.5, -0.25])
    # default validity = finite pixels
    flow[0, 1] = (np.nan, 2.0)
    F.write_kitti_flow_png(path, flow)
    assert _raw(path)[0, 1, 0] == 0 and _raw(path)[0, 0, 0] == 1


def test_depth_png_hand_computed_and_invalid_values(tmp_path):
    depth = np.array([[12.34, 0.0, -1.0, np.inf, 700.0, 0.004]], np.float32)
    path = tmp_path / "depth.png"
    F.write_depth_png(path, depth)
    raw = _raw(path)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw[0], [1234, 0, 0, 0, 65535, 0])
    back = F.read_depth_png(path)
    assert back.dtype == np.float32
    assert back[0, 0] == pytest.approx(12.34)
    # 0 and the sky value 65535 are invalid: read as 0, never as points
    np.testing.assert_array_equal(back[0, 1:], 0.0)
    cv2.imwrite(str(path), np.array([[65534, 65535, 1]], np.uint16))
    np.testing.assert_allclose(F.read_depth_png(path)[0], [655.34, 0.0, 0.01], rtol=1e-6)


def test_disparity_png(tmp_path):
    path = tmp_path / "disp.png"
    cv2.imwrite(str(path), np.array([[9600, 0, 1]], np.uint16))
    np.testing.assert_array_equal(F.read_kitti_disparity_png(path)[0], [37.5, 0.0, 1 / 256])


def test_flo_round_trip(tmp_path):
    flow = np.random.default_rng(1).normal(size=(7, 9, 2)).astype(np.float32)
    F.write_flo(tmp_path / "a.flo", flow)
    np.testing.assert_array_equal(F.read_flo(tmp_path / "a.flo"), flow)


def test_read_image_round_trip_png_and_jpeg(tmp_path):
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 2] = 200  # red in BGR
    cv2.imwrite(str(tmp_path / "a.png"), img)
    np.testing.assert_array_equal(F.read_image(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "a.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert np.abs(F.read_image(tmp_path / "a.jpg").astype(int) - img).max() <= 3


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_images_raise_naming_file(tmp_path, ext):
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    path = tmp_path / f"frame.{ext}"
    cv2.imwrite(str(path), img)
    _truncate(path, 0.6)
    with pytest.raises(F.DataFormatError, match="frame." + ext):
        F.read_image(path)


def test_truncated_and_corrupt_pngs_raise(tmp_path):
    path = tmp_path / "depth.png"
    F.write_depth_png(path, np.full((8, 8), 3.0))
    _truncate(path, 0.5)
    with pytest.raises(F.DataFormatError, match="depth.png"):
        F.read_depth_png(path)
    # a PNG signature and end chunk around garbage: decoding fails
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10 + b"IEND\xaeB`\x82")
    with pytest.raises(F.DataFormatError, match="depth.png"):
        F.read_depth_png(path)
    path.write_bytes(b"not an image at all")
    with pytest.raises(F.DataFormatError, match="depth.png"):
        F.read_vkitti_flow_png(path)


def test_wrong_bit_depth_or_channels_raise(tmp_path):
    path8 = tmp_path / "eight.png"
    cv2.imwrite(str(path8), np.zeros((4, 4), np.uint8))
    with pytest.raises(F.DataFormatError, match="eight.png.*bit depth"):
        F.read_depth_png(path8)
    with pytest.raises(F.DataFormatError, match="eight.png"):
        F.read_kitti_disparity_png(path8)
    path16 = tmp_path / "gray16.png"
    cv2.imwrite(str(path16), np.zeros((4, 4), np.uint16))
    with pytest.raises(F.DataFormatError, match="gray16.png"):
        F.read_vkitti_flow_png(path16)
    with pytest.raises(F.DataFormatError, match="gray16.png"):
        F.read_kitti_flow_png(path16)
    path_rgb8 = tmp_path / "rgb8.png"
    cv2.imwrite(str(path_rgb8), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(F.DataFormatError, match="rgb8.png"):
        F.read_vkitti_flow_png(path_rgb8)


def test_missing_and_bad_flo(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        F.read_image(tmp_path / "nowhere.png")
    with pytest.raises(FileNotFoundError, match="nowhere.flo"):
        F.read_flo(tmp_path / "nowhere.flo")
    path = tmp_path / "b.flo"
    F.write_flo(path, np.zeros((5, 5, 2), np.float32))
    _truncate(path, 0.5)
    with pytest.raises(F.DataFormatError, match="b.flo"):
        F.read_flo(path)
    path.write_bytes(b"PIEH" + b"\x00" * 20)
    with pytest.raises(F.DataFormatError, match="b.flo"):
        F.read_flo(path)
