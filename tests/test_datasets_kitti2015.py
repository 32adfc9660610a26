"""KITTI 2015 loader (and its mapping) on a hand-made 6x4 fixture with values worked out here."""
import logging
import os
import shutil

import cv2
import numpy as np
import pytest

from motion_rcnn_d2.data import formats
from motion_rcnn_d2.data.calibration import read_calib, read_kitti_calib
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


# The real layout and numbers of KITTI's calib_cam_to_cam (2011_09_26, the date of KITTI 2015's
# sequences), camera 0 and 1 entries left out: baseline (44.85728 + 339.5242) / 721.5377 m.
REAL_CALIB = """calib_time: 09-Jan-2012 13:57:47
corner_dist: 9.950000e-02
S_02: 1.392000e+03 5.120000e+02
K_02: 9.597910e+02 0.000000e+00 6.960217e+02 0.000000e+00 9.569251e+02 2.241806e+02 0.000000e+00 0.000000e+00 1.000000e+00
D_02: -3.691481e-01 1.968681e-01 1.353473e-03 5.677587e-04 -6.770705e-02
R_02: 9.999758e-01 -5.267463e-03 -4.552439e-03 5.251945e-03 9.999804e-01 -3.413835e-03 4.570332e-03 3.389843e-03 9.999838e-01
T_02: 5.956621e-02 2.900141e-04 2.577209e-03
S_rect_02: 1.242000e+03 3.750000e+02
R_rect_02: 9.998817e-01 1.511453e-02 -2.841595e-03 -1.511724e-02 9.998853e-01 -9.338510e-04 2.827154e-03 9.766976e-04 9.999955e-01
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
S_03: 1.392000e+03 5.120000e+02
K_03: 9.037596e+02 0.000000e+00 6.957519e+02 0.000000e+00 9.019653e+02 2.242509e+02 0.000000e+00 0.000000e+00 1.000000e+00
P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03
"""


def _write_fixture(root, split="training", noc_disparities=False):
    """Two pairs; noc_disparities: also disp_noc_0 / disp_noc_1 (GT at (1,1) only in frame 0's
    disp_noc_0, so that the noc figures differ from the occ ones)."""
    train = os.path.join(root, split)
    noc_folders = ("disp_noc_0", "disp_noc_1") if noc_disparities else ()
    folders = ("image_2", "calib_cam_to_cam") + (
        ("flow_occ", "flow_noc", "disp_occ_0", "disp_occ_1", "obj_map") + noc_folders
        if split == "training" else ())
    for folder in folders:
        os.makedirs(os.path.join(train, folder))
    rng = np.random.default_rng(0)
    for index in (0, 1):
        name = f"{index:06d}_10.png"
        for suffix in ("_10", "_11"):
            cv2.imwrite(os.path.join(train, "image_2", f"{index:06d}{suffix}.png"),
                        rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        with open(os.path.join(train, "calib_cam_to_cam", f"{index:06d}.txt"), "w") as f:
            f.write(CALIB)
        if split != "training":
            continue
        disp = np.zeros((H, W), np.uint16)
        disp[1, 1] = 50 * 256
        cv2.imwrite(os.path.join(train, "disp_occ_0", name), disp)
        cv2.imwrite(os.path.join(train, "disp_occ_1", name), disp // 2)
        if noc_disparities:  # (1,1) occluded in pair 1
            cv2.imwrite(os.path.join(train, "disp_noc_0", name), disp * (index == 0))
            cv2.imwrite(os.path.join(train, "disp_noc_1", name), disp // 2)
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
    assert d["obj_map_file_name"] == os.path.join(train, "obj_map", "000000_10.png")
    assert d["disparity_gt_file_name"] == d["depth_file_name"]
    assert d["disparity_next_gt_file_name"] == os.path.join(train, "disp_occ_1", "000000_10.png")
    assert "depth_file_name_next" not in d
    assert d["intrinsics"] == [[700, 0, 3], [0, 700, 2], [0, 0, 1]]
    assert d["disparity_to_depth"] == pytest.approx(385.0)
    assert (d["height"], d["width"], d["flow_format"]) == (H, W, "kitti")
    assert "camera_motion" not in d
    assert [(a["track_id"], a["category_id"], a["bbox"]) for a in d["annotations"]] == [
        (1, 0, [0.0, 0.0, 2.0, 1.0]), (2, 0, [5.0, 3.0, 6.0, 4.0])]
    assert all("motion" not in a for a in d["annotations"])
    assert "disparity_noc_gt_file_name" not in d  # the optional noc disparity folders


def test_loader_names_the_noc_disparities_where_they_exist(tmp_path):
    root = _write_fixture(str(tmp_path), noc_disparities=True)
    d = load_kitti2015(root)[1]
    train = os.path.join(root, "training")
    assert d["disparity_noc_gt_file_name"] == os.path.join(train, "disp_noc_0", "000001_10.png")
    assert d["disparity_next_noc_gt_file_name"] == os.path.join(train, "disp_noc_1",
                                                                "000001_10.png")
    shutil.rmtree(os.path.join(train, "disp_noc_1"))  # each folder on its own
    d = load_kitti2015(root)[1]
    assert "disp_noc_0" in d["disparity_noc_gt_file_name"]
    assert "disparity_next_noc_gt_file_name" not in d
    os.remove(d["disparity_noc_gt_file_name"])  # a folder that exists must have every pair's file
    with pytest.raises(FileNotFoundError, match="disp_noc_0.*000001_10.png"):
        load_kitti2015(root)


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
    os.remove(path)
    with pytest.raises(FileNotFoundError, match=r"'kitti2015'.*calib_cam_to_cam/000001\.txt"):
        load_kitti2015(root)


def test_real_calibration_layout(tmp_path):
    path = tmp_path / "calib_cam_to_cam.txt"
    path.write_text(REAL_CALIB)
    K, baseline = read_kitti_calib(path)
    np.testing.assert_array_equal(K, [[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1]])
    assert baseline == pytest.approx((44.85728 + 339.5242) / 721.5377, rel=1e-12)
    assert 0.532 < baseline < 0.533  # KITTI's stereo rig: 0.54 m nominal
    np.testing.assert_array_equal(read_calib(path), K)  # demo.py's --calib reads it too


def test_disparity_folder_of_a_stereo_method(root, caplog):
    """A stereo method's disparities (t and t+1) replace the GT ones as the depth source."""
    train = os.path.join(root, "training")
    stereo = os.path.join(root, "stereo_out")
    os.makedirs(stereo)
    for index in (0, 1):
        for suffix, value in (("_10", 77 * 256), ("_11", 35 * 256)):
            disp = np.full((H, W), value, np.uint16)
            disp[0, 0] = 0  # invalid
            cv2.imwrite(os.path.join(stereo, f"{index:06d}{suffix}.png"), disp)
    with caplog.at_level(logging.INFO):
        d = load_kitti2015(root, disparity_dir=stereo, disparity_next_dir=stereo)[1]
    assert f"depth of frame t = fx b / d from the disparities d (given) in '{stereo}'" in caplog.text
    assert d["depth_file_name"] == os.path.join(stereo, "000001_10.png")
    assert d["depth_file_name_next"] == os.path.join(stereo, "000001_11.png")
    assert d["disparity_gt_file_name"] == os.path.join(train, "disp_occ_0", "000001_10.png")
    mapper = MotionDatasetMapper(is_train=False, augmentations=[], load_depth_next=True)
    out = mapper(d)
    depth, depth_next = out["depth"][0].numpy(), out["depth_next"][0].numpy()
    assert depth[0, 0] == 0 and depth_next[0, 0] == 0
    assert depth[2, 3] == pytest.approx(385 / 77) and depth_next[2, 3] == pytest.approx(385 / 35)
    with caplog.at_level(logging.INFO):
        load_kitti2015(root)
    assert "(KITTI's sparse ground truth) in" in caplog.text
    os.remove(os.path.join(stereo, "000001_11.png"))
    with pytest.raises(FileNotFoundError, match=r"'kitti2015'.*stereo_out/000001_11\.png"):
        load_kitti2015(root, disparity_dir=stereo, disparity_next_dir=stereo)
    with pytest.raises(FileNotFoundError, match=r"missing directory.*training/nowhere"):
        load_kitti2015(root, disparity_dir="nowhere")


def test_testing_split(tmp_path):
    root = _write_fixture(str(tmp_path), split="testing")
    dicts = load_kitti2015(root, split="testing")
    assert [d["image_id"] for d in dicts] == ["000000", "000001"]
    d = dicts[0]
    assert (d["height"], d["width"], d["disparity_to_depth"]) == (H, W, pytest.approx(385.0))
    assert not any(k in d for k in ("depth_file_name", "flow_file_name", "annotations"))


def test_missing_file_names_path_and_dataset(root):
    missing = os.path.join(root, "training", "flow_noc", "000001_10.png")
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=f"'kitti_x'.*{missing}"):
        load_kitti2015(root, dataset_name="kitti_x")


def test_disparity_png_writer(tmp_path):
    """value = round(d * 256), at least 1 where valid, 0 where d <= 0 or not finite; the file is
    renamed into place (no temporary file left)."""
    path = str(tmp_path / "out" / "000000_10.png")
    formats.write_kitti_disparity_png(path, np.array([[0.0, 0.001, 12.34567],
                                                      [np.nan, -1.0, 255.99]]))
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, [[0, 1, 3160], [0, 0, 65533]])
    np.testing.assert_array_equal(formats.read_kitti_disparity_png(path), raw / 256.0)
    assert os.listdir(tmp_path / "out") == ["000000_10.png"]
