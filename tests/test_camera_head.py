"""Camera motion head: shapes, output scaling, identity at zero output, losses (docs/method.md sections 3, 6)."""
import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.geometry import euler_sines_to_matrix, raw_quaternion_to_matrix, rotation_z
import torch.nn.functional as F
from motion_rcnn_d2.modeling.camera_head import (
    CameraMotionHead,
    CorrelationCameraHead,
    build_camera_motion_head,
)


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
    cfg.MODEL.CAMERA_MOTION_HEAD.NAME = "CameraMotionHead"
    cfg.MODEL.CAMERA_MOTION_HEAD.NORM = "GN"
    head = build_camera_motion_head(cfg, ShapeSpec(channels=64))
    assert isinstance(head.conv.norm, torch.nn.GroupNorm)
    assert head.conv.bias is None
    cfg.MODEL.CAMERA_MOTION_HEAD.CONV_DIM = 16
    with pytest.raises(ValueError, match="MODEL.CAMERA_MOTION_HEAD.CONV_DIM"):
        build_camera_motion_head(cfg, ShapeSpec(channels=64))


def test_running_standardize_matches_the_moving_moments():
    """First batch sets the moments, later ones move them by `momentum`; eval uses them as
    they are; no gradient flows through them."""
    from motion_rcnn_d2.modeling.layers import RunningStandardize

    torch.manual_seed(0)
    layer = RunningStandardize(5, momentum=0.25)
    batches = [torch.randn(2, 5) * 3 + 7 for _ in range(3)]
    mean, sq = batches[0].mean(0), batches[0].pow(2).mean(0)
    layer(batches[0])
    for batch in batches[1:]:
        out = layer(batch)
        mean, sq = 0.75 * mean + 0.25 * batch.mean(0), 0.75 * sq + 0.25 * batch.pow(2).mean(0)
        expected = (batch - mean) / torch.sqrt(sq - mean ** 2 + layer.eps)
        assert torch.allclose(out, expected, atol=1e-5)
    layer.eval()
    before = layer.running_mean.clone()
    x = torch.randn(4, 5, requires_grad=True)
    y = layer(x)
    assert torch.equal(layer.running_mean, before)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.rsqrt(sq - mean ** 2 + layer.eps).expand(4, 5), atol=1e-5)


def test_translation_mean_is_added_and_comes_from_the_config():
    head = _head(translation_mean=(0.0, 0.1, -0.9), translation_scale=0.2)
    _set_output(head, [0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0])
    pred = head(torch.randn(2, 8, 3, 4))
    assert torch.allclose(pred["translations"], torch.tensor([[0.2, 0.1, -1.1]] * 2))
    with pytest.raises(ValueError, match="TRANSLATION_MEAN"):
        _head(translation_mean=(0.0, 1.0))
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    assert cfg.MODEL.CAMERA_MOTION_HEAD.STANDARDIZE_INPUT
    cfg.MODEL.CAMERA_MOTION_HEAD.NAME = "CameraMotionHead"
    cfg.MODEL.CAMERA_MOTION_HEAD.CONV_DIM = 32
    cfg.MODEL.CAMERA_MOTION_HEAD.TRANSLATION_MEAN = [0.0, 0.0, -0.5]
    head = build_camera_motion_head(cfg, ShapeSpec(channels=64))
    assert head.translation_mean.tolist() == [0.0, 0.0, -0.5]
    cfg.MODEL.CAMERA_MOTION_HEAD.STANDARDIZE_INPUT = False  # the thesis's head
    assert isinstance(build_camera_motion_head(cfg, ShapeSpec(channels=64)).standardize,
                      torch.nn.Identity)


def _fit(head, optimizer, inputs, gt_translations, steps):
    """`steps` optimizer steps on random pairs of the inputs (batch 2, still camera rotation,
    moving), then eval mode."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randperm(len(inputs), generator=gen)[:2]
        losses = head.losses(head(inputs[idx]), torch.eye(3).expand(2, 3, 3),
                             gt_translations[idx], torch.ones(2, dtype=torch.bool))
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    head.eval()


def test_head_separates_four_camera_speeds():
    """A tiny overfit in the regime of training: pooled features nearly the same for every
    image (spread 10 % of their mean), SGD at a batch of 2. The head's predictions follow the
    four speeds; a head that predicted one motion for every input would stay at their mean."""
    torch.manual_seed(0)
    common = torch.rand(1, 8, 3, 8) * 2
    direction = torch.randn(1, 8, 3, 8)
    speeds = torch.tensor([-0.5, -0.75, -1.0, -1.2])
    x = torch.relu(common + 0.1 * (speeds[:, None, None, None] + 0.86) / 0.27 * direction)
    gt_t = torch.zeros(4, 3)
    gt_t[:, 2] = speeds
    head = _head(conv_dim=32, norm="GN", fc_dim=64, translation_mean=(0.0, 0.0, -0.86),
                 translation_scale=0.2)
    # the CPU config's LR (0.01) x the head's LR_FACTOR (0.1)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.001, momentum=0.9)
    _fit(head, optimizer, x, gt_t, steps=150)
    predicted = head(x)["translations"][:, 2].detach()
    assert float((predicted - speeds).abs().max()) < 0.05  # the spread of the speeds is 0.7 m
    assert torch.equal(predicted.argsort(), speeds.argsort())


def test_correlation_matches_a_direct_computation():
    from motion_rcnn_d2.modeling.camera_head import correlation

    torch.manual_seed(0)
    f_t, f_t1 = torch.randn(2, 5, 6, 7), torch.randn(2, 5, 6, 7)
    cost = correlation(f_t, f_t1, radius=2)
    assert cost.shape == (2, 25, 6, 7)
    for b, k, y, x in [(0, 0, 0, 0), (1, 12, 3, 4), (0, 7, 5, 6), (1, 24, 2, 1), (0, 19, 4, 0)]:
        dy, dx = k // 5 - 2, k % 5 - 2
        inside = 0 <= y + dy < 6 and 0 <= x + dx < 7
        expected = float((f_t[b, :, y, x] * f_t1[b, :, y + dy, x + dx]).mean()) if inside else 0.0
        assert float(cost[b, k, y, x]) == pytest.approx(expected, abs=1e-6)
    # a map shifted by (dy, dx) = (1, -2) correlates best at that displacement
    f_t = torch.randn(2, 64, 6, 7)
    shifted = torch.roll(f_t, shifts=(1, -2), dims=(2, 3))
    best = correlation(f_t, shifted, radius=2)[:, :, 1:4, 2:5].argmax(dim=1)
    assert (best == (1 + 2) * 5 + (-2 + 2)).all()


def _correlation_head(**kwargs):
    args = dict(conv_dim=32, norm="GN", pool_size=2, fc_dim=32, translation_mean=(0.0, 0.0, -0.8),
                translation_scale=0.2, correlation_radius=2)
    args.update(kwargs)
    return CorrelationCameraHead(ShapeSpec(channels=12, stride=1), **args)


def test_correlation_head_shapes_zero_output_and_input_check():
    head = _correlation_head()
    _set_output(head, torch.zeros(head.predictor.out_features))
    pred = head(torch.randn(2, 12, 64, 96))
    assert torch.allclose(pred["rotations"], torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(pred["translations"], torch.tensor([[0.0, 0.0, -0.8]] * 2))
    with pytest.raises(ValueError, match="IN_FEATURE 'input'"):
        CorrelationCameraHead(ShapeSpec(channels=3, stride=1))
    with pytest.raises(ValueError, match="IN_FEATURE 'input'"):  # a backbone feature
        CorrelationCameraHead(ShapeSpec(channels=2048, stride=64))
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    assert cfg.MODEL.CAMERA_MOTION_HEAD.NAME == "CorrelationCameraHead"  # the default
    assert cfg.MODEL.CAMERA_MOTION_HEAD.IN_FEATURE == "input"
    cfg.MODEL.CAMERA_MOTION_HEAD.CONV_DIM = 32
    cfg.MODEL.CAMERA_MOTION_HEAD.CORRELATION_RADIUS = 3
    head = build_camera_motion_head(cfg, ShapeSpec(channels=6, stride=1))
    assert isinstance(head, CorrelationCameraHead) and head.radius == 3 and not head.with_xyz


def test_correlation_head_separates_four_camera_motions():
    """Tiny overfit: frame t+1 is frame t shifted sideways by 0, 8, 16 or 24 px and the camera
    translation along x follows the shift. After 120 Adam steps at batch 2 the head tells the
    four pairs apart (the spread of the targets is 0.6 m)."""
    torch.manual_seed(0)
    frames = torch.randn(4, 3, 64, 128)
    frames = F.avg_pool2d(frames, 3, stride=1, padding=1) * 3  # texture a few pixels wide
    shifts = [0, 8, 16, 24]
    pairs = torch.cat([frames, torch.stack([torch.roll(f, s, dims=2) for f, s in
                                            zip(frames, shifts)])], dim=1)
    pairs = torch.cat([pairs, torch.zeros(4, 6, 64, 128)], dim=1)  # XYZ channels (no depth)
    gt_t = torch.zeros(4, 3)
    gt_t[:, 0] = torch.tensor([-0.3, -0.1, 0.1, 0.3])
    gt_t[:, 2] = -0.8
    head = _correlation_head(translation_mean=(0.0, 0.0, -0.8))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    _fit(head, optimizer, pairs, gt_t, steps=120)
    predicted = head(pairs)["translations"][:, 0].detach()
    assert float((predicted - gt_t[:, 0]).abs().max()) < 0.05
