"""The ego-motion sweep (geometry/sweep.py) and SweepCameraHead (modeling/camera_head.py)."""
import math

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.geometry import backproject, euler_angles_to_matrix, project
from motion_rcnn_d2.geometry import sweep_costs, sweep_forward_motion
from motion_rcnn_d2.modeling.camera_head import SweepCameraHead

H, W = 48, 96
K = torch.tensor([[80.0, 0.0, 47.5], [0.0, 80.0, 23.5], [0.0, 0.0, 1.0]])


def _texture(u, v):
    """A smooth texture of frame t+1's pixel coordinates (no aliasing for bilinear sampling)."""
    return torch.sin(u / 3.1) + torch.cos(v / 2.3) + 0.5 * torch.sin((u + v) / 5.7)


def _pair(t_z, yaw, batch=1):
    """Frame t+1 is the texture; frame t shows at each pixel x the texture where its point
    P(x) (depth 8..20 m) lands under R = Ry(yaw), t = (0, 0, t_z): the motion explains the
    pair exactly (the static scene of the module docstring)."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                          torch.arange(W, dtype=torch.float32), indexing="ij")
    depth = (8.0 + 12.0 * (H - 1 - v) / (H - 1) + 0.02 * u)[None, None].repeat(batch, 1, 1, 1)
    intrinsics = K.expand(batch, 3, 3)
    points = backproject(depth, intrinsics)
    rotation = euler_angles_to_matrix(torch.tensor([0.0, yaw, 0.0]))
    moved = torch.einsum("ij,bjhw->bihw", rotation, points) + torch.tensor(
        [0.0, 0.0, t_z])[:, None, None]
    pixels, _ = project(moved, intrinsics)
    gray_t = _texture(pixels[:, 0], pixels[:, 1])[:, None]
    gray_t1 = _texture(u, v)[None, None].repeat(batch, 1, 1, 1)
    return gray_t, gray_t1, points, intrinsics


def _bilinear(image, x, y):
    """Independent bilinear sample of a 2D numpy image at (x, y), pixel centres at integers."""
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    x1, y1 = min(x0 + 1, image.shape[1] - 1), min(y0 + 1, image.shape[0] - 1)
    ax, ay = x - x0, y - y0
    return ((1 - ay) * ((1 - ax) * image[y0, x0] + ax * image[y0, x1])
            + ay * ((1 - ax) * image[y1, x0] + ax * image[y1, x1]))


def test_costs_match_a_per_pixel_computation_and_vanish_at_the_true_motion():
    gray_t, gray_t1, points, intrinsics = _pair(-0.8, 0.006)
    gray_t = gray_t + 0.3 * torch.rand(gray_t.shape, generator=torch.Generator().manual_seed(0))
    points[0, :, :3, :5] = 0.0  # invalid depth: not counted
    angles = torch.tensor([[0.0, 0.006, 0.0], [0.0, -0.004, 0.0], [0.01, 0.0, 0.0]])
    rotations = euler_angles_to_matrix(angles)[None]
    translations = torch.tensor([[[0.0, 0.0, -0.8], [0.0, 0.0, -1.3], [0.2, 0.0, -0.5]]])
    costs = sweep_costs(gray_t, gray_t1, points, intrinsics, rotations, translations, 0.4)
    image, first = gray_t1[0, 0].numpy().astype(np.float64), gray_t[0, 0].numpy()
    pts = points[0].numpy().reshape(3, -1).T.astype(np.float64)
    k = K.numpy().astype(np.float64)
    for n in range(3):
        r, t = rotations[0, n].numpy().astype(np.float64), translations[0, n].numpy()
        errors = []
        for i, p in enumerate(pts):
            if p[2] <= 0:
                continue
            q = r @ p + t
            x, y = k[0, 0] * q[0] / q[2] + k[0, 2], k[1, 1] * q[1] / q[2] + k[1, 2]
            if q[2] > 0 and 0 <= x <= W - 1 and 0 <= y <= H - 1:
                errors.append(min(abs(first.flat[i] - _bilinear(image, x, y)), 0.4))
        assert costs[0, n].item() == pytest.approx(np.mean(errors), rel=1e-4, abs=1e-5)
    clean = sweep_costs(*_pair(-0.8, 0.006), rotations, translations, 0.4)
    assert clean[0, 0] < 0.02 and clean[0, 1:].min() > 5 * clean[0, 0]  # bilinear error only


@pytest.mark.parametrize("t_z, yaw", [(-0.8, 0.006), (-1.25, -0.0105), (-0.43, 0.0)])
def test_sweep_recovers_the_forward_motion_and_yaw(t_z, yaw):
    pair = _pair(t_z, yaw)
    estimate_z, estimate_yaw, coarse = sweep_forward_motion(*pair, (-1.6, -0.2, 8),
                                                            (-0.015, 0.015, 5), 1.0)
    # the first grid's costs: every (t_z, yaw) of the grid, t_z major
    z_grid, yaw_grid = torch.meshgrid(torch.linspace(-1.6, -0.2, 8),
                                      torch.linspace(-0.015, 0.015, 5), indexing="ij")
    zeros = torch.zeros(40)
    rotations = euler_angles_to_matrix(torch.stack([zeros, yaw_grid.flatten(), zeros], dim=1))
    translations = torch.stack([zeros, zeros, z_grid.flatten()], dim=1)
    torch.testing.assert_close(coarse, sweep_costs(*pair, rotations[None], translations[None],
                                                   1.0).reshape(1, 8, 5))
    # grid steps 0.2 m and 0.0075 rad; refined to well under the half steps of the 2nd level
    assert estimate_z.item() == pytest.approx(t_z, abs=0.02)
    assert estimate_yaw.item() == pytest.approx(yaw, abs=0.0008)


def test_depth_term_matches_a_per_pixel_computation_and_finds_the_speed_alone():
    """A wall 12 m ahead in both frames' XYZ, frames without texture: only the depth term
    tells the speed (the wall is 12 + t_z m away in frame t+1)."""
    gray_t, gray_t1 = torch.zeros(1, 1, H, W), torch.zeros(1, 1, H, W)
    points = backproject(torch.full((1, 1, H, W), 12.0), K[None])
    depth_t1 = torch.full((1, 1, H, W), 12.0 - 0.9)
    depth_t1[..., :, :10] = 0.0  # invalid: the clamp
    translations = torch.tensor([[[0.0, 0.0, -0.9], [0.0, 0.0, -0.5], [0.1, 0.0, -1.2]]])
    rotations = torch.eye(3).expand(1, 3, 3, 3)
    costs = sweep_costs(gray_t, gray_t1, points, K[None], rotations, translations, 0.5,
                        depth_t1, 0.3)
    for n in range(3):
        t = translations[0, n]
        moved = points[0].reshape(3, -1).T + t
        u = 80.0 * moved[:, 0] / moved[:, 2] + 47.5
        v = 80.0 * moved[:, 1] / moved[:, 2] + 23.5
        inside = (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
        near_invalid = u < 10  # bilinear weights reach the invalid columns 0..9
        gap = torch.where(near_invalid, torch.tensor(0.3),
                          (moved[:, 2] - (12.0 - 0.9)).abs().clamp(max=0.3))
        expected = (gap[inside] * 0.5 / 0.3).mean()
        assert costs[0, n].item() == pytest.approx(expected.item(), rel=1e-4)
    estimate_z, _, _ = sweep_forward_motion(gray_t, gray_t1, points, K[None], (-1.6, -0.2, 8),
                                            (-0.015, 0.015, 5), 0.5, depth_t1, 0.3)
    assert estimate_z.item() == pytest.approx(-0.9, abs=0.01)


def _sweep_head(**kwargs):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.MODEL.CAMERA_MOTION_HEAD.FC_DIM = 32
    cfg.MODEL.CAMERA_MOTION_HEAD.CONV_DIM = 32
    cfg.MODEL.CAMERA_MOTION_HEAD.TRANSLATION_MEAN = [0.1, -0.05, -0.8]
    cfg.MODEL.CAMERA_MOTION_HEAD.SWEEP_STRIDE = 1
    cfg.MODEL.MOTION_RCNN.XYZ_SCALE = 10.0
    for key, value in kwargs.items():
        setattr(cfg.MODEL.CAMERA_MOTION_HEAD, key, value)
    return SweepCameraHead(cfg, ShapeSpec(channels=12, stride=1))


def test_sweep_head_outputs_its_sweep_plus_a_correction():
    gray_t, gray_t1, points, intrinsics = _pair(-1.1, -0.009, batch=2)
    # the network input: frames' channels all equal to the gray values, XYZ / XYZ_SCALE; the
    # head warps frame t+1 over all of frame t's pixels (SWEEP_STRIDE 1)
    x = torch.cat([gray_t.expand(-1, 3, -1, -1), gray_t1.expand(-1, 3, -1, -1), points / 10.0,
                   points / 10.0], dim=1)
    head = _sweep_head(SWEEP_CLAMP=1.0, SWEEP_DEPTH_CLAMP=0.0).eval()  # photometric only
    with torch.no_grad():
        head.predictor.weight.zero_()
        head.predictor.bias.zero_()
        out = head(x, intrinsics)
        expected_z, expected_yaw, _ = sweep_forward_motion(gray_t, gray_t1, points, intrinsics,
                                                        (-1.6, -0.2, 8), (-0.015, 0.015, 5), 1.0)
    torch.testing.assert_close(out["sweep_forward"], expected_z)
    torch.testing.assert_close(out["translations"][:, 2], expected_z)
    torch.testing.assert_close(out["translations"][:, :2], torch.tensor([[0.1, -0.05]] * 2))
    yaw_matrix = euler_angles_to_matrix(torch.stack(
        [torch.zeros(2), expected_yaw, torch.zeros(2)], dim=1))
    torch.testing.assert_close(out["rotations"], yaw_matrix, atol=1e-6, rtol=0)
    assert out["translations"][0, 2].item() == pytest.approx(-1.1, abs=0.02)
    with torch.no_grad():  # the raw output is a correction in units of the scales
        head.predictor.bias[3:6] = torch.tensor([1.0, 0.0, -2.0])
        moved = head(x, intrinsics)
    scale = head.translation_scale
    torch.testing.assert_close(moved["translations"] - out["translations"],
                               torch.tensor([[scale, 0.0, -2 * scale]] * 2))
    with pytest.raises(ValueError, match="needs the intrinsics"):
        head(x)


def test_sweep_head_refuses_what_it_cannot_sweep():
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    with pytest.raises(ValueError, match="XYZ_INPUT True"):
        SweepCameraHead(cfg, ShapeSpec(channels=6, stride=1))
    with pytest.raises(ValueError, match="SWEEP_YAW = \\[0.1, -0.1, 3\\]"):
        _sweep_head(SWEEP_YAW=[0.1, -0.1, 3])
    with pytest.raises(ValueError, match="SWEEP_FORWARD = \\[-1.0, 0.0\\]"):
        _sweep_head(SWEEP_FORWARD=[-1.0, 0.0])
    with pytest.raises(ValueError, match="ROTATION_PARAM 'euler_sines'"):
        _sweep_head(ROTATION_PARAM="quaternion")
