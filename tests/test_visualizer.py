import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from motion_rcnn_d2.geometry import rotation_y
from motion_rcnn_d2.utils.visualizer import (
    draw_motions,
    flow_error_picture,
    flow_picture,
    flow_pictures,
    motion_summary,
)


def test_flow_error_colours_follow_kitti_bands():
    gt = torch.zeros(2, 1, 4)
    gt[0] = torch.tensor([100.0, 100.0, 10.0, 10.0])
    flow = gt.clone()
    flow[0, 0, 0] += 0.1    # e = min(0.1/3, 0.1/5) = 0.02 -> first band
    flow[0, 0, 1] += 4.0    # e = min(4/3, 4/5) = 0.8 -> band [0.5, 1): not an outlier
    flow[0, 0, 2] += 60.0   # e = min(20, 60/0.5) = 20 -> last band
    valid = torch.tensor([[True, True, True, False]])
    pic = flow_error_picture(flow, gt, valid)
    assert pic.shape == (1, 4, 3) and pic.dtype == np.uint8
    assert tuple(pic[0, 0]) == (49, 54, 149)
    assert tuple(pic[0, 1]) == (224, 243, 248)
    assert tuple(pic[0, 2]) == (165, 0, 38)
    assert tuple(pic[0, 3]) == (0, 0, 0)  # invalid


def test_flow_pictures_share_one_scale():
    small = torch.zeros(2, 3, 3)
    small[0] = 1.0
    big = small * 10
    alone = flow_picture(small)
    shared_small, shared_big = flow_pictures([small, big])
    # alone, the small field is normalised to full saturation; next to the big one it is pale
    assert np.array_equal(flow_picture(big), shared_big)
    assert int(np.abs(alone.astype(int) - 255).sum()) > int(np.abs(shared_small.astype(int) - 255).sum())
    # HxWx2 input and a validity mask
    valid = np.ones((3, 3), bool)
    valid[1, 1] = False
    pic = flow_picture(small.permute(1, 2, 0).numpy(), valid)
    assert tuple(pic[1, 1]) == (0, 0, 0) and tuple(pic[0, 0]) != (0, 0, 0)


def test_motion_summary_and_drawing():
    R = rotation_y(torch.tensor(np.deg2rad(2.0), dtype=torch.float32))
    assert motion_summary(R, [0.0, 0.0, 1.5], 0.9) == "1.50 m/fr 2.0 deg moving"
    assert motion_summary(torch.eye(3), [0.0, 0.0, 0.0], 0.1) == "0.00 m/fr 0.0 deg still"
    inst = Instances((40, 60))
    inst.pred_boxes = Boxes(torch.tensor([[5.0, 5.0, 30.0, 25.0]]))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([1])
    masks = torch.zeros(1, 40, 60, dtype=torch.bool)
    masks[0, 5:25, 5:30] = True
    inst.pred_masks = masks
    inst.pred_rotations = R[None]
    inst.pred_translations = torch.tensor([[0.0, 0.0, 1.5]])
    inst.pred_pivots = torch.zeros(1, 3)
    inst.pred_moving_scores = torch.tensor([0.9])
    image = np.full((40, 60, 3), 128, np.uint8)
    meta = MetadataCatalog.get("synthetic_val")
    camera = {"rotation": torch.eye(3), "translation": torch.tensor([0.0, 0.0, 1.0]),
              "moving_score": torch.tensor(1.0)}
    out = draw_motions(image, inst, meta, camera)
    assert out.shape == (40, 60, 3)
    assert (out[10:20, 10:25] != 128).any()  # the mask is drawn
