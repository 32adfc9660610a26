"""Rotation matrices from Euler angles, Euler sines and quaternions, and the rotation error.

Convention (docs/method.md section 3): angles alpha, beta, gamma about the camera axes x (right),
y (down), z (forward), in radians, composed as

    R = Rz(gamma) @ Rx(alpha) @ Ry(beta),

i.e. a point is first rotated about y, then about x, then about z. Written out with
s_* = sin, c_* = cos:

    R = [[ c_g c_b - s_g s_a s_b,  -s_g c_a,   c_g s_b + s_g s_a c_b ],
         [ s_g c_b + c_g s_a s_b,   c_g c_a,   s_g s_b - c_g s_a c_b ],
         [ -c_a s_b,                s_a,       c_a c_b               ]]

Quaternions are (w, x, y, z) with w the real part. All functions are batched over any
leading dimensions "..." and differentiable.
"""
import torch

__all__ = [
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "euler_angles_to_matrix",
    "euler_sines_to_matrix",
    "matrix_to_euler_sines",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "raw_quaternion_to_matrix",
    "matrix_to_raw_quaternion",
    "rotation_angle_deg",
]

# Smallest value under a square root / as a norm: keeps gradients finite at degenerate inputs.
_TINY = 1e-12


def _stack_matrix(entries):
    """Nine tensors of shape (...) in row-major order -> (..., 3, 3)."""
    return torch.stack(entries, dim=-1).reshape(entries[0].shape + (3, 3))


def _rot_x(s, c):
    """Rx from sine and cosine (...): [[1,0,0],[0,c,-s],[0,s,c]]."""
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return _stack_matrix([one, zero, zero, zero, c, -s, zero, s, c])


def _rot_y(s, c):
    """Ry from sine and cosine (...): [[c,0,s],[0,1,0],[-s,0,c]]."""
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return _stack_matrix([c, zero, s, zero, one, zero, -s, zero, c])


def _rot_z(s, c):
    """Rz from sine and cosine (...): [[c,-s,0],[s,c,0],[0,0,1]]."""
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return _stack_matrix([c, -s, zero, s, c, zero, zero, zero, one])


def rotation_x(angle):
    """Rotation about the x axis (right-handed): Rx(a) = [[1,0,0],[0,cos a,-sin a],[0,sin a,cos a]].

    Args:
        angle: (...) radians.
    Returns:
        (..., 3, 3) rotation matrices.
    """
    return _rot_x(torch.sin(angle), torch.cos(angle))


def rotation_y(angle):
    """Rotation about the y axis: Ry(b) = [[cos b,0,sin b],[0,1,0],[-sin b,0,cos b]].

    Args:
        angle: (...) radians.
    Returns:
        (..., 3, 3) rotation matrices.
    """
    return _rot_y(torch.sin(angle), torch.cos(angle))


def rotation_z(angle):
    """Rotation about the z axis: Rz(g) = [[cos g,-sin g,0],[sin g,cos g,0],[0,0,1]].

    Args:
        angle: (...) radians.
    Returns:
        (..., 3, 3) rotation matrices.
    """
    return _rot_z(torch.sin(angle), torch.cos(angle))


def _euler_from_sin_cos(sin, cos):
    """R = Rz(gamma) @ Rx(alpha) @ Ry(beta) from sin, cos (..., 3) of (alpha, beta, gamma)."""
    rx = _rot_x(sin[..., 0], cos[..., 0])
    ry = _rot_y(sin[..., 1], cos[..., 1])
    rz = _rot_z(sin[..., 2], cos[..., 2])
    return rz @ rx @ ry


def euler_angles_to_matrix(angles):
    """Rotation matrix from Euler angles: R = Rz(gamma) @ Rx(alpha) @ Ry(beta).

    Args:
        angles: (..., 3) radians, (alpha about x, beta about y, gamma about z).
    Returns:
        (..., 3, 3) rotation matrices.
    """
    return _euler_from_sin_cos(torch.sin(angles), torch.cos(angles))


def euler_sines_to_matrix(sines, eps=1e-6):
    """Rotation matrix from the sines of the Euler angles (the network's parametrisation).

    s = clip(sines, -1 + eps, 1 - eps), c = sqrt(1 - s^2) (so every angle is taken in
    (-90, 90) degrees), R = Rz(gamma) @ Rx(alpha) @ Ry(beta). Clipping keeps c > 0 and the
    gradient of c finite.

    Args:
        sines: (..., 3) unitless, sines of (alpha, beta, gamma).
        eps: clipping margin.
    Returns:
        (..., 3, 3) rotation matrices.
    """
    s = sines.clamp(-1.0 + eps, 1.0 - eps)
    c = torch.sqrt(1.0 - s * s)
    return _euler_from_sin_cos(s, c)


def matrix_to_euler_sines(rotation):
    """Sines of (alpha, beta, gamma) of R = Rz(gamma) @ Rx(alpha) @ Ry(beta) (inverse of
    `euler_sines_to_matrix`, valid when every |angle| < 90 deg, i.e. all cosines > 0).

    From the expanded matrix (module docstring):
        sin(alpha) = R[2,1]
        sin(beta)  = -R[2,0] / sqrt(R[2,0]^2 + R[2,2]^2)     (that root is cos(alpha) > 0)
        sin(gamma) = -R[0,1] / sqrt(R[0,1]^2 + R[1,1]^2)

    Args:
        rotation: (..., 3, 3) rotation matrices.
    Returns:
        (..., 3) unitless sines, each in [-1, 1].
    """
    r = rotation
    sin_a = r[..., 2, 1].clamp(-1.0, 1.0)
    norm_b = torch.sqrt((r[..., 2, 0] ** 2 + r[..., 2, 2] ** 2).clamp_min(_TINY))
    norm_g = torch.sqrt((r[..., 0, 1] ** 2 + r[..., 1, 1] ** 2).clamp_min(_TINY))
    sin_b = (-r[..., 2, 0] / norm_b).clamp(-1.0, 1.0)
    sin_g = (-r[..., 0, 1] / norm_g).clamp(-1.0, 1.0)
    return torch.stack([sin_a, sin_b, sin_g], dim=-1)


def quaternion_to_matrix(quaternion):
    """Rotation matrix of a quaternion q = (w, x, y, z), normalised here to unit length:

        R = [[1 - 2(y^2+z^2), 2(xy - wz),     2(xz + wy)    ],
             [2(xy + wz),     1 - 2(x^2+z^2), 2(yz - wx)    ],
             [2(xz - wy),     2(yz + wx),     1 - 2(x^2+y^2)]]

    Args:
        quaternion: (..., 4) (w, x, y, z), any non-zero length.
    Returns:
        (..., 3, 3) rotation matrices.
    """
    norm = torch.sqrt((quaternion * quaternion).sum(-1, keepdim=True).clamp_min(_TINY))
    w, x, y, z = (quaternion / norm).unbind(-1)
    return _stack_matrix(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ]
    )


def matrix_to_quaternion(rotation):
    """Unit quaternion (w, x, y, z) with w >= 0 of a rotation matrix (inverse of
    `quaternion_to_matrix` up to the sign of q).

    From the matrix above: 4w^2 = 1 + R00 + R11 + R22, 4x^2 = 1 + R00 - R11 - R22,
    4y^2 = 1 - R00 + R11 - R22, 4z^2 = 1 - R00 - R11 + R22, and the off-diagonal sums
    4wx = R21 - R12, 4wy = R02 - R20, 4wz = R10 - R01, 4xy = R10 + R01, 4xz = R02 + R20,
    4yz = R21 + R12. For each of the four components c the candidate quaternion
    (4 c * q) / (4 c) is computed; the one with the largest |c| is taken (best conditioned).

    Args:
        rotation: (..., 3, 3) rotation matrices.
    Returns:
        (..., 4) unit quaternions, w >= 0.
    """
    r = rotation
    r00, r01, r02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
    r10, r11, r12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
    r20, r21, r22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
    # 2|c| for c = w, x, y, z
    two_abs = torch.sqrt(
        torch.stack(
            [1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22],
            dim=-1,
        ).clamp_min(_TINY)
    )
    # rows: 4 c * (w, x, y, z) for c = w, x, y, z (the diagonal entry is (2|c|)^2)
    candidates = torch.stack(
        [
            torch.stack([two_abs[..., 0] ** 2, r21 - r12, r02 - r20, r10 - r01], dim=-1),
            torch.stack([r21 - r12, two_abs[..., 1] ** 2, r10 + r01, r02 + r20], dim=-1),
            torch.stack([r02 - r20, r10 + r01, two_abs[..., 2] ** 2, r21 + r12], dim=-1),
            torch.stack([r10 - r01, r02 + r20, r21 + r12, two_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )
    candidates = candidates / (2.0 * two_abs[..., None])
    best = two_abs.argmax(dim=-1)
    index = best[..., None, None].expand(best.shape + (1, 4))
    q = candidates.gather(-2, index).squeeze(-2)
    q = q / torch.sqrt((q * q).sum(-1, keepdim=True).clamp_min(_TINY))
    return torch.where(q[..., :1] < 0, -q, q)


def raw_quaternion_to_matrix(raw):
    """Rotation matrix of a network's raw quaternion output: q = normalize(1 - raw_w, raw_x,
    raw_y, raw_z), so raw = 0 gives the identity.

    Args:
        raw: (..., 4) unitless (raw_w, raw_x, raw_y, raw_z).
    Returns:
        (..., 3, 3) rotation matrices.
    """
    q = torch.cat([1.0 - raw[..., :1], raw[..., 1:]], dim=-1)
    return quaternion_to_matrix(q)


def matrix_to_raw_quaternion(rotation):
    """Raw quaternion target of a rotation: raw = (1 - w, x, y, z) with (w, x, y, z) the unit
    quaternion of R with w >= 0 (`matrix_to_quaternion`); identity -> 0. Inverse of
    `raw_quaternion_to_matrix` (which accepts any positive multiple of q; this is the unit one).

    Args:
        rotation: (..., 3, 3) rotation matrices.
    Returns:
        (..., 4) unitless.
    """
    q = matrix_to_quaternion(rotation)
    return torch.cat([1.0 - q[..., :1], q[..., 1:]], dim=-1)


def rotation_angle_deg(rotation1, rotation2):
    """Angle of the relative rotation R1^T R2 in degrees (the E_R metric, docs/method.md section 8):

        angle = arccos(clip((tr(R1^T R2) - 1) / 2, -1, 1)) * 180 / pi,  tr(R1^T R2) = sum(R1 * R2).

    A metric, not a loss: the gradient of arccos is unbounded at angles 0 and 180 deg.

    Args:
        rotation1, rotation2: (..., 3, 3) rotation matrices (broadcastable).
    Returns:
        (...) degrees in [0, 180].
    """
    trace = (rotation1 * rotation2).sum(dim=(-2, -1))
    cos = ((trace - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))
