"""3D scene flow out of Motion R-CNN and SfM-Net: points at t and their displacement project to
exactly the 2D flow the model outputs; demo.py writes them as .npy and a coloured .ply."""
import os
import sys

import numpy as np
import pytest
import torch

from motion_rcnn_d2 import MotionPredictor
from motion_rcnn_d2.data import formats
from motion_rcnn_d2.data.datasets import load_vkitti2_sequence
from motion_rcnn_d2.data.synthetic import generate_world
from motion_rcnn_d2.utils.scene_flow_files import write_scene_flow

from motion_rcnn_inputs import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import demo  # noqa: E402


@pytest.fixture(scope="module")
def pair(module_tmp):
    root = module_tmp
    (seq,) = generate_world(str(root), sequences=1, frames=2, width=128, height=48, seed=5,
                            progress=False)
    record = load_vkitti2_sequence(seq)[0]
    depth = formats.read_depth_png(record["depth_file_name"])
    depth[:5, :7] = 0  # invalid depth: no point, no scene flow
    depth[10, 20] = np.nan
    return (seq, formats.read_image(record["file_name"]),
            formats.read_image(record["file_name_next"]), depth, np.asarray(record["intrinsics"]))


def motion_rcnn_cfg():
    cfg = tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 48  # no resize (the frames are 128x48)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.MOTION_RCNN.MOVING_THRESHOLD = -1.0  # random weights: every motion is applied
    return cfg


def sfmnet_cfg():
    from detectron2.config import get_cfg

    from motion_rcnn_d2 import add_motion_rcnn_config

    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "synthetic", "sfmnet_sup_cpu.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.SFMNET.BASE_CHANNELS = 8
    return cfg


def check_projection(out, depth, K, resized):
    """Independent float64 projection of P + scene flow with K, against the output flow.
    Without a resize the model composes on the given depth itself: NaN exactly where it is
    invalid, Z = d elsewhere (with one, on that depth resized to the input and back)."""
    h, w = depth.shape
    points = out["points"].double().numpy()
    moved = points + out["scene_flow"].double().numpy()
    invalid = ~np.isfinite(points).all(axis=0)
    assert np.isnan(moved[:, invalid]).all() and np.isfinite(moved[:, ~invalid]).all()
    if not resized:
        np.testing.assert_array_equal(invalid, ~(np.isfinite(depth) & (depth > 0)))
        np.testing.assert_allclose(points[2][~invalid], depth[~invalid], rtol=1e-6)  # Z = d
    assert 0 < invalid.sum() < 0.1 * invalid.size
    valid = out["flow_valid"].numpy()
    assert valid.sum() == (~invalid).sum()  # every point with depth projects here
    x, y, z = moved
    u = K[0, 0] * x / z + K[0, 1] * y / z + K[0, 2]
    v = K[1, 1] * y / z + K[1, 2]
    grid_v, grid_u = np.mgrid[0:h, 0:w]
    flow = out["flow"].double().numpy()
    np.testing.assert_allclose(u[valid] - grid_u[valid], flow[0][valid], atol=2e-3)
    np.testing.assert_allclose(v[valid] - grid_v[valid], flow[1][valid], atol=2e-3)
    displacement = np.linalg.norm(out["scene_flow"].numpy()[:, valid], axis=0)
    return displacement


def test_motion_rcnn_scene_flow_projects_to_its_flow(pair):
    _, image, image_next, depth, K = pair
    out = MotionPredictor(motion_rcnn_cfg())(image, image_next, depth, K)
    assert out["points"].shape == out["scene_flow"].shape == (3,) + depth.shape
    displacement = check_projection(out, depth, K, resized=False)
    assert displacement.max() > 0.01  # real motions, not a trivial identity


def test_sfmnet_scene_flow_projects_to_its_flow(pair):
    _, image, image_next, depth, K = pair
    cfg = sfmnet_cfg()
    cfg.MODEL.SFMNET.USE_GT_DEPTH = True
    cfg.INPUT.MIN_SIZE_TEST = 32  # resized input: flow and 3D composed again at full size
    out = MotionPredictor(cfg)(image, image_next, depth, K)
    assert check_projection(out, depth, K, resized=True).max() > 0


def test_demo_writes_points_scene_flow_and_ply(pair, tmp_path):
    seq, image, image_next, depth, K = pair
    cfg = motion_rcnn_cfg()
    weights = tmp_path / "model.pth"
    torch.save({"model": MotionPredictor(cfg).model.state_dict()}, weights)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.dump())
    out_dir = tmp_path / "demo"
    (name,) = demo.main(["--config-file", str(cfg_file), "--sequence", seq, "--output",
                         str(out_dir), "--opts", "MODEL.WEIGHTS", str(weights)])
    for suffix in ("_points.npy", "_scene_flow.npy", "_points.ply"):
        assert (out_dir / (name + suffix)).is_file()
    points = np.load(out_dir / f"{name}_points.npy")
    flow3d = np.load(out_dir / f"{name}_scene_flow.npy")
    assert points.shape == flow3d.shape == image.shape and points.dtype == np.float32
    valid = np.isfinite(points).all(axis=2)
    assert valid.sum() > 0.9 * valid.size
    ply = read_ply_independently(out_dir / f"{name}_points.ply")
    assert len(ply) == valid.sum()
    np.testing.assert_array_equal(np.stack([ply["x"], ply["y"], ply["z"]], 1), points[valid])
    np.testing.assert_array_equal(np.stack([ply["fx"], ply["fy"], ply["fz"]], 1), flow3d[valid])
    np.testing.assert_array_equal(np.stack([ply["r"], ply["g"], ply["b"]], 1),
                                  image[valid][:, ::-1])  # RGB from the BGR frame
    assert not [p for p in os.listdir(out_dir) if ".tmp" in p]


def read_ply_independently(path):
    """Parse the PLY header line by line (as a viewer would) and read the binary body."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    count = int(next(line for line in lines if line.startswith("element vertex")).split()[2])
    props = [line.split()[1:] for line in lines if line.startswith("property")]
    assert props == [["float", "x"], ["float", "y"], ["float", "z"], ["uchar", "red"],
                     ["uchar", "green"], ["uchar", "blue"], ["float", "flow_x"],
                     ["float", "flow_y"], ["float", "flow_z"]]
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"),
                      ("b", "u1"), ("fx", "<f4"), ("fy", "<f4"), ("fz", "<f4")])
    assert len(data) - end == count * 27 == count * dtype.itemsize
    return np.frombuffer(data[end:], dtype=dtype)


def test_flownets_output_has_no_3d_result(tmp_path):
    assert write_scene_flow(str(tmp_path / "x"), {"flow": torch.zeros(2, 4, 5)},
                            np.zeros((4, 5, 3), np.uint8)) == []
    assert os.listdir(tmp_path) == []
