"""Every shipped config under configs/ loads and builds its model; the thesis settings hold."""
import glob
import os

import pytest
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from motion_rcnn_d2 import add_motion_rcnn_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True))


def _load(path):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(path)
    return cfg


def _input_channels(model):
    stem = next(m for n, m in model.backbone.named_modules() if n.split(".")[-1] == "stem")
    return stem.conv1.in_channels


def test_the_shipped_configs_are_there():
    names = {os.path.relpath(p, CONFIG_DIR) for p in CONFIGS}
    assert {"Base-RCNN-FPN.yaml", "Base-MotionRCNN-C6-FPN.yaml", "Base-MotionRCNN-C6-C4.yaml",
            "vkitti/motion_rcnn_R50_C6_FPN.yaml", "vkitti/motion_rcnn_R50_C6_C4.yaml",
            "vkitti/motion_rcnn_R50_C6_FPN_flow_sup.yaml",
            "vkitti/motion_rcnn_R50_C6_FPN_no_xyz.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, CONFIG_DIR))
def test_config_builds(path):
    cfg = _load(path)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    if cfg.MODEL.META_ARCHITECTURE == "MotionRCNN":
        assert _input_channels(model) == (12 if cfg.MODEL.MOTION_RCNN.XYZ_INPUT else 6)
        assert (model.camera_head is not None) == cfg.MODEL.MOTION_RCNN.CAMERA_MOTION_ON
        assert model.roi_heads.motion_on == cfg.MODEL.MOTION_RCNN.MOTION_ON


@pytest.mark.parametrize("name", ["motion_rcnn_R50_C6_FPN.yaml", "motion_rcnn_R50_C6_C4.yaml",
                                  "motion_rcnn_R50_C6_FPN_flow_sup.yaml",
                                  "motion_rcnn_R50_C6_FPN_no_xyz.yaml"])
def test_vkitti_configs_follow_the_thesis(name):
    cfg = _load(os.path.join(CONFIG_DIR, "vkitti", name))
    assert cfg.MODEL.DEVICE == get_cfg().MODEL.DEVICE  # Detectron2's default, not forced to cpu
    assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.MODEL.RESNETS.NORM == "FrozenBN"
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (375,) and cfg.INPUT.MAX_SIZE_TRAIN == 1242
    assert cfg.INPUT.MIN_SIZE_TEST == 375 and cfg.INPUT.MAX_SIZE_TEST == 1242
    assert cfg.INPUT.RANDOM_FLIP == "none"
    assert cfg.SOLVER.IMS_PER_BATCH == 1 and cfg.SOLVER.BASE_LR == pytest.approx(2.5e-3)
    assert cfg.SOLVER.MOMENTUM == 0.9 and cfg.SOLVER.GAMMA == pytest.approx(0.1)
    assert tuple(cfg.SOLVER.STEPS) == (144000,) and cfg.SOLVER.MAX_ITER == 192000
    assert cfg.DATASETS.TRAIN == ("vkitti1_clone_train",)
    assert cfg.DATASETS.TEST == ("vkitti1_clone_val",)
    assert cfg.MODEL.MOTION_RCNN.SUPERVISION == ("flow" if "flow_sup" in name else "motion")
    assert cfg.MODEL.MOTION_RCNN.XYZ_INPUT == ("no_xyz" not in name)
    fpn = "FPN" in name
    assert cfg.MODEL.ROI_HEADS.NAME == ("MotionROIHeads" if fpn else "MotionRes5ROIHeads")
    if fpn:
        assert cfg.MODEL.RPN.IN_FEATURES == ["p2", "p3", "p4", "p5", "p6"]
        assert [s[0] for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES] == [32, 64, 128, 256, 512]
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[0.5, 1.0, 2.0]]
