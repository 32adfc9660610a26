#!/usr/bin/env python
"""The zero-motion baseline (docs/method.md section 8's "GT mean" row) on a data set.

Every GT object is "detected" perfectly (its GT box and class) with identity motion, the
camera with identity motion, and the flow is zero; MotionEvaluator scores that exactly like
a model. A model has learned motion where its E_t, E_t^cam and AEE are below these.
`zero_motion_metrics(cfg, name)` does it for tools/plot_training.py's zero-motion lines too.

    python tools/zero_motion_baseline.py --config-file CFG [--dataset synthetic_val]
    python tools/zero_motion_baseline.py --config-file CFG --register my_world=datasets/my_world \
        --dataset my_world
"""
import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import motion_rcnn_d2  # noqa: E402,F401
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import build_detection_test_loader  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from motion_rcnn_d2 import MotionDatasetMapper, MotionEvaluator, add_motion_rcnn_config  # noqa: E402
from motion_rcnn_d2.data import prepare_datasets, register_from_arguments  # noqa: E402


def zero_motion_output(inputs):
    """The output dict of a model that detects every GT object and predicts no motion."""
    h, w = inputs["height"], inputs["width"]
    out = {"flow": torch.zeros(2, h, w), "flow_valid": torch.ones(h, w, dtype=torch.bool),
           "camera_motion": {"rotation": torch.eye(3), "translation": torch.zeros(3),
                             "moving_score": torch.tensor(0.0)}}
    if "instances" in inputs:
        gt = inputs["instances"]
        n = len(gt)
        boxes = gt.gt_boxes.clone()
        in_h, in_w = gt.image_size
        boxes.scale(w / in_w, h / in_h)
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(boxes.tensor)
        inst.scores = torch.ones(n)
        inst.pred_classes = gt.gt_classes
        inst.pred_rotations = torch.eye(3).expand(n, 3, 3).clone()
        inst.pred_translations = torch.zeros(n, 3)
        inst.pred_pivots = torch.zeros(n, 3)
        inst.pred_moving_scores = torch.zeros(n)
        out["instances"] = inst
    return out


def zero_motion_config(config_file, opts=()):
    """The config of `config_file` (a shipped config, or a run's config.yaml) and KEY VALUE
    pairs `opts`."""
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def zero_motion_metrics(cfg, dataset_name, output_dir=None):
    """MotionEvaluator's results ``{"motion": {name: number}}`` of the zero-motion baseline on
    the registered data set `dataset_name` (its pairs through the config's test loader); with
    `output_dir` also written to ``output_dir/motion_metrics.json``."""
    prepare_datasets([dataset_name])
    loader = build_detection_test_loader(cfg, dataset_name, mapper=MotionDatasetMapper(cfg, False))
    evaluator = MotionEvaluator(dataset_name, distributed=False, output_dir=output_dir)
    evaluator.reset()
    for batch in loader:
        evaluator.process(batch, [zero_motion_output(x) for x in batch])
    return evaluator.evaluate()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", default=None, help="default: the config's first DATASETS.TEST")
    p.add_argument("--output", default=None, help="folder for motion_metrics.json")
    p.add_argument("--register", action="append", default=[], metavar="NAME=ROOT",
                   help="register a data set in the Virtual KITTI 2 layout (as train_net.py)")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args()
    setup_logger()
    setup_logger(name="motion_rcnn_d2")
    register_from_arguments(args.register)
    cfg = zero_motion_config(args.config_file, args.opts)
    return zero_motion_metrics(cfg, args.dataset or cfg.DATASETS.TEST[0], args.output)


if __name__ == "__main__":
    main()
