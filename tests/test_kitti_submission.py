"""tools/kitti_submission.py: KITTI's testing layout in, flow/ disp_0/ disp_1/ out; read back
with OpenCV and the devkit's formulas, the files hold the model's results."""
import os
import sys

import cv2
import numpy as np
import pytest
import torch

from motion_rcnn_d2 import MotionPredictor
from motion_rcnn_d2.data.calibration import read_kitti_calib

from motion_rcnn_inputs import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import kitti_submission  # noqa: E402

W, H = 96, 40
CALIB = """calib_time: 09-Jan-2012 13:57:47
P_rect_02: 90 0 47.5 9 0 90 19.5 0 0 0 1 0
P_rect_03: 90 0 47.5 -39.6 0 90 19.5 0 0 0 1 0
"""  # fx b = 9 + 39.6 = 48.6 px m


@pytest.fixture(scope="module")
def testing(module_tmp):
    root = module_tmp
    testing, stereo = root / "testing", root / "stereo"
    for folder in (testing / "image_2", testing / "calib_cam_to_cam", stereo):
        folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in (0, 1):
        for suffix in ("_10", "_11"):
            frame = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
            cv2.imwrite(str(testing / "image_2" / f"{index:06d}{suffix}.png"),
                        cv2.GaussianBlur(frame, (5, 5), 2))
            disparity = np.linspace(2, 12, W)[None].repeat(H, 0) * 256  # 4 .. 24 m
            disparity[:3, :5] = 0  # no disparity: no depth
            cv2.imwrite(str(stereo / f"{index:06d}{suffix}.png"), disparity.astype(np.uint16))
        (testing / "calib_cam_to_cam" / f"{index:06d}.txt").write_text(CALIB)
    return testing, stereo


def _cfg(tmp_path):
    cfg = tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 0  # no resize
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.MOTION_RCNN.MOVING_THRESHOLD = -1.0  # random weights: every motion is applied
    weights = tmp_path / "model.pth"
    torch.save({"model": MotionPredictor(cfg).model.state_dict()}, weights)
    cfg.MODEL.WEIGHTS = str(weights)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.dump())
    return cfg, str(cfg_file)


def decode_flow(path):
    """The devkit's io_flow.h reading: valid = B > 0, f = (value - 2^15) / 64."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # B, G, R = valid, v, u
    assert raw.dtype == np.uint16 and raw.shape == (H, W, 3)
    flow = (raw[..., [2, 1]].astype(np.float64) - 2 ** 15) / 64.0
    return flow, raw[..., 0] > 0


def test_submission_reads_back_as_the_predictions(testing, tmp_path):
    testing_dir, stereo = testing
    cfg, cfg_file = _cfg(tmp_path)
    out_dir = tmp_path / "submission"
    written = kitti_submission.main(["--config-file", cfg_file, "--input-dir", str(testing_dir),
                                     "--disparity", str(stereo), "--disparity-next", str(stereo),
                                     "--output", str(out_dir)])
    assert written == {"flow": 2, "disp_0": 2, "disp_1": 2}
    for folder in ("flow", "disp_0", "disp_1"):
        assert sorted(os.listdir(out_dir / folder)) == ["000000_10.png", "000001_10.png"]
    K, baseline = read_kitti_calib(testing_dir / "calib_cam_to_cam" / "000001.txt")
    fb = K[0, 0] * baseline
    assert fb == pytest.approx(48.6)
    image = cv2.imread(str(testing_dir / "image_2" / "000001_10.png"))
    image_next = cv2.imread(str(testing_dir / "image_2" / "000001_11.png"))
    with np.errstate(divide="ignore"):
        depth, depth_next = (
            fb / (cv2.imread(str(stereo / f"000001{s}.png"), cv2.IMREAD_UNCHANGED) / 256.0)
            for s in ("_10", "_11"))
    depth[~np.isfinite(depth)] = 0
    depth_next[~np.isfinite(depth_next)] = 0
    out = MotionPredictor(cfg)(image, image_next, depth, K, depth_next)
    flow, valid = decode_flow(out_dir / "flow" / "000001_10.png")
    np.testing.assert_array_equal(valid, out["flow_valid"].numpy())
    assert valid.sum() == H * W - 15
    expected = out["flow"].permute(1, 2, 0).double().numpy()
    assert np.abs(flow - expected)[valid].max() <= 1 / 128 + 1e-6  # rounded to 1/64 px
    assert np.abs(expected[valid]).max() > 4 / 64  # a real flow, not zeros
    assert (flow[~valid] == -512).all()  # invalid pixels are (0, 0, 0)
    z = out["points"][2].double().numpy()
    z_next = z + out["scene_flow"][2].double().numpy()
    for folder, depth_t in (("disp_0", z), ("disp_1", z_next)):
        raw = cv2.imread(str(out_dir / folder / "000001_10.png"), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and raw.shape == (H, W)
        has = np.isfinite(depth_t)
        np.testing.assert_array_equal(raw > 0, has)
        np.testing.assert_allclose(raw[has] / 256.0, fb / depth_t[has], atol=1 / 512 + 1e-9)
    assert not [p for f in ("flow", "disp_0", "disp_1") for p in os.listdir(out_dir / f)
                if ".tmp" in p]


def test_flow_model_without_disparities(testing, tmp_path):
    """FlowNetS needs no depth: flow/ only."""
    testing_dir, _ = testing
    cfg_file = os.path.join(REPO, "configs", "synthetic", "flownets_cpu.yaml")
    written = kitti_submission.main(["--config-file", cfg_file, "--input-dir", str(testing_dir),
                                     "--output", str(tmp_path / "s"), "--max-pairs", "1",
                                     "--opts", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "0"])
    assert written == {"flow": 1, "disp_0": 0, "disp_1": 0}
    assert os.listdir(tmp_path / "s") == ["flow"]
    _, valid = decode_flow(tmp_path / "s" / "flow" / "000000_10.png")
    assert valid.all()


def test_missing_disparity_file_is_named(testing, tmp_path):
    testing_dir, stereo = testing
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "000000_10.png").write_bytes((stereo / "000000_10.png").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"partial/000001_10\.png"):
        kitti_submission.main(["--config-file", "unused.yaml", "--input-dir", str(testing_dir),
                               "--disparity", str(partial), "--output", str(tmp_path / "s")])
