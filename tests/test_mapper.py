"""MotionDatasetMapper: the flow invariant under sampled augmentations, nearest depth, flipped
motions by hand, photometric identity on both frames, output keys, bad input."""
import math

import cv2
import numpy as np
import pytest
import torch

import motion_rcnn_d2  # noqa: F401  (first: installs the Detectron2 compatibility layer)
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from pycocotools import mask as mask_util

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.data import MotionDatasetMapper, formats
from motion_rcnn_d2.data.datasets import load_vkitti2
from motion_rcnn_d2.data.synthetic import generate_world
from motion_rcnn_d2.geometry import compose_flow, rotation_x, rotation_y, rotation_z


@pytest.fixture(scope="module")
def pairs(module_tmp):
    root = module_tmp
    generate_world(root, sequences=1, frames=3, width=128, height=48, seed=0, progress=False)
    return load_vkitti2(str(root), min_visible_pixels=1)


def _flow_error(out, negate_u_again=False):
    """|compose_flow(mapped depth, K, masks, motions) - mapped GT flow| on valid pixels (px)."""
    inst, cam = out["instances"], out["camera_motion"]
    b = lambda x: x[None].double()  # noqa: E731
    flow, valid = compose_flow(b(out["depth"]), b(out["intrinsics"]), b(inst.gt_masks.tensor),
                               b(inst.gt_rotations), b(inst.gt_translations), b(inst.gt_pivots),
                               b(cam["rotation"]), b(cam["translation"]))
    gt = out["flow"].double()
    if negate_u_again:
        gt = gt * torch.tensor([-1.0, 1.0], dtype=torch.float64)[:, None, None]
    both = valid[0] & out["flow_valid"]
    assert both.float().mean() > 0.5
    return (flow[0] - gt).norm(dim=0)[both]


@pytest.mark.parametrize("augs", [
    [],
    [T.RandomFlip(prob=1.0)],
    [T.RandomCrop("absolute", (30, 90))],
    [T.Resize((16, 128))],  # rows 1/3: output pixel centres fall on input pixel centres
    [T.RandomCrop("absolute", (42, 100)), T.Resize((14, 100)), T.RandomFlip(prob=1.0)],
], ids=["none", "flip", "crop", "resize_exact", "crop_resize_flip"])
def test_flow_invariant_exact_cases(pairs, augs):
    np.random.seed(0)
    mapper = MotionDatasetMapper(is_train=True, augmentations=augs)
    for record in pairs:
        err = _flow_error(mapper(record))
        assert err.max() < 0.003  # the flow PNG's quantisation, (W - 1) / 65535 px


def record_fx(record):
    return record["intrinsics"][0][0]


def test_flow_invariant_sampled_augmentations(pairs):
    cfg = add_motion_rcnn_config(get_cfg())
    cfg.INPUT.MIN_SIZE_TRAIN = (32, 40, 60, 72, 96)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "relative_range"
    cfg.INPUT.CROP.SIZE = [0.6, 0.6]
    mapper = MotionDatasetMapper(cfg, is_train=True)
    sizes, flips = set(), 0
    for seed in range(8):
        np.random.seed(seed)
        out = mapper(pairs[seed % 2])
        sizes.add(tuple(out["image"].shape[1:]))
        inst = out["instances"]
        assert len(inst) > 0
        assert torch.equal(inst.gt_boxes.tensor, inst.gt_masks.get_bounding_boxes().tensor)
        err = _flow_error(out)
        # Nearest sampling gives an output pixel the depth and flow of the nearest input pixel,
        # up to half an input pixel away from where the output pixel's ray is: an error of
        # scale x flow gradient x offset, about 0.1 px per unit of scale here; a wrong scale,
        # sign or K costs whole pixels.
        scale = max(out["intrinsics"][0, 0].item() / record_fx(pairs[seed % 2]), 1.0)
        assert err.mean() < 0.03 * scale and err.max() < 0.15 * scale, (seed, err.mean(), err.max())
        np.random.seed(seed)  # the same draw again, to see which transforms were sampled
        image = cv2.imread(pairs[seed % 2]["file_name"])
        sampled = mapper.augmentations(T.AugInput(image)).transforms
        if any(isinstance(t, T.HFlipTransform) for t in sampled):
            flips += 1  # and there, forgetting to negate u would be far off:
            assert _flow_error(out, negate_u_again=True).mean() > 0.3
    assert len(sizes) >= 3 and 2 <= flips <= 6


def _write_pair(tmp_path, height=4, width=6, depth=None, size_next=None):
    rng = np.random.default_rng(0)
    paths = {k: str(tmp_path / f"{k}.png") for k in ("t", "t1", "depth", "flow")}
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(paths["t"], image)
    cv2.imwrite(paths["t1"], image if size_next is None else np.zeros(size_next + (3,), np.uint8))
    if depth is None:
        depth = np.full((height, width), 1000, np.uint16)
    cv2.imwrite(paths["depth"], depth)
    flow = np.zeros((height, width, 2))
    flow[..., 0], flow[..., 1] = 1.0, -0.5
    formats.write_vkitti_flow_png(paths["flow"], flow, np.ones((height, width), bool))
    mask = np.zeros((height, width), np.uint8)
    mask[1:3, 0:2] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    c, s = math.cos(0.1), math.sin(0.1)
    return {
        "file_name": paths["t"], "file_name_next": paths["t1"], "depth_file_name": paths["depth"],
        "depth_file_name_next": paths["depth"], "flow_file_name": paths["flow"],
        "height": height, "width": width, "image_id": "hand/clone/00000",
        "intrinsics": [[10.0, 0.0, 2.0], [0.0, 10.0, 1.5], [0.0, 0.0, 1.0]],
        "camera_motion": {"rotation": rotation_z(torch.tensor(0.02, dtype=torch.float64)).tolist(),
                          "translation": [0.1, 0.2, 0.3], "moving": True},
        "annotations": [{
            "bbox": [0.0, 1.0, 2.0, 3.0], "bbox_mode": BoxMode.XYXY_ABS, "segmentation": rle,
            "iscrowd": 0, "category_id": 1, "track_id": 7,
            "motion": {"rotation": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
                       "translation": [1.0, 2.0, 3.0], "pivot": [4.0, 5.0, 6.0], "moving": True}}],
    }


def test_flip_by_hand(tmp_path):
    mapper = MotionDatasetMapper(is_train=True, augmentations=[T.RandomFlip(prob=1.0)])
    out = mapper(_write_pair(tmp_path))
    # K: cx' = W - 1 - cx = 6 - 1 - 2 = 3; flow u negated
    np.testing.assert_allclose(out["intrinsics"].numpy(), [[10, 0, 3], [0, 10, 1.5], [0, 0, 1]])
    np.testing.assert_allclose(out["flow"][0].numpy(), -1.0, atol=1e-3)
    np.testing.assert_allclose(out["flow"][1].numpy(), -0.5, atol=1e-3)
    inst = out["instances"]
    # mirror S = diag(-1, 1, 1): S Ry(a) S = Ry(-a), S Rz(b) S = Rz(-b), S t = (-t_x, t_y, t_z)
    np.testing.assert_allclose(inst.gt_rotations[0].numpy(),
                               rotation_y(torch.tensor(-0.1)).numpy(), atol=1e-6)
    np.testing.assert_allclose(inst.gt_translations[0].numpy(), [-1, 2, 3])
    np.testing.assert_allclose(inst.gt_pivots[0].numpy(), [-4, 5, 6])
    np.testing.assert_allclose(out["camera_motion"]["rotation"].numpy(),
                               rotation_z(torch.tensor(-0.02)).numpy(), atol=1e-6)
    np.testing.assert_allclose(out["camera_motion"]["translation"].numpy(), [-0.1, 0.2, 0.3],
                               atol=1e-6)
    # mask columns 0..1 -> 4..5
    np.testing.assert_array_equal(inst.gt_boxes.tensor.numpy(), [[4, 1, 6, 3]])
    assert inst.gt_classes.tolist() == [1] and inst.gt_moving.tolist() == [True]
    # S Rx S = Rx: a pitch is unchanged
    s_mat = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    rx = rotation_x(torch.tensor(0.3))
    assert torch.allclose(s_mat @ rx @ s_mat, rx)


def test_depth_is_resized_by_nearest_and_invalid_stays_invalid(tmp_path):
    depth = np.full((4, 6), 1000, np.uint16)
    depth[::2, ::2] = 0
    depth[1::2, 1::2] = 65535  # sky: invalid
    depth[0, 5] = 2000
    record = _write_pair(tmp_path, depth=depth)
    for size in ((7, 11), (3, 4), (8, 12)):
        out = MotionDatasetMapper(is_train=False, augmentations=[T.Resize(size)])(record)
        values = set(np.unique(out["depth"].numpy()).tolist())
        assert values <= {0.0, 10.0, 20.0} and 0.0 in values and 10.0 in values
        assert out["depth_next"].shape == (1,) + size
        sx, sy = size[1] / 6, size[0] / 4  # K scaled with pixel centres at integers
        np.testing.assert_allclose(out["intrinsics"][0].numpy(), [10 * sx, 0, sx * 2.5 - 0.5],
                                   rtol=1e-6)
        np.testing.assert_allclose(out["flow"][:, 0, 0].numpy(), [1.0 * sx, -0.5 * sy], atol=2e-3)
    out = MotionDatasetMapper(is_train=False, augmentations=[T.Resize((8, 12))])(record)
    # 2x upscale by nearest: each input pixel becomes a 2x2 block
    source = formats.read_depth_png(record["depth_file_name"])
    np.testing.assert_array_equal(out["depth"][0].numpy(), np.repeat(np.repeat(source, 2, 0), 2, 1))


def test_photometric_same_map_on_both_frames(tmp_path):
    record = _write_pair(tmp_path)
    image = cv2.imread(record["file_name"])
    changed = image.copy()
    changed[0] = 255 - changed[0]  # frame t+1 differs in row 0
    cv2.imwrite(record["file_name_next"], changed)
    mapper = MotionDatasetMapper(is_train=True, augmentations=[], brightness=(0.5, 1.5),
                                 contrast=(0.5, 1.5), saturation=(0.5, 1.5))
    for seed in range(3):
        np.random.seed(seed)
        out = mapper(record)
        a, b = out["image"].numpy(), out["image_next"].numpy()
        np.testing.assert_array_equal(a[:, 1:], b[:, 1:])  # same input pixel -> same output
        assert not np.array_equal(a, image.transpose(2, 0, 1))
    bright = MotionDatasetMapper(is_train=True, augmentations=[], brightness=(2.0, 2.0))(record)
    np.testing.assert_array_equal(bright["image"].numpy(),
                                  np.minimum(image.astype(int) * 2, 255).transpose(2, 0, 1))
    evaluation = MotionDatasetMapper(is_train=False, augmentations=[], brightness=(2.0, 2.0))
    evaluation = evaluation(record)
    np.testing.assert_array_equal(evaluation["image"].numpy(), image.transpose(2, 0, 1))


def test_output_keys_and_types(tmp_path):
    mapper = MotionDatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    out = mapper(_write_pair(tmp_path))
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 4, 6)
    rgb = cv2.imread(out["file_name"])[..., ::-1]
    np.testing.assert_array_equal(out["image"].numpy(), rgb.transpose(2, 0, 1))
    assert out["depth"].dtype == torch.float32 and out["depth"].shape == (1, 4, 6)
    assert out["intrinsics"].dtype == torch.float32 and out["intrinsics"].shape == (3, 3)
    assert out["flow"].dtype == torch.float32 and out["flow"].shape == (2, 4, 6)
    assert out["flow_valid"].dtype == torch.bool and out["flow_valid"].shape == (4, 6)
    assert (out["height"], out["width"], out["image_id"]) == (4, 6, "hand/clone/00000")
    inst = out["instances"]
    assert inst.gt_rotations.shape == (1, 3, 3) and inst.gt_rotations.dtype == torch.float32
    assert inst.gt_translations.shape == (1, 3) and inst.gt_pivots.shape == (1, 3)
    assert inst.gt_moving.dtype == torch.bool and inst.gt_classes.dtype == torch.int64
    moving = out["camera_motion"]["moving"]
    assert moving.dtype == torch.bool and moving.dim() == 0


def test_cropped_away_instances_are_dropped(tmp_path):
    record = _write_pair(tmp_path)
    crop = T.CropTransform(3, 0, 3, 4)  # columns 3..5: the object (columns 0..1) is gone

    class _Fixed(T.Augmentation):
        def get_transform(self, image):
            return crop

    out = MotionDatasetMapper(is_train=True, augmentations=[_Fixed()])(record)
    assert len(out["instances"]) == 0 and out["instances"].gt_rotations.shape == (0, 3, 3)
    np.testing.assert_allclose(out["intrinsics"][0, 2].item(), 2.0 - 3.0)


def test_bad_input_errors(tmp_path):
    mapper = MotionDatasetMapper(is_train=False, augmentations=[])
    with pytest.raises(ValueError, match=r"t1\.png' is 5x3.*t\.png' is 6x4.*hand/clone/00000"):
        mapper(_write_pair(tmp_path, size_next=(3, 5)))
    record = _write_pair(tmp_path)
    data = open(record["depth_file_name"], "rb").read()
    open(record["depth_file_name"], "wb").write(data[: len(data) // 2])
    with pytest.raises(formats.DataFormatError, match=r"depth\.png.*hand/clone/00000"):
        mapper(record)
    record = _write_pair(tmp_path)
    record["flow_file_name"] = str(tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        mapper(record)
    with pytest.raises(formats.DataFormatError, match="bit depth"):
        mapper(_write_pair(tmp_path, depth=np.zeros((4, 6), np.uint8)))


def test_from_config():
    cfg = add_motion_rcnn_config(get_cfg())
    cfg.INPUT.CROP.ENABLED = True
    mapper = MotionDatasetMapper(cfg, is_train=True)
    augs = mapper.augmentations.augs
    assert isinstance(augs[0], T.RandomCrop) and isinstance(augs[1], T.ResizeShortestEdge)
    assert isinstance(augs[2], T.RandomFlip)
    test_augs = MotionDatasetMapper(cfg, is_train=False).augmentations.augs
    assert len(test_augs) == 1 and isinstance(test_augs[0], T.ResizeShortestEdge)
    cfg.INPUT.RANDOM_FLIP = "vertical"
    with pytest.raises(ValueError, match="RANDOM_FLIP='vertical'"):
        MotionDatasetMapper(cfg, is_train=True)
