"""tools/zero_motion_baseline.py: perfect detections with identity motion and zero flow."""
import os
import sys

import torch
from detectron2.structures import BitMasks, Boxes, Instances

from motion_rcnn_d2 import MotionEvaluator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from zero_motion_baseline import zero_motion_output  # noqa: E402


def test_zero_motion_scores_the_gt_motions_themselves():
    gt = Instances((20, 30))  # input at half the original size (40x60)
    gt.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [12.0, 5.0, 25.0, 15.0]]))
    gt.gt_classes = torch.tensor([0, 1])
    gt.gt_rotations = torch.eye(3).expand(2, 3, 3).clone()
    gt.gt_translations = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    gt.gt_pivots = torch.tensor([[0.0, 0.0, 10.0], [1.0, 0.0, 20.0]])
    gt.gt_moving = torch.tensor([True, False])
    masks = torch.zeros(2, 20, 30, dtype=torch.bool)
    gt.gt_masks = BitMasks(masks)
    flow = torch.zeros(2, 20, 30)
    flow[0] = 2.0  # every pixel moves 2 px (input scale) -> 4 px at the original size
    inputs = {"height": 40, "width": 60, "instances": gt, "flow": flow,
              "flow_valid": torch.ones(20, 30, dtype=torch.bool),
              "camera_motion": {"rotation": torch.eye(3), "translation": torch.tensor([0.0, 0.0, -1.0])},
              "image_id": "p"}
    out = zero_motion_output(inputs)
    assert out["instances"].image_size == (40, 60)
    assert torch.equal(out["instances"].pred_boxes.tensor[1], torch.tensor([24.0, 10.0, 50.0, 30.0]))
    evaluator = MotionEvaluator("synthetic_val", distributed=False)
    evaluator.reset()
    evaluator.process([inputs], [out])
    m = evaluator.evaluate()["motion"]
    assert m["num_matched"] == 2
    assert abs(m["E_t"] - 2.5) < 1e-6       # (5 + 0) / 2
    assert abs(m["E_R"]) < 1e-6
    assert abs(m["E_t_cam"] - 1.0) < 1e-6
    assert abs(m["AEE"] - 4.0) < 1e-5
    assert m["O_rc"] == 0.0                  # nothing is predicted moving
