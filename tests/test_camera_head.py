"""Camera motion head: shapes, output scaling, identity at zero output, losses (METHOD.md 3, 6)."""
import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.geometry import euler_sines_to_matrix, raw_quaternion_to_matrix, rotation_z
from motion_rcnn_d2.modeling.camera_head import CameraMotionHead, build_camera_motion_head


def _head(**kwargs):
    args = dict(conv_dim=4, pool_size=7, num_fc=2, fc_dim=16, rotation_scale=0.01,
                translation_scale=0.5)
    args.update(kwargs)
    return CameraMotionHead(ShapeSpec(channels=8), **args)


def _set_output(head, bias):
    with torch.no_grad():
        head.predictor.weight.zero_()
        head.predictor.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


@pytest.mark.parametrize("rotation_param", ["euler_sines", "quaternion"])
def test_zero_output_is_identity_and_shapes(rotation_param):
    head = _head(rotation_param=rotation_param)
    _set_output(head, torch.zeros(head.predictor.out_features))
    pred = head(torch.randn(2, 8, 2, 3))  # smaller than the 7x7 grid: pooling enlarges it
    assert head.predictor.out_features == (3 if rotation_param == "euler_sines" else 4) + 3 + 2
    assert torch.allclose(pred["rotations"], torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.equal(pred["translations"], torch.zeros(2, 3))
    assert pred["moving_logits"].shape == (2, 2)
    assert torch.allclose(pred["moving_probs"], torch.full((2,), 0.5))


def test_outputs_are_scaled():
    head = _head()
    bias = [3.0, -2.0, 1.0, 0.4, -1.0, 2.0, 0.0, math.log(3.0)]
    _set_output(head, bias)
    pred = head(torch.randn(1, 8, 5, 9))
    sines = torch.tensor([[0.03, -0.02, 0.01]])
    assert torch.allclose(pred["rotation_params"], sines)
    assert torch.allclose(pred["rotations"], euler_sines_to_matrix(sines), atol=1e-7)
    assert torch.allclose(pred["translations"], torch.tensor([[0.2, -0.5, 1.0]]))
    assert torch.allclose(pred["moving_probs"], torch.tensor([0.75]))


def test_quaternion_outputs_are_scaled():
    head = _head(rotation_param="quaternion", moving_on=False)
    _set_output(head, [0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    pred = head(torch.randn(1, 8, 3, 3))
    expected = raw_quaternion_to_matrix(torch.tensor([[0.0, 0.02, 0.0, 0.0]]))
    assert torch.allclose(pred["rotations"], expected, atol=1e-7)
    assert pred["moving_logits"] is None
    assert torch.equal(pred["moving_probs"], torch.ones(1))


def test_losses_zero_for_exact_predictions():
    head = _head()
    gt_rot = rotation_z(torch.tensor([0.01, -0.02]))
    gt_trans = torch.tensor([[0.1, 0.0, 1.0], [0.0, -0.2, 0.5]])
    gt_moving = torch.tensor([True, False])
    pred = {"rotations": gt_rot, "translations": gt_trans,
            "moving_logits": torch.tensor([[-50.0, 50.0], [50.0, -50.0]])}
    losses = head.losses(pred, gt_rot, gt_trans, gt_moving)
    assert set(losses) == {"loss_cam_rot", "loss_cam_trans", "loss_cam_moving"}
    for value in losses.values():
        assert float(value) < 1e-8


def test_losses_hand_computed():
    """Prediction = identity, zero translation, logits 0; GT Rz(0.004) and t = (0.3, 0, 0)."""
    head = _head()
    theta = 0.004
    gt_rot = rotation_z(torch.tensor([theta, theta]))
    gt_trans = torch.tensor([[0.3, 0.0, 0.0], [0.3, 0.0, 0.0]])
    pred = {"rotations": torch.eye(3).expand(2, 3, 3), "translations": torch.zeros(2, 3),
            "moving_logits": torch.zeros(2, 2)}
    losses = head.losses(pred, gt_rot, gt_trans, torch.tensor([True, False]))
    # l_R: two entries +-sin(theta)/0.01 and two (cos(theta) - 1)/0.01, all |x| < 1 -> 0.5 x^2
    l_rot = 2 * 0.5 * (math.sin(theta) / 0.01) ** 2 + 2 * 0.5 * ((math.cos(theta) - 1) / 0.01) ** 2
    l_trans = 0.5 * (0.3 / 0.5) ** 2
    # only the moving image (1 of 2) counts for rotation and translation
    assert float(losses["loss_cam_rot"]) == pytest.approx(l_rot / 2, rel=1e-4)
    assert float(losses["loss_cam_trans"]) == pytest.approx(l_trans / 2, rel=1e-5)
    assert float(losses["loss_cam_moving"]) == pytest.approx(math.log(2.0), rel=1e-5)

    still = _head(moving_on=False)
    losses = still.losses(pred, gt_rot, gt_trans, torch.tensor([True, False]))
    assert set(losses) == {"loss_cam_rot", "loss_cam_trans"}  # always supervised, never gated
    assert float(losses["loss_cam_trans"]) == pytest.approx(l_trans, rel=1e-5)


def test_every_parameter_gets_a_gradient():
    head = _head(dropout=0.5)
    pred = head(torch.randn(2, 8, 4, 6))
    losses = head.losses(pred, torch.eye(3).expand(2, 3, 3), torch.ones(2, 3),
                         torch.tensor([True, False]))
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())
    assert float(head.predictor.weight.detach().std()) < 0.01  # small-std output init


@pytest.mark.parametrize("norm", ["", "GN"])
def test_a_conv_pushed_negative_dies_without_norm_and_not_with_it(norm):
    """The failure GN prevents: once every 1x1-conv output is negative for every input, the
    head's output no longer depends on the input (and the conv gets no gradient)."""
    torch.manual_seed(0)
    head = _head(norm=norm, conv_dim=32)
    assert isinstance(head.conv.norm, torch.nn.GroupNorm) == (norm == "GN")
    with torch.no_grad():
        head.conv.weight.copy_(-head.conv.weight.abs())  # non-negative inputs -> outputs < 0
    x = torch.rand(3, 8, 3, 8) + 0.1  # like a ReLU'd C6 map
    pred = head(x)
    varies = float(pred["translations"].std(dim=0).max()) > 0
    (pred["translations"].sum() + pred["rotation_params"].sum()).backward()
    conv_has_gradient = float(head.conv.weight.grad.abs().max()) > 0
    assert varies == conv_has_gradient == (norm == "GN")


def test_norm_comes_from_the_config():
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    assert cfg.MODEL.CAMERA_MOTION_HEAD.NORM == ""
    cfg.MODEL.CAMERA_MOTION_HEAD.NORM = "GN"
    head = build_camera_motion_head(cfg, ShapeSpec(channels=64))
    assert isinstance(head.conv.norm, torch.nn.GroupNorm)
    assert head.conv.bias is None
    cfg.MODEL.CAMERA_MOTION_HEAD.CONV_DIM = 16
    with pytest.raises(ValueError, match="MODEL.CAMERA_MOTION_HEAD.CONV_DIM"):
        build_camera_motion_head(cfg, ShapeSpec(channels=64))
