"""MotionPredictor (numpy inputs at the original size), the DefaultPredictor error, and
demo.py writing every file it promises, readable back."""
import json
import os
import sys

import numpy as np
import pytest
import torch
from detectron2.engine import DefaultPredictor

from motion_rcnn_d2 import MotionPredictor
from motion_rcnn_d2.data import formats
from motion_rcnn_d2.data.datasets import load_vkitti2_sequence
from motion_rcnn_d2.data.synthetic import generate_world
from motion_rcnn_d2.geometry import compose_flow_indexed

from motion_rcnn_inputs import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import demo  # noqa: E402


@pytest.fixture(scope="module")
def sequence(module_tmp):
    root = module_tmp
    (seq,) = generate_world(str(root), sequences=1, frames=3, width=128, height=48, seed=3,
                            progress=False)
    return seq


@pytest.fixture(scope="module")
def cfg():
    cfg = tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 32  # a real resize: 128x48 -> 85x32
    cfg.INPUT.MAX_SIZE_TEST = 512
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random weights: keep detections
    # the C6 camera head: untrained, it predicts ~identity, so the flow hardly depends on the
    # depth, which the model resizes to the input and back (nearest) before composing
    cfg.MODEL.CAMERA_MOTION_HEAD.NAME = "CameraMotionHead"
    cfg.MODEL.CAMERA_MOTION_HEAD.IN_FEATURE = "res6"
    cfg.MODEL.CAMERA_MOTION_HEAD.TRANSLATION_MEAN = [0.0, 0.0, 0.0]
    return cfg


def _pair(seq):
    record = load_vkitti2_sequence(seq)[0]
    image = formats.read_image(record["file_name"])
    image_next = formats.read_image(record["file_name_next"])
    depth = formats.read_depth_png(record["depth_file_name"])
    return record, image, image_next, depth, np.asarray(record["intrinsics"])


def test_predictor_outputs_at_the_original_size(cfg, sequence):
    record, image, image_next, depth, K = _pair(sequence)
    out = MotionPredictor(cfg)(image, image_next, depth, K)
    h, w = image.shape[:2]
    inst = out["instances"]
    assert inst.image_size == (h, w)
    assert len(inst) > 0
    assert inst.pred_masks.shape[1:] == (h, w)
    assert inst.pred_rotations.shape == (len(inst), 3, 3)
    assert inst.pred_translations.shape == inst.pred_pivots.shape == (len(inst), 3)
    assert out["flow"].shape == (2, h, w) and out["flow_valid"].shape == (h, w)
    assert out["camera_motion"]["rotation"].shape == (3, 3)
    # the flow is composed at the ORIGINAL size with the ORIGINAL K and (nearest) depth:
    # recompute it from the outputs with the given depth and K
    order = torch.argsort(inst.scores, descending=False)
    index = torch.full((h, w), -1, dtype=torch.long)
    for i in order.tolist():  # higher scores painted last win where masks overlap
        index[inst.pred_masks[i]] = i
    cam = out["camera_motion"]
    flow, valid = compose_flow_indexed(
        torch.as_tensor(depth)[None, None], torch.as_tensor(K, dtype=torch.float32)[None],
        index[None], inst.pred_rotations[None], inst.pred_translations[None],
        inst.pred_pivots[None], cam["rotation"][None], cam["translation"][None])
    assert torch.equal(valid[0], out["flow_valid"])
    torch.testing.assert_close(flow[0], out["flow"], atol=1e-3, rtol=1e-4)


def test_predictor_checks_its_inputs(cfg, sequence):
    _, image, image_next, depth, K = _pair(sequence)
    predictor = MotionPredictor(cfg)
    with pytest.raises(TypeError, match="needs both frames"):
        predictor(image)
    with pytest.raises(ValueError, match="'depth' is"):
        predictor(image, image_next, depth[:-1], K)
    with pytest.raises(ValueError, match="MotionPredictor: 'intrinsics' must be a 3x3 pinhole"):
        predictor(image, image_next, depth, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="same size"):
        predictor(image, image_next[:-2], depth, K)


def test_default_predictor_says_to_use_motion_predictor(cfg, sequence):
    _, image, _, _, _ = _pair(sequence)
    with pytest.raises(ValueError, match="MotionPredictor"):
        DefaultPredictor(cfg)(image)


def test_demo_writes_every_file_readable_back(cfg, sequence, tmp_path):
    weights = tmp_path / "model.pth"
    torch.save({"model": MotionPredictor(cfg).model.state_dict()}, weights)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.dump())
    out_dir = tmp_path / "demo"
    names = demo.main(["--config-file", str(cfg_file), "--sequence", sequence,
                       "--output", str(out_dir), "--opts", "MODEL.WEIGHTS", str(weights)])
    assert len(names) == 2  # 3 frames -> 2 pairs
    for name in names:
        for suffix in ("_instances.png", "_flow.png", "_flow_error.png", "_flow.flo",
                       "_flow_kitti.png", "_motions.json", "_combined.png"):
            assert (out_dir / (name + suffix)).is_file(), name + suffix
    assert not [p for p in os.listdir(out_dir) if ".tmp" in p]
    # the written flow equals the predictor's flow (.flo exactly, KITTI PNG to 1/64 px)
    record, image, image_next, depth, K = _pair(sequence)
    weights_cfg = cfg.clone()
    weights_cfg.MODEL.WEIGHTS = str(weights)
    depth_next = formats.read_depth_png(record["depth_file_name_next"])
    out = MotionPredictor(weights_cfg)(image, image_next, depth, K, depth_next)
    flow = out["flow"].permute(1, 2, 0).numpy()
    name = names[0]
    np.testing.assert_allclose(formats.read_flo(str(out_dir / f"{name}_flow.flo")), flow,
                               atol=1e-6)
    kitti_flow, kitti_valid = formats.read_kitti_flow_png(str(out_dir / f"{name}_flow_kitti.png"))
    np.testing.assert_array_equal(kitti_valid, out["flow_valid"].numpy())
    np.testing.assert_allclose(kitti_flow[kitti_valid], flow[kitti_valid], atol=1 / 128 + 1e-6)
    data = json.loads((out_dir / f"{name}_motions.json").read_text())
    assert len(data["instances"]) == len(out["instances"])
    np.testing.assert_allclose(data["camera_motion"]["translation"],
                               out["camera_motion"]["translation"].numpy(), atol=1e-6)
    assert {"aee", "fl_all", "count"} <= set(data["flow_metrics"])
    combined = formats.read_image(str(out_dir / f"{name}_combined.png"))
    assert combined.shape == (5 * 48, 128, 3)  # frame, instances, flow, GT flow, error


@pytest.mark.parametrize("config", ["flownets_cpu.yaml", "sfmnet_unsup_cpu.yaml"])
def test_baselines_through_the_predictor(config, sequence):
    from detectron2.config import get_cfg

    from motion_rcnn_d2 import add_motion_rcnn_config

    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "synthetic", config))
    cfg.MODEL.WEIGHTS = ""
    cfg.INPUT.MIN_SIZE_TEST = 32
    if "SFMNET" in cfg.MODEL:
        cfg.MODEL.SFMNET.BASE_CHANNELS = 8
    _, image, image_next, depth, K = _pair(sequence)
    out = MotionPredictor(cfg)(image, image_next, depth, K)
    assert out["flow"].shape == (2,) + image.shape[:2]
    with pytest.raises(ValueError, match="MotionPredictor"):
        DefaultPredictor(cfg)(image)
