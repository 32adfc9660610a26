"""Virtual KITTI 2 loader on the synthetic world (written in that layout, exact ground truth)."""
import os
import shutil

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from motion_rcnn_d2.data import formats
from motion_rcnn_d2.data.datasets import load_vkitti2
from motion_rcnn_d2.data.synthetic import generate_world, pair_motions, sample_scene, sequence_rng
from motion_rcnn_d2.geometry import compose_flow

W, H, FRAMES, SEED = 128, 48, 3, 0


@pytest.fixture(scope="module")
def world(module_tmp):
    root = module_tmp
    generate_world(root, sequences=1, frames=FRAMES, width=W, height=H, seed=SEED, progress=False)
    return str(root)


def _copy(world, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(world, target)
    return target, target / "Scene01" / "clone"


def test_pairs_paths_and_intrinsics(world):
    dicts = load_vkitti2(world, min_visible_pixels=1)
    assert [d["image_id"] for d in dicts] == ["Scene01/clone/00000", "Scene01/clone/00001"]
    seq = os.path.join(world, "Scene01", "clone", "frames")
    d = dicts[1]
    assert d["file_name"] == os.path.join(seq, "rgb", "Camera_0", "rgb_00001.jpg")
    assert d["file_name_next"] == os.path.join(seq, "rgb", "Camera_0", "rgb_00002.jpg")
    assert d["depth_file_name_next"] == os.path.join(seq, "depth", "Camera_0", "depth_00002.png")
    assert d["flow_file_name"] == os.path.join(seq, "forwardFlow", "Camera_0", "flow_00001.png")
    assert (d["height"], d["width"]) == (H, W)
    scene = sample_scene(sequence_rng(SEED, 0), FRAMES, W, H)
    np.testing.assert_allclose(d["intrinsics"], scene.intrinsics, rtol=1e-8)


def test_motions_match_the_generator(world):
    """Loader motions (from the text files' camera-space columns) equal the generator's exact
    motions (from its world poses): checks the rotation convention Rz(rz) Rx(rx) Ry(ry)."""
    scene = sample_scene(sequence_rng(SEED, 0), FRAMES, W, H)
    for frame, d in enumerate(load_vkitti2(world, min_visible_pixels=1)):
        truth = pair_motions(scene, frame)
        np.testing.assert_allclose(d["camera_motion"]["rotation"], truth["camera_rotation"],
                                   atol=1e-8)
        np.testing.assert_allclose(d["camera_motion"]["translation"], truth["camera_translation"],
                                   atol=1e-8)
        assert d["annotations"]
        for a in d["annotations"]:
            k = a["track_id"]
            assert scene.objects[k].track_id == k
            assert a["motion"]["moving"] == bool(truth["moving"][k])
            np.testing.assert_allclose(a["motion"]["rotation"], truth["rotations"][k], atol=1e-7)
            np.testing.assert_allclose(a["motion"]["translation"], truth["translations"][k],
                                       atol=1e-7)
            np.testing.assert_allclose(a["motion"]["pivot"], truth["pivots"][k], atol=1e-7)
            assert a["category_id"] == ("Car", "Van").index(scene.objects[k].label)


def _stacked(annotations, key):
    """(1, N, ...) float64 tensor of annotation["motion"][key]."""
    return torch.tensor([a["motion"][key] for a in annotations], dtype=torch.float64)[None]


def test_masks_boxes_and_flow_reproduced(world):
    """Masks are the instance PNG's pixels; composing flow from the written depth, the masks
    and the loaded motions gives the written GT flow (to its 16-bit quantisation)."""
    folder = os.path.join(world, "Scene01", "clone", "frames", "instanceSegmentation", "Camera_0")
    for frame, d in enumerate(load_vkitti2(world, min_visible_pixels=1)):
        ids = formats.read_instance_png(os.path.join(folder, f"instancegt_{frame:05d}.png"))
        masks = []
        for a in d["annotations"]:
            mask = mask_util.decode(a["segmentation"]).astype(bool)
            np.testing.assert_array_equal(mask, ids == a["track_id"] + 1)
            ys, xs = np.nonzero(mask)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            masks.append(mask)
        depth = torch.from_numpy(formats.read_depth_png(d["depth_file_name"]))[None, None].double()
        K = torch.tensor(d["intrinsics"], dtype=torch.float64)[None]
        motion = lambda key: _stacked(d["annotations"], key)  # noqa: E731
        cam = d["camera_motion"]
        flow, valid = compose_flow(
            depth, K, torch.from_numpy(np.stack(masks)).double()[None], motion("rotation"),
            motion("translation"), motion("pivot"), torch.tensor(cam["rotation"]).double()[None],
            torch.tensor(cam["translation"]).double()[None])
        gt, gt_valid = formats.read_vkitti_flow_png(d["flow_file_name"])
        both = valid[0].numpy() & gt_valid
        assert both.mean() > 0.5
        err = np.abs(flow[0].permute(1, 2, 0).numpy() - gt)[both]
        assert err.max() < 0.003  # quantisation step of the flow PNG: (W - 1) / 65535 px


def test_filters_classes_and_visible_pixels(world):
    all_objects = load_vkitti2(world, min_visible_pixels=1)[0]["annotations"]
    counts = {a["track_id"]: int(mask_util.area(a["segmentation"])) for a in all_objects}
    threshold = sorted(counts.values())[len(counts) // 2]
    kept = load_vkitti2(world, min_visible_pixels=threshold)[0]["annotations"]
    assert {a["track_id"] for a in kept} == {k for k, n in counts.items() if n >= threshold}
    vans = load_vkitti2(world, classes=("Van",), min_visible_pixels=1)[0]["annotations"]
    assert all(a["category_id"] == 0 for a in vans)
    assert len(vans) < len(all_objects)


def test_missing_file_names_path_and_dataset(world, tmp_path):
    root, seq = _copy(world, tmp_path)
    os.remove(seq / "frames" / "depth" / "Camera_0" / "depth_00002.png")
    with pytest.raises(FileNotFoundError, match=r"my_set.*depth_00002\.png"):
        load_vkitti2(str(root), dataset_name="my_set")
    with pytest.raises(FileNotFoundError, match="no scene with a 'fog' folder"):
        load_vkitti2(str(root), variant="fog")


def test_malformed_rows_name_file_and_line(world, tmp_path):
    root, seq = _copy(world, tmp_path)
    lines = (seq / "pose.txt").read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:-1])  # one field short
    (seq / "pose.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(formats.DataFormatError, match=r"pose\.txt:3: malformed row"):
        load_vkitti2(str(root))
    bbox = (seq / "bbox.txt").read_text().splitlines()
    bbox[1] = bbox[1].rsplit(" ", 1)[0] + " maybe"
    (seq / "bbox.txt").write_text("\n".join(bbox) + "\n")
    shutil.copy(os.path.join(world, "Scene01", "clone", "pose.txt"), seq / "pose.txt")
    with pytest.raises(formats.DataFormatError, match=r"bbox\.txt:2: column 'isMoving'"):
        load_vkitti2(str(root))


def test_corrupt_instance_png_names_file(world, tmp_path):
    root, seq = _copy(world, tmp_path)
    path = seq / "frames" / "instanceSegmentation" / "Camera_0" / "instancegt_00001.png"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(formats.DataFormatError, match="instancegt_00001.png"):
        load_vkitti2(str(root))


def test_moving_flag_without_bbox_rows(world, tmp_path):
    """Objects without a bbox.txt row are moving when their motion is not the identity."""
    root, seq = _copy(world, tmp_path)
    lines = (seq / "bbox.txt").read_text().splitlines()
    (seq / "bbox.txt").write_text(lines[0] + "\n")  # header only
    expected = load_vkitti2(world, min_visible_pixels=1)
    loaded = load_vkitti2(str(root), min_visible_pixels=1)
    flags = [[a["motion"]["moving"] for a in d["annotations"]] for d in loaded]
    assert flags == [[a["motion"]["moving"] for a in d["annotations"]] for d in expected]
    assert any(any(f) for f in flags) and not all(all(f) for f in flags)
    still = [a for d in loaded for a in d["annotations"] if not a["motion"]["moving"]]
    assert all(a["motion"]["rotation"] == np.eye(3).tolist() for a in still)
    assert all(a["motion"]["translation"] == [0.0, 0.0, 0.0] for a in still)
