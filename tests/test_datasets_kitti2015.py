"""KITTI 2015 loader (and its mapping) on a hand-made 6x4 fixture with values worked out here."""
import os

import cv2
import numpy as np
import pytest

from motion_rcnn_d2.data import formats
from motion_rcnn_d2.data.datasets import load_kitti2015
from motion_rcnn_d2.data.mapper import MotionDatasetMapper

W, H = 6, 4
# fx = 700, P_rect_02[0,3] = 70, P_rect_03[0,3] = -315 -> baseline (70 + 315) / 700 = 0.55 m,
# fx * baseline = 385 px m; a disparity of 50 px is a depth of 385 / 50 = 7.7 m.
CALIB = """calib_time: 09-Jan-2012 13:57:47
S_02: 1.392000e+03 5.120000e+02
P_rect_02: 700 0 3 70 0 700 2 0 0 0 1 0
P_rect_03: 700 0 3 -315 0 700 2 0 0 0 1 0
"""


def _write_fixture(root):
    train = os.path.join(root, "training")
    for folder in ("image_2", "flow_occ", "flow_noc", "disp_occ_0", "obj_map", "calib_cam_to_cam"):
        os.makedirs(os.path.join(train, folder))
    rng = np.random.default_rng(0)
    for index in (0, 1):
        name = f"{index:06d}_10.png"
        for suffix in ("_10", "_11"):
            cv2.imwrite(os.path.join(train, "image_2", f"{index:06d}{suffix}.png"),
                        rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        disp = np.zeros((H, W), np.uint16)
        disp[1, 1] = 50 * 256
        cv2.imwrite(os.path.join(train, "disp_occ_0", name), disp)
        ids = np.zeros((H, W), np.uint8)
        ids[0, 0:2] = 1
        ids[3, 5] = 2
        cv2.imwrite(os.path.join(train, "obj_map", name), ids)
        flow = np.zeros((H, W, 2))
        flow[1, 1] = (1.5, -0.25)
        occ = np.zeros((H, W), bool)
        occ[1, 1] = occ[2, 2] = True
        formats.write_kitti_flow_png(os.path.join(train, "flow_occ", name), flow, occ)
        noc = occ & (np.arange(W) < 2)
        formats.write_kitti_flow_png(os.path.join(train, "flow_noc", name), flow, noc)
        with open(os.path.join(train, "calib_cam_to_cam", f"{index:06d}.txt"), "w") as f:
            f.write(CALIB)
    return root


@pytest.fixture
def root(tmp_path):
    return _write_fixture(str(tmp_path))


def test_loader_by_hand(root):
    dicts = load_kitti2015(root)
    assert [d["image_id"] for d in dicts] == ["000000", "000001"]
    d = dicts[0]
    train = os.path.join(root, "training")
    assert d["file_name"] == os.path.join(train, "image_2", "000000_10.png")
    assert d["file_name_next"] == os.path.join(train, "image_2", "000000_11.png")
    assert d["depth_file_name"] == os.path.join(train, "disp_occ_0", "000000_10.png")
    assert d["flow_noc_file_name"] == os.path.join(train, "flow_noc", "000000_10.png")
    assert d["intrinsics"] == [[700, 0, 3], [0, 700, 2], [0, 0, 1]]
    assert d["disparity_to_depth"] == pytest.approx(385.0)
    assert (d["height"], d["width"], d["flow_format"]) == (H, W, "kitti")
    assert "camera_motion" not in d
    assert [(a["track_id"], a["category_id"], a["bbox"]) for a in d["annotations"]] == [
        (1, 0, [0.0, 0.0, 2.0, 1.0]), (2, 0, [5.0, 3.0, 6.0, 4.0])]
    assert all("motion" not in a for a in d["annotations"])


def test_mapping_depth_from_disparity_and_flow(root):
    d = load_kitti2015(root)[0]
    out = MotionDatasetMapper(is_train=False, augmentations=[])(d)
    depth = out["depth"][0].numpy()
    assert depth[1, 1] == pytest.approx(7.7)
    assert (np.delete(depth.ravel(), 1 * W + 1) == 0).all()  # disparity 0: invalid, never a point
    assert "depth_next" not in out
    np.testing.assert_array_equal(out["flow"][:, 1, 1].numpy(), [1.5, -0.25])
    assert out["flow_valid"].sum() == 2 and out["flow_valid"][2, 2]
    assert out["flow_noc_valid"].sum() == 1 and out["flow_noc_valid"][1, 1]
    inst = out["instances"]
    np.testing.assert_array_equal(inst.gt_boxes.tensor.numpy(), [[0, 0, 2, 1], [5, 3, 6, 4]])
    assert not inst.has("gt_rotations") and "camera_motion" not in out


def test_calibration_errors(root):
    path = os.path.join(root, "training", "calib_cam_to_cam", "000001.txt")
    with open(path, "w") as f:
        f.write(CALIB.replace("P_rect_02: 700 0 3 70 ", "P_rect_02: 700 0 3 "))
    with pytest.raises(formats.DataFormatError, match=r"000001\.txt:3: 'P_rect_02' needs 12"):
        load_kitti2015(root)
    with open(path, "w") as f:
        f.write(CALIB.splitlines()[2] + "\n")
    with pytest.raises(formats.DataFormatError, match=r"000001\.txt.*no 'P_rect_03'"):
        load_kitti2015(root)


def test_missing_file_names_path_and_dataset(root):
    missing = os.path.join(root, "training", "flow_noc", "000001_10.png")
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=f"'kitti_x'.*{missing}"):
        load_kitti2015(root, dataset_name="kitti_x")
