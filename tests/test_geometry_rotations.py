"""Rotation conventions and round trips (motion_rcnn_d2.geometry.rotations)."""
import math

import numpy as np
import pytest
import torch

from motion_rcnn_d2.geometry import (
    euler_angles_to_matrix,
    euler_sines_to_matrix,
    matrix_to_euler_sines,
    matrix_to_quaternion,
    matrix_to_raw_quaternion,
    quaternion_to_matrix,
    raw_quaternion_to_matrix,
    rotation_angle_deg,
    rotation_x,
    rotation_y,
    rotation_z,
)

D90 = math.pi / 2
F64 = torch.float64


def _np_rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _np_ry(b):
    c, s = math.cos(b), math.sin(b)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _np_rz(g):
    c, s = math.cos(g), math.sin(g)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _random_angles(n, max_deg=80.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=gen, dtype=F64) * 2 - 1) * math.radians(max_deg)


def _axis_angle_matrix(axis, angle):
    """Rodrigues: R = I + sin(t) [n]x + (1 - cos(t)) [n]x^2 (independent of the quaternion code)."""
    n = np.asarray(axis, dtype=np.float64)
    n = n / np.linalg.norm(n)
    cross = np.array([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def test_elementary_rotations_map_axes():
    x, y, z = torch.eye(3, dtype=F64)
    angle = torch.tensor(D90, dtype=F64)
    # 90 deg about z maps x (right) to y (down); about x maps y to z; about y maps z to x
    torch.testing.assert_close(rotation_z(angle) @ x, y, atol=1e-12, rtol=0)
    torch.testing.assert_close(rotation_x(angle) @ y, z, atol=1e-12, rtol=0)
    torch.testing.assert_close(rotation_y(angle) @ z, x, atol=1e-12, rtol=0)


def test_euler_order_explicit_entries():
    # gamma = 90 deg about z only
    r = euler_angles_to_matrix(torch.tensor([0.0, 0.0, D90], dtype=F64))
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    torch.testing.assert_close(r, expected, atol=1e-12, rtol=0)
    # alpha = beta = 90 deg: Rx(90) @ Ry(90) = [[0,0,1],[1,0,0],[0,1,0]]; Ry(90) @ Rx(90) differs
    r = euler_angles_to_matrix(torch.tensor([D90, D90, 0.0], dtype=F64))
    expected = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)
    torch.testing.assert_close(r, expected, atol=1e-12, rtol=0)


def test_euler_matches_hand_built_product():
    angles = _random_angles(16, max_deg=170.0, seed=1)
    r = euler_angles_to_matrix(angles).numpy()
    for i, (a, b, g) in enumerate(angles.tolist()):
        np.testing.assert_allclose(r[i], _np_rz(g) @ _np_rx(a) @ _np_ry(b), atol=1e-12)


def test_euler_sines_round_trip():
    angles = _random_angles(200, seed=2)
    r = euler_sines_to_matrix(torch.sin(angles))
    torch.testing.assert_close(r, euler_angles_to_matrix(angles), atol=1e-9, rtol=0)
    torch.testing.assert_close(matrix_to_euler_sines(r), torch.sin(angles), atol=1e-9, rtol=0)
    # explicit values: alpha=30, beta=-20, gamma=45 deg
    a = torch.tensor([30.0, -20.0, 45.0], dtype=F64).deg2rad()
    sines = matrix_to_euler_sines(euler_angles_to_matrix(a))
    expected = torch.tensor([0.5, -math.sin(math.radians(20)), math.sqrt(0.5)], dtype=F64)
    torch.testing.assert_close(sines, expected, atol=1e-12, rtol=0)


def test_euler_sines_clipping_keeps_rotation_and_gradient_finite():
    sines = torch.tensor([[1.5, -2.0, 1.0], [0.0, 0.0, 0.0]], dtype=F64, requires_grad=True)
    r = euler_sines_to_matrix(sines)
    torch.testing.assert_close(r[1], torch.eye(3, dtype=F64))
    eye = torch.eye(3, dtype=F64).expand(2, 3, 3)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye, atol=1e-9, rtol=0)
    (r * torch.arange(9, dtype=F64).reshape(3, 3)).sum().backward()
    assert torch.isfinite(sines.grad).all()


def test_quaternion_matches_rodrigues():
    gen = np.random.default_rng(3)
    for _ in range(10):
        axis = gen.normal(size=3)
        angle = gen.uniform(-math.pi, math.pi)
        n = axis / np.linalg.norm(axis)
        q = np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * n]) * 2.5  # unnormalised
        r = quaternion_to_matrix(torch.from_numpy(q)).numpy()
        np.testing.assert_allclose(r, _axis_angle_matrix(axis, angle), atol=1e-12)


def test_quaternion_round_trips_including_half_turns():
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(300, 4, generator=gen, dtype=F64)
    q = q / q.norm(dim=-1, keepdim=True)
    q_back = matrix_to_quaternion(quaternion_to_matrix(q))
    assert (q_back[:, 0] >= 0).all()
    torch.testing.assert_close(q_back, q * torch.sign(q[:, :1]), atol=1e-9, rtol=0)
    # 180 deg turns (w = 0) and near-180 turns exercise every branch of the conversion
    axes = ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, -2, 3])
    half_turns = [_axis_angle_matrix(axis, math.pi) for axis in axes]
    near = [_axis_angle_matrix([0.3, -1, 0.2], math.radians(179.9))]
    r = torch.from_numpy(np.stack(half_turns + near + [np.eye(3)]))
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(r)), r, atol=1e-9, rtol=0)
    q_x = matrix_to_quaternion(r[0])
    torch.testing.assert_close(q_x.abs(), torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=F64))


def test_raw_quaternion_zero_is_identity_and_round_trips():
    eye = torch.eye(3)
    torch.testing.assert_close(raw_quaternion_to_matrix(torch.zeros(5, 4)), eye.expand(5, 3, 3))
    torch.testing.assert_close(matrix_to_raw_quaternion(eye), torch.zeros(4))
    r = euler_angles_to_matrix(_random_angles(50, seed=5))
    raw = matrix_to_raw_quaternion(r)
    torch.testing.assert_close(raw_quaternion_to_matrix(raw), r, atol=1e-9, rtol=0)
    # a positive multiple of q gives the same rotation: raw (1 - 2w, 2x, 2y, 2z) ~ q
    q = matrix_to_quaternion(r)
    raw2 = torch.cat([1 - 2 * q[:, :1], 2 * q[:, 1:]], dim=-1)
    torch.testing.assert_close(raw_quaternion_to_matrix(raw2), r, atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "r1, r2, expected",
    [
        (torch.eye(3), torch.eye(3), 0.0),
        (torch.eye(3), rotation_x(torch.tensor(D90)), 90.0),
        (torch.eye(3), rotation_z(torch.tensor(math.pi)), 180.0),
        # Rz(90) Rx(90) = [[0,0,1],[1,0,0],[0,1,0]]: trace 0 -> 120 deg about (1,1,1)
        (torch.eye(3), rotation_z(torch.tensor(D90)) @ rotation_x(torch.tensor(D90)), 120.0),
        # relative rotation Rz(30 deg)^T Rz(75 deg) = Rz(45 deg) (radians rounded to 1e-4)
        (rotation_z(torch.tensor(0.5236)), rotation_z(torch.tensor(1.3090)), 45.0),
    ],
)
def test_rotation_angle_deg_hand_cases(r1, r2, expected):
    assert float(rotation_angle_deg(r1, r2)) == pytest.approx(expected, abs=1e-3)
    assert float(rotation_angle_deg(r2, r1)) == pytest.approx(expected, abs=1e-3)


def test_rotation_angle_deg_batched():
    angles = torch.tensor([0.0, 10.0, 45.0, 89.0], dtype=F64)
    r = rotation_y(angles.deg2rad())
    torch.testing.assert_close(rotation_angle_deg(torch.eye(3, dtype=F64), r), angles)
