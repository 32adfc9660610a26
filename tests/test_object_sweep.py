"""The per-object sweep: geometry.grid_search / sweep_object_motion and ObjectMotionSweep."""
import math

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from motion_rcnn_inputs import diversify_motions, make_input, outputs, tiny_cfg

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.geometry import (backproject, euler_angles_to_matrix, grid_search,
                                     object_motion_costs, project, sweep_object_motion)
from motion_rcnn_d2.modeling.object_sweep import ObjectMotionSweep

H, W = 48, 96
K = torch.tensor([[80.0, 0.0, 47.5], [0.0, 80.0, 23.5], [0.0, 0.0, 1.0]])
ROWS, COLS = slice(10, 40), slice(26, 72)  # the object's pixels in frame t


def _texture(u, v):
    return torch.sin(u / 3.1) + torch.cos(v / 2.3) + 0.5 * torch.sin((u + v) / 5.7)


def _yaw(angle):
    return euler_angles_to_matrix(torch.tensor([0.0, angle, 0.0]))


def _scene(yaw, translation, pivot, camera_yaw, camera_translation):
    """Frame t+1 is the texture; frame t shows at each pixel the texture where its point lands:
    the object's points (ROWS x COLS, 8..11 m, not planar) under the object's motion about
    `pivot` then the camera's, the background (25 m) under the camera's alone."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                          torch.arange(W, dtype=torch.float32), indexing="ij")
    depth = torch.full((H, W), 25.0)
    depth[ROWS, COLS] = 8.0 + 0.04 * u[ROWS, COLS] + 0.3 * torch.sin(v[ROWS, COLS] / 4.0)
    points = backproject(depth[None, None], K[None])[0]
    rotation, pivot = _yaw(yaw), torch.tensor(pivot)
    camera_rotation = _yaw(camera_yaw)
    moved = points.clone()
    obj = points[:, ROWS, COLS].reshape(3, -1)
    obj = rotation @ (obj - pivot[:, None]) + pivot[:, None] + torch.tensor(translation)[:, None]
    moved[:, ROWS, COLS] = obj.reshape(3, ROWS.stop - ROWS.start, COLS.stop - COLS.start)
    moved = (torch.einsum("ij,jhw->ihw", camera_rotation, moved)
             + torch.tensor(camera_translation)[:, None, None])
    pixels, _ = project(moved[None], K[None])
    gray_t = _texture(pixels[0, 0], pixels[0, 1])
    return gray_t, _texture(u, v), depth, points, camera_rotation


def test_grid_search_finds_a_quadratic_minimum_and_returns_the_first_grid():
    target = torch.tensor([[0.013, -0.27, 0.31], [-0.021, 0.08, -0.44]])
    weights = torch.tensor([3000.0, 1.0, 2.0])

    def cost(params):  # (B, N, 3) -> (B, N)
        return ((params - target[:, None]) ** 2 * weights).sum(dim=-1)

    centres = torch.tensor([[0.0, 0.0, 0.0], [-0.01, 0.1, 0.0]])
    best, coarse = grid_search(cost, centres, [0.005, 0.1, 0.1], [13, 11, 9])
    torch.testing.assert_close(best, target, atol=1e-5, rtol=0)  # a parabola is exact here
    assert coarse.shape == (2, 13, 11, 9)
    # first grid: values centres + (i - (n - 1) / 2) * step, the first axis the slowest
    yaw = -0.01 + (4 - 6) * 0.005
    x, z = 0.1 + (7 - 5) * 0.1, 0.0 + (0 - 4) * 0.1
    expected = cost(torch.tensor([[[0.0, 0.0, 0.0], [yaw, x, z]]]).expand(2, 2, 3))[1, 1]
    assert coarse[1, 4, 7, 0].item() == pytest.approx(expected.item(), rel=1e-6)


def test_sweep_object_motion_recovers_an_objects_yaw_and_translation():
    truth_yaw, truth_t, pivot = 0.011, (0.35, 0.0, -0.6), (-0.4, 1.2, 9.5)
    gray_t, gray_t1, depth, points, camera_rotation = _scene(truth_yaw, truth_t, pivot, -0.004,
                                                             (0.0, 0.0, -0.9))
    obj_points = points[:, ROWS, COLS].reshape(1, 3, 1, -1)
    obj_gray = gray_t[ROWS, COLS].reshape(1, 1, 1, -1)
    predicted = (_yaw(-0.006)[None], torch.tensor([[0.1, 0.0, -0.35]]))  # off by 0.017 rad, 0.35 m
    rotation, translation = sweep_object_motion(
        obj_gray, gray_t1[None, None], obj_points, K[None], *predicted, torch.tensor([pivot]),
        camera_rotation[None], torch.tensor([[0.0, 0.0, -0.9]]), (0.005, 13), (0.05, 21), 1.0)
    # within the yaw grid's half step (0.0025 rad) and 2 cm; a pure yaw: R = Ry(theta)
    torch.testing.assert_close(rotation[0], _yaw(math.asin(rotation[0, 0, 2])), atol=1e-6,
                               rtol=0)
    assert math.asin(rotation[0, 0, 2]) == pytest.approx(truth_yaw, abs=0.0025)
    assert translation[0].tolist() == pytest.approx(list(truth_t), abs=0.02)
    # the offsets are applied to the prediction: y stays as predicted
    assert translation[0, 1].item() == pytest.approx(0.0, abs=1e-5)


def _sweep(**kwargs):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    for key, value in kwargs.items():
        setattr(cfg.MODEL.MOTION_RCNN.OBJECT_SWEEP, key, value)
    return ObjectMotionSweep(cfg)


def test_object_motion_sweep_refines_the_moving_detections_only():
    truth_yaw, truth_t, pivot = -0.009, (-0.2, 0.0, 0.45), (0.3, 1.0, 9.0)
    gray_t, gray_t1, depth, _, camera_rotation = _scene(truth_yaw, truth_t, pivot, 0.003,
                                                        (0.0, 0.0, -0.7))
    instances = Instances((H, W))
    # one box inside the object three times (moving, still, moving with a 2x2 px box)
    instances.pred_boxes = Boxes(torch.tensor([[30.0, 13.0, 68.0, 37.0]] * 2
                                              + [[40.0, 20.0, 42.0, 22.0]]))
    instances.pred_masks = torch.ones(3, 1, 28, 28)
    predicted_t = torch.tensor([[0.0, 0.0, 0.2]] * 3)
    instances.pred_rotations = torch.eye(3).repeat(3, 1, 1)
    instances.pred_translations = predicted_t.clone()
    instances.pred_pivots = torch.tensor([pivot] * 3)
    instances.pred_moving_scores = torch.tensor([0.9, 0.3, 0.8])
    sweep = _sweep(CLAMP=1.0, NUM_POINTS=300, MOVING_COST_RATIO=0.0)  # the head decides
    sweep(instances, gray_t, gray_t1, depth, None, K, camera_rotation,
          torch.tensor([0.0, 0.0, -0.7]), 0.5)
    # the same sweep over 300 points spread evenly (raster order) over the pasted mask
    mask = paste_masks_in_image(torch.ones(1, 28, 28), instances.pred_boxes[:1], (H, W))[0]
    index = np.flatnonzero(mask.numpy() & (depth.numpy() > 0))
    index = index[np.round(np.linspace(0, len(index) - 1, 300)).astype(np.int64)]
    points = backproject(depth[None, None], K[None])[0].reshape(3, -1)[:, index]
    rotation, translation = sweep_object_motion(
        gray_t.flatten()[index].reshape(1, 1, 1, -1), gray_t1[None, None],
        points.reshape(1, 3, 1, -1), K[None], torch.eye(3)[None], predicted_t[:1],
        torch.tensor([pivot]), camera_rotation[None], torch.tensor([[0.0, 0.0, -0.7]]),
        (0.005, 13), (0.05, 21), 1.0)
    torch.testing.assert_close(instances.pred_rotations[0], rotation[0])
    torch.testing.assert_close(instances.pred_translations[0], translation[0])
    assert instances.pred_translations[0].tolist() == pytest.approx(list(truth_t), abs=0.02)
    # still (0.3 <= 0.5) and too few points (4 < MIN_POINTS): the head's motion is kept
    assert torch.equal(instances.pred_rotations[1:], torch.eye(3).repeat(2, 1, 1))
    assert torch.equal(instances.pred_translations[1:], predicted_t[1:])


def _one_detection(score, pivot):
    instances = Instances((H, W))
    instances.pred_boxes = Boxes(torch.tensor([[30.0, 13.0, 68.0, 37.0]]))
    instances.pred_masks = torch.ones(1, 1, 28, 28)
    instances.pred_rotations = torch.eye(3)[None]
    instances.pred_translations = torch.tensor([[0.1, 0.0, 0.1]])
    instances.pred_pivots = torch.tensor([pivot])
    instances.pred_moving_scores = torch.tensor([score])
    return instances


@pytest.mark.parametrize("moving", [True, False])
def test_moving_cost_ratio_lets_the_sweep_decide_moving_or_still(moving):
    """The head says the opposite (score 0.2 for the moving object, 0.9 for the still one); the
    score becomes clamp(0.5 (1 - rho) / (1 - R), 0, 1), rho = cost(refined) / cost(still)."""
    pivot = (0.3, 1.0, 9.0)
    truth = (-0.009, (-0.2, 0.0, 0.45)) if moving else (0.0, (0.0, 0.0, 0.0))
    gray_t, gray_t1, depth, points, camera_rotation = _scene(truth[0], truth[1], pivot, 0.003,
                                                             (0.0, 0.0, -0.7))
    camera_translation = torch.tensor([0.0, 0.0, -0.7])
    instances = _one_detection(0.2 if moving else 0.9, pivot)
    _sweep(CLAMP=1.0, NUM_POINTS=300, MOVING_COST_RATIO=0.8)(
        instances, gray_t, gray_t1, depth, None, K, camera_rotation, camera_translation, 0.5)
    score = float(instances.pred_moving_scores[0])
    assert (score > 0.5) == moving
    mask = paste_masks_in_image(torch.ones(1, 28, 28), instances.pred_boxes, (H, W))[0]
    index = np.flatnonzero(mask.numpy())
    index = index[np.round(np.linspace(0, len(index) - 1, 300)).astype(np.int64)]
    costs = object_motion_costs(
        gray_t.flatten()[index].reshape(1, 1, 1, -1), gray_t1[None, None],
        points.reshape(3, -1)[:, index].reshape(1, 3, 1, -1), K[None],
        torch.stack([instances.pred_rotations, torch.eye(3)[None]], dim=1),
        torch.stack([instances.pred_translations, torch.zeros(1, 3)], dim=1),
        torch.tensor([pivot]), camera_rotation[None], camera_translation[None], 1.0)
    rho = float(costs[0, 0] / costs[0, 1])
    assert score == pytest.approx(min(max(0.5 * (1 - rho) / 0.2, 0.0), 1.0), abs=1e-5)
    if moving:  # refined although the head said still
        assert instances.pred_translations[0].tolist() == pytest.approx(list(truth[1]), abs=0.02)


def test_object_motion_sweep_refuses_bad_config():
    with pytest.raises(ValueError, match=r"OBJECT_SWEEP\.YAW = \[0\.005, 2\.5\]"):
        _sweep(YAW=[0.005, 2.5])
    with pytest.raises(ValueError, match=r"OBJECT_SWEEP\.SHIFT = \[0\.1\]"):
        _sweep(SHIFT=[0.1])
    with pytest.raises(ValueError, match=r"OBJECT_SWEEP\.NUM_POINTS = 5"):
        _sweep(NUM_POINTS=5)
    with pytest.raises(ValueError, match=r"OBJECT_SWEEP\.MOVING_COST_RATIO = 1\.0"):
        _sweep(MOVING_COST_RATIO=1.0)
    cfg = tiny_cfg()
    cfg.MODEL.MOTION_RCNN.OBJECT_SWEEP.ENABLED = True
    cfg.MODEL.MOTION_RCNN.FLOW_OUTPUT = False
    cfg.MODEL.MASK_ON = False
    with pytest.raises(ValueError, match="OBJECT_SWEEP.ENABLED .* MODEL.MASK_ON True"):
        build_model(cfg)


def test_model_output_with_the_sweep_changes_only_the_moving_detections_motions():
    cfg = tiny_cfg()
    plain = build_model(cfg)
    diversify_motions(plain)
    cfg.MODEL.MOTION_RCNN.OBJECT_SWEEP.ENABLED = True
    cfg.MODEL.MOTION_RCNN.OBJECT_SWEEP.MOVING_COST_RATIO = 0.0  # the head decides
    swept = build_model(cfg)
    swept.load_state_dict(plain.state_dict())
    x = make_input(seed=5, training=False)
    before, after = outputs(plain, x), outputs(swept, x)
    a, b = before["instances"], after["instances"]
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
    assert torch.equal(a.pred_masks, b.pred_masks)
    still = a.pred_moving_scores <= 0.5
    assert still.any() and (~still).any()
    assert torch.equal(b.pred_translations[still], a.pred_translations[still])
    assert not torch.equal(b.pred_translations[~still], a.pred_translations[~still])
    # a yaw about y and shifts in x and z: the y of the translation is kept
    shift = b.pred_translations[~still] - a.pred_translations[~still]
    assert float(shift[:, 1].abs().max()) < 1e-4
    assert not torch.equal(before["flow"], after["flow"])


def test_model_output_with_the_sweeps_moving_decision_is_gated_by_it():
    cfg = tiny_cfg()
    plain = build_model(cfg)
    diversify_motions(plain)
    cfg.MODEL.MOTION_RCNN.OBJECT_SWEEP.ENABLED = True  # MOVING_COST_RATIO 0.6 (default)
    swept = build_model(cfg)
    swept.load_state_dict(plain.state_dict())
    x = make_input(seed=5, training=False)
    a, b = outputs(plain, x)["instances"], outputs(swept, x)["instances"]
    assert torch.equal(a.pred_masks, b.pred_masks)
    assert not torch.equal(a.pred_moving_scores, b.pred_moving_scores)  # the sweep's scores
    assert float(b.pred_moving_scores.min()) >= 0.0 and float(b.pred_moving_scores.max()) <= 1.0
    still = b.pred_moving_scores <= 0.5
    assert torch.equal(b.pred_rotations[still], torch.eye(3).expand(int(still.sum()), 3, 3))
    assert torch.equal(b.pred_translations[still], torch.zeros(int(still.sum()), 3))
