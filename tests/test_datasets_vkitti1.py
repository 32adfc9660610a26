"""Virtual KITTI 1.3.1 loader on a hand-made 6x4 fixture, expected values worked out here."""
import math
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from motion_rcnn_d2.data import formats
from motion_rcnn_d2.data.datasets import load_vkitti1

W, H = 6, 4
COLOURS = {"Terrain": (210, 0, 200), "Car:0": (200, 100, 50), "Van:1": (10, 20, 30),
           "Car:2": (60, 70, 80), "Truck:3": (90, 100, 110)}
# (frame, tid, label, occupr, orig_label, moving, x3d, y3d, z3d, ry)
ROWS = [
    (0, 0, "Car", 0.8, "Car", 1, 1.0, 1.5, 10.0, 0.0),
    (0, 1, "DontCare", 0.5, "Van", 0, 3.0, 1.5, 20.0, 0.0),   # gone at frame 1
    (0, 2, "Car", 0.05, "Car", 1, -2.0, 1.5, 8.0, 0.0),       # occupancy <= 0.1
    (0, 3, "Truck", 0.9, "Truck", 1, 2.0, 1.5, 15.0, 0.0),    # class not kept
    (1, 0, "DontCare", 0.7, "Car", 0, 1.0, 1.5, 10.0, 0.1),   # orig_label is what counts
    (1, 2, "Car", 0.5, "Car", 1, -2.0, 1.5, 8.0, 0.0),        # gone at frame 2
    (1, 3, "Truck", 0.9, "Truck", 1, 2.0, 1.5, 15.0, 0.0),
    (2, 0, "Car", 0.7, "Car", 0, 1.0, 1.5, 10.0, 0.1),
]
# pixels (row, col) of each object per frame
PIXELS = {
    0: {"Car:0": [(r, c) for r in (1, 2) for c in (1, 2, 3)], "Van:1": [(0, 5)], "Car:2": [(3, 0)],
        "Truck:3": [(3, 5)]},
    1: {"Car:0": [(r, c) for r in (0, 1) for c in (2, 3, 4)], "Car:2": [(3, 0)],
        "Truck:3": [(3, 5)]},
    2: {"Car:0": [(2, 2)]},
}
S, C = math.sin(0.05), math.cos(0.05)
EXTRINSICS = {
    0: np.eye(4),
    1: np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -1.0], [0, 0, 0, 1]]),
    2: np.array([[C, 0, S, 0], [0, 1, 0, 0], [-S, 0, C, -1.0], [0, 0, 0, 1]]),
}


def _write_fixture(root):
    p = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    for kind in ("rgb", "depthgt", "flowgt", "scenegt"):
        os.makedirs(p(f"vkitti_1.3.1_{kind}", "0001", "clone"))
    for kind in ("motgt", "extrinsicsgt"):
        os.makedirs(p(f"vkitti_1.3.1_{kind}"))
    rng = np.random.default_rng(0)
    for frame in range(3):
        name = f"{frame:05d}.png"
        image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        cv2.imwrite(p("vkitti_1.3.1_rgb", "0001", "clone", name), image)
        depth = np.full((H, W), 1000 + frame, np.uint16)
        depth[0, 0] = 65535  # sky
        cv2.imwrite(p("vkitti_1.3.1_depthgt", "0001", "clone", name), depth)
        scene = np.empty((H, W, 3), np.uint8)
        scene[:] = COLOURS["Terrain"]
        for key, pixels in PIXELS[frame].items():
            for r, c in pixels:
                scene[r, c] = COLOURS[key]
        cv2.imwrite(p("vkitti_1.3.1_scenegt", "0001", "clone", name), scene[..., ::-1])
        if frame < 2:
            formats.write_vkitti_flow_png(p("vkitti_1.3.1_flowgt", "0001", "clone", name),
                                          np.zeros((H, W, 2)), np.ones((H, W), bool))
    with open(p("vkitti_1.3.1_scenegt", "0001_clone_scenegt_rgb_encoding.txt"), "w") as f:
        f.write("Category(:id) r g b\n")
        f.writelines(f"{k} {r} {g} {b}\n" for k, (r, g, b) in COLOURS.items())
    with open(p("vkitti_1.3.1_extrinsicsgt", "0001_clone.txt"), "w") as f:
        f.write("frame r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1\n")
        for frame, e in EXTRINSICS.items():
            f.write(f"{frame} " + " ".join(f"{v:.12g}" for v in e.ravel()) + "\n")
    with open(p("vkitti_1.3.1_motgt", "0001_clone.txt"), "w") as f:
        f.write("frame tid label truncated occluded alpha l t r b w3d h3d l3d x3d y3d z3d ry rx rz "
                "truncr occupr orig_label moving model color\n")
        for frame, tid, label, occ, orig, moving, x, y, z, ry in ROWS:
            f.write(f"{frame} {tid} {label} 0 0 -1.5 0 0 5 3 1.8 1.5 4.2 {x} {y} {z} {ry} 0 0 0 "
                    f"{occ} {orig} {moving} Sedan4Door Black\n")
    return root


@pytest.fixture
def root(tmp_path):
    return _write_fixture(str(tmp_path))


def test_pairs_objects_and_motions_by_hand(root):
    dicts = load_vkitti1(root, dataset_name="vk1")
    assert [d["image_id"] for d in dicts] == ["0001/clone/00000", "0001/clone/00001"]
    d0, d1 = dicts
    assert d0["file_name"] == os.path.join(root, "vkitti_1.3.1_rgb", "0001", "clone", "00000.png")
    assert d0["depth_file_name_next"] == os.path.join(root, "vkitti_1.3.1_depthgt", "0001", "clone",
                                                      "00001.png")
    assert d1["flow_file_name"] == os.path.join(root, "vkitti_1.3.1_flowgt", "0001", "clone",
                                                "00001.png")
    assert (d0["height"], d0["width"]) == (H, W)
    assert d0["intrinsics"] == [[725.0, 0.0, 620.5], [0.0, 725.0, 187.0], [0.0, 0.0, 1.0]]

    # pair 0: camera moved 1 m forward, no rotation
    np.testing.assert_allclose(d0["camera_motion"]["rotation"], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(d0["camera_motion"]["translation"], [0, 0, -1], atol=1e-12)
    assert d0["camera_motion"]["moving"] is True
    # only tid 0 survives (tid 1 gone at t+1, tid 2 occupancy 0.05, tid 3 a Truck)
    (a,) = d0["annotations"]
    assert (a["track_id"], a["category_id"], a["iscrowd"]) == (0, 0, 0)
    assert a["bbox"] == [1.0, 1.0, 4.0, 3.0]
    expected_mask = np.zeros((H, W), np.uint8)
    expected_mask[1:3, 1:4] = 1
    np.testing.assert_array_equal(mask_util.decode(a["segmentation"]), expected_mask)
    # same place in camera 1 as in camera 0, turned by ry = 0.1: R = Ry(0.1), t = (0, 0, 1)
    c, s = math.cos(0.1), math.sin(0.1)
    np.testing.assert_allclose(a["motion"]["rotation"], [[c, 0, s], [0, 1, 0], [-s, 0, c]],
                               atol=1e-12)
    np.testing.assert_allclose(a["motion"]["translation"], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(a["motion"]["pivot"], [1, 1.5, 10], atol=1e-12)
    assert a["motion"]["moving"] is True

    # pair 1: camera yaws 0.05; t_cam = t_e2 - R_cam t_e1 = (0,0,-1) - (-sin, 0, -cos)
    np.testing.assert_allclose(d1["camera_motion"]["rotation"], [[C, 0, S], [0, 1, 0], [-S, 0, C]],
                               atol=1e-12)
    np.testing.assert_allclose(d1["camera_motion"]["translation"], [S, 0, C - 1], atol=1e-12)
    (b,) = d1["annotations"]  # tid 2 is gone at frame 2
    assert b["track_id"] == 0 and b["bbox"] == [2.0, 0.0, 5.0, 2.0]
    assert b["motion"]["moving"] is False  # still: identity, pivot kept
    np.testing.assert_array_equal(b["motion"]["rotation"], np.eye(3))
    np.testing.assert_array_equal(b["motion"]["translation"], [0, 0, 0])
    np.testing.assert_allclose(b["motion"]["pivot"], [1, 1.5, 10])


def test_occupancy_and_classes_configurable(root):
    d0 = load_vkitti1(root, classes=("Car", "Van", "Truck"), min_occupancy=0.01)[0]
    kept = [(a["track_id"], a["category_id"]) for a in d0["annotations"]]
    assert kept == [(0, 0), (2, 0), (3, 2)]
    assert d0["annotations"][1]["bbox"] == [0.0, 3.0, 1.0, 4.0]


def test_malformed_motgt_row_names_file_and_line(root):
    path = os.path.join(root, "vkitti_1.3.1_motgt", "0001_clone.txt")
    lines = open(path).read().splitlines()
    lines[3] = lines[3].replace(" 0.05 ", " zero ")
    open(path, "w").write("\n".join(lines) + "\n")
    with pytest.raises(formats.DataFormatError, match=r"0001_clone\.txt:4: column 'occupr'"):
        load_vkitti1(root)
    lines[3] = "0 2 Car 0 0"
    open(path, "w").write("\n".join(lines) + "\n")
    with pytest.raises(formats.DataFormatError, match=r"0001_clone\.txt:4: malformed row"):
        load_vkitti1(root)


def test_missing_colour_names_files_and_line(root):
    enc = os.path.join(root, "vkitti_1.3.1_scenegt", "0001_clone_scenegt_rgb_encoding.txt")
    lines = [line for line in open(enc) if not line.startswith("Car:0 ")]
    open(enc, "w").writelines(lines)
    with pytest.raises(ValueError, match=r"'Car:0'.*0001_clone\.txt.*line 2.*encoding\.txt"):
        load_vkitti1(root)


def test_missing_file_names_path_and_dataset(root):
    missing = os.path.join(root, "vkitti_1.3.1_rgb", "0001", "clone", "00002.png")
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=f"vk1.*{missing}"):
        load_vkitti1(root, dataset_name="vk1")


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'vk1'.*vkitti_1\.3\.1_rgb.*MOTION_RCNN_DATASETS"):
        load_vkitti1(str(tmp_path), dataset_name="vk1")
