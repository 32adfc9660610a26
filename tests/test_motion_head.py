"""RoI motion head and its losses: class selection, scaling, motion loss, RoI flow loss."""
import math

import pytest
import torch
from detectron2.layers import ShapeSpec

from motion_rcnn_d2.geometry import (
    compose_flow,
    euler_angles_to_matrix,
    matrix_to_euler_sines,
    rotation_y,
)
from motion_rcnn_d2.modeling.roi_heads.motion_head import FCMotionHead
from motion_rcnn_d2.modeling.motion_losses import (
    FlowSupervision,
    roi_flow_loss,
    roi_grid_intrinsics,
)

SCALES = dict(rotation_scale=0.01, translation_scale=0.5, pivot_scale=10.0)


def _head(**kwargs):
    args = dict(num_classes=3, num_fc=0, **SCALES)
    args.update(kwargs)
    return FCMotionHead(ShapeSpec(channels=5), **args)


def _set_output(head, bias):
    with torch.no_grad():
        head.predictor.weight.zero_()
        head.predictor.bias.copy_(bias.flatten())


def test_class_selection_and_scaling():
    head = _head()
    bias = torch.arange(3 * 11, dtype=torch.float32).reshape(3, 11) / 100.0
    _set_output(head, bias)
    pred = head(torch.randn(2, 5), torch.tensor([2, 0]))
    for row, cls in enumerate([2, 0]):
        b = bias[cls]
        assert torch.allclose(pred["rotation_params"][row], b[:3] * 0.01)
        assert torch.allclose(pred["translations"][row], b[3:6] * 0.5)
        assert torch.allclose(pred["pivots"][row], b[6:9] * 10.0)
        assert torch.allclose(pred["moving_logits"][row], b[9:11])
    assert pred["rotations"].shape == (2, 3, 3)


@pytest.mark.parametrize("rotation_param", ["euler_sines", "quaternion"])
def test_zero_output_is_identity(rotation_param):
    head = _head(num_fc=2, fc_dim=8, cls_agnostic=True, rotation_param=rotation_param)
    assert head.predictor.out_features == (3 if rotation_param == "euler_sines" else 4) + 8
    _set_output(head, torch.zeros(head.predictor.out_features))
    pred = head(torch.randn(4, 5), torch.tensor([0, 1, 2, 1]))
    assert torch.allclose(pred["rotations"], torch.eye(3).expand(4, 3, 3), atol=1e-6)
    assert torch.equal(pred["translations"], torch.zeros(4, 3))


def _gt(num=3):
    angles = torch.zeros(num, 3)
    angles[:, 1] = torch.linspace(-0.02, 0.03, num)
    rotations = euler_angles_to_matrix(angles)
    translations = torch.linspace(-1, 1, num * 3).reshape(num, 3)
    pivots = torch.linspace(-20, 20, num * 3).reshape(num, 3)
    return rotations, translations, pivots, torch.tensor([True, False, True])[:num]


def test_motion_loss_zero_when_the_head_outputs_the_targets():
    rotations, translations, pivots, moving = _gt()
    head = _head(cls_agnostic=True)
    preds = []
    for k in range(3):  # one RoI at a time: the output layer's bias = the normalised target
        logits = torch.tensor([-30.0, 30.0]) if moving[k] else torch.tensor([30.0, -30.0])
        _set_output(head, torch.cat([matrix_to_euler_sines(rotations[k]) / 0.01,
                                     translations[k] / 0.5, pivots[k] / 10.0, logits]))
        preds.append(head(torch.randn(1, 5), torch.zeros(1, dtype=torch.int64)))
    pred = {key: torch.cat([p[key] for p in preds]) for key in preds[0]}
    losses = head.losses(pred, rotations, translations, pivots, moving)
    assert set(losses) == {"loss_motion_rot", "loss_motion_trans", "loss_motion_pivot",
                           "loss_motion_moving"}
    for value in losses.values():
        assert float(value) < 1e-6


def test_motion_loss_hand_computed():
    """Prediction: identity, t = 0, p = 0, logits 0, for 2 RoIs, one moving and one still."""
    head = _head(loss_weights={"pivot": 2.0})
    gt_rot = rotation_y(torch.tensor([0.005, 0.005]))
    gt_trans = torch.tensor([[0.5, 0.0, 0.0], [0.5, 0.0, 0.0]])  # 1 in normalised units
    gt_piv = torch.tensor([[0.0, 0.0, 30.0], [0.0, 0.0, 30.0]])  # 3 in normalised units
    pred = {"rotations": torch.eye(3).expand(2, 3, 3), "translations": torch.zeros(2, 3),
            "pivots": torch.zeros(2, 3), "moving_logits": torch.zeros(2, 2)}
    losses = head.losses(pred, gt_rot, gt_trans, gt_piv, torch.tensor([True, False]))
    s, c = math.sin(0.005) / 0.01, (math.cos(0.005) - 1) / 0.01
    assert float(losses["loss_motion_rot"]) == pytest.approx((s * s + c * c) / 2, rel=1e-4)
    assert float(losses["loss_motion_trans"]) == pytest.approx(0.5 / 2, rel=1e-6)  # still: 0
    assert float(losses["loss_motion_pivot"]) == pytest.approx(2.0 * 2 * (3 - 0.5) / 2)
    assert float(losses["loss_motion_moving"]) == pytest.approx(math.log(2.0), rel=1e-6)


def test_motion_loss_without_foreground_touches_the_head():
    head = _head(num_fc=1, fc_dim=8)
    pred = head(torch.zeros(0, 5), torch.zeros(0, dtype=torch.int64))
    losses = head.losses(pred, torch.zeros(0, 3, 3), torch.zeros(0, 3), torch.zeros(0, 3),
                         torch.zeros(0, dtype=torch.bool))
    total = sum(losses.values())
    assert float(total) == 0.0
    total.backward()
    assert all(p.grad is not None for p in head.parameters())


def test_roi_grid_intrinsics_rays():
    """K_grid^-1 [j, i, 1] is the ray of the grid point u_j = x0 - 0.5 + (j + 0.5) w / m."""
    k = torch.tensor([[300.0, 0.0, 95.5], [0.0, 290.0, 63.5], [0.0, 0.0, 1.0]])
    boxes = torch.tensor([[10.3, 20.7, 47.1, 33.2], [0.0, 0.0, 7.0, 7.0]])
    m = 7
    grid_k = roi_grid_intrinsics(k.expand(2, 3, 3), boxes, m)
    j = torch.arange(m, dtype=torch.float32)
    for r, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        u = x0 - 0.5 + (j + 0.5) * (x1 - x0) / m
        v = y0 - 0.5 + (j + 0.5) * (y1 - y0) / m
        expected = torch.stack([(u - 95.5) / 300.0, (v - 63.5) / 290.0], dim=1)
        pix = torch.stack([j, j, torch.ones(m)], dim=1)
        rays = (torch.linalg.inv(grid_k[r]) @ pix.T).T
        assert torch.allclose(rays[:, :2], expected, atol=1e-6)


def _plane_targets(height=60, width=90, depth=12.0):
    k = torch.tensor([[80.0, 0.0, 44.5], [0.0, 80.0, 29.5], [0.0, 0.0, 1.0]])
    d = torch.full((1, 1, height, width), depth)
    camera_t = torch.tensor([[0.4, -0.2, -1.5]])  # pure translation: flow is linear in (u, v)
    flow, valid = compose_flow(d, k[None], camera_rotation=torch.eye(3)[None],
                               camera_translation=camera_t)
    return FlowSupervision(depth=d, intrinsics=k[None], flow=flow, flow_valid=valid,
                           camera_rotation=torch.eye(3)[None], camera_translation=camera_t)


def _roi_loss(targets, boxes, rotations, masks=1.0, moving=1.0):
    num = boxes.shape[0]
    return roi_flow_loss(boxes, torch.zeros(num, dtype=torch.int64),
                         torch.full((num, 14, 14), masks), torch.full((num,), moving), rotations,
                         torch.zeros(num, 3), torch.zeros(num, 3), targets, grid_size=9)


def test_roi_flow_loss_zero_for_exact_motion_on_any_box():
    """A still scene under camera translation: bilinear samples of the GT flow are exact, so the
    composed grid flow must match on boxes of any size and sub-pixel position."""
    targets = _plane_targets()
    boxes = torch.tensor([[10.3, 5.6, 47.9, 41.2], [60.0, 20.0, 69.0, 29.0],
                          [2.2, 30.1, 20.0, 59.0]])
    loss = _roi_loss(targets, boxes, torch.eye(3).expand(3, 3, 3))
    assert float(loss) < 1e-3


def test_roi_flow_loss_of_a_wrong_object_motion():
    """Object rotation R about the camera origin (pivot 0) on masks 1: its flow error is the
    difference of two full-image compose_flow results at pixel-centre grid points."""
    targets = _plane_targets()
    rotation = rotation_y(torch.tensor(0.05))
    box = torch.tensor([[20.0, 10.0, 29.0, 19.0]])  # 9 x 9 px, grid = pixel centres
    loss = _roi_loss(targets, box, rotation[None])
    moved, _ = compose_flow(targets.depth, targets.intrinsics, torch.ones(1, 1, 60, 90),
                            rotation[None, None], torch.zeros(1, 1, 3), torch.zeros(1, 1, 3),
                            targets.camera_rotation, targets.camera_translation)
    expected = (moved - targets.flow)[0, :, 10:19, 20:29].abs().sum(dim=0).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)
    # a still object (moving probability 0) or an empty mask leaves only the exact camera flow
    assert float(_roi_loss(targets, box, rotation[None], moving=0.0)) < 1e-3
    assert float(_roi_loss(targets, box, rotation[None], masks=0.0)) < 1e-3


def test_roi_flow_loss_ignores_invalid_points_and_handles_no_roi():
    targets = _plane_targets()
    targets.flow_valid[:, :, :45] = False
    box = torch.tensor([[20.0, 10.0, 29.0, 19.0]])
    assert float(_roi_loss(targets, box, rotation_y(torch.tensor([0.3])))) == 0.0
    empty = _roi_loss(targets, torch.zeros(0, 4), torch.zeros(0, 3, 3))
    assert float(empty) == 0.0


def test_gated_motion_is_exact_for_bool_and_blends_probabilities():
    from motion_rcnn_d2.modeling.motion import gated_motion

    rotations = euler_angles_to_matrix(torch.tensor([[0.1, -0.3, 0.2], [0.4, 0.0, -0.1]]))
    translations = torch.tensor([[1.0, -2.0, 0.5], [-0.25, 0.0, 3.0]])
    a, b = gated_motion(rotations, translations, torch.tensor([True, False]))
    assert torch.equal(a[0], rotations[0]) and torch.equal(b[0], translations[0])
    assert torch.equal(a[1], torch.eye(3)) and torch.equal(b[1], torch.zeros(3))
    a, b = gated_motion(rotations[0], translations[0], torch.tensor(False))  # no batch dim
    assert torch.equal(a, torch.eye(3)) and torch.equal(b, torch.zeros(3))
    a, b = gated_motion(rotations, translations, torch.tensor([0.25, 0.5]))
    for k, p in enumerate([0.25, 0.5]):
        assert torch.allclose(a[k], (1 - p) * torch.eye(3) + p * rotations[k], atol=1e-7)
        assert torch.allclose(b[k], p * translations[k])
