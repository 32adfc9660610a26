"""What the motion heads and the meta-architecture share: the rotation parametrisations, the
moving/still gate, the supervision modes and the names of the motion head's extra inputs
(docs/method.md sections 3 and 6)."""
import torch

from ..geometry import euler_sines_to_matrix, raw_quaternion_to_matrix

__all__ = [
    "ROTATION_PARAM_DIMS",
    "SUPERVISIONS",
    "MOTION_XYZ_KEY",
    "MOTION_CAMERA_KEY",
    "check_rotation_param",
    "supervision_from_config",
    "rotation_from_params",
    "gated_motion",
]

# Number of network outputs of each rotation parametrisation (docs/method.md section 3).
ROTATION_PARAM_DIMS = {"euler_sines": 3, "quaternion": 4}
# Values of cfg.MODEL.MOTION_RCNN.SUPERVISION.
SUPERVISIONS = ("motion", "flow", "both")
# Entries of the `features` dict that MotionRCNN adds for the RoI motion head
# (MODEL.ROI_MOTION_HEAD.IN_FEATURES "xyz", "camera"): (B, 6, H, W) `layers.xyz_and_change` of
# the network input (stride 1), and (B, 3) the camera head's translation in metres (detached).
MOTION_XYZ_KEY = "motion_xyz"
MOTION_CAMERA_KEY = "motion_camera"


def check_rotation_param(value, key):
    """Raise a ValueError naming the config `key` unless `value` is a known parametrisation."""
    if value not in ROTATION_PARAM_DIMS:
        raise ValueError(
            f"{key} = {value!r} is not a rotation parametrisation: use one of "
            f"{sorted(ROTATION_PARAM_DIMS)}"
        )


def supervision_from_config(cfg):
    """cfg.MODEL.MOTION_RCNN.SUPERVISION, for the from_config of the meta-architecture and of the
    RoI heads; a ValueError naming the key unless it is one of `SUPERVISIONS`."""
    supervision = cfg.MODEL.MOTION_RCNN.SUPERVISION
    if supervision not in SUPERVISIONS:
        raise ValueError(
            f"MODEL.MOTION_RCNN.SUPERVISION = {supervision!r}: use one of {SUPERVISIONS}")
    return supervision


def rotation_from_params(params, rotation_param):
    """Rotation matrices from network outputs (already multiplied by the rotation scale).

    Args:
        params: (..., 3) sines of the Euler angles (R = Rz Rx Ry) for "euler_sines", or
            (..., 4) raw quaternions (q = normalize(1 - w, x, y, z)) for "quaternion".
        rotation_param: "euler_sines" or "quaternion".
    Returns:
        (..., 3, 3) rotation matrices.
    """
    if rotation_param == "euler_sines":
        return euler_sines_to_matrix(params)
    return raw_quaternion_to_matrix(params)


def gated_motion(rotation, translation, moving):
    """Motion blended with the identity by a moving probability p:

        P'' = P + p (R P + t - P) = A P + b,   A = (1 - p) I + p R,   b = p t.

    With a bool `moving` (inference: probability > threshold) this is (R, t) or the identity
    (I, 0) exactly. For 0 < p < 1 (training with flow supervision) A is not a rotation;
    `compose_flow` applies it as a general linear map, which keeps the flow differentiable
    w.r.t. p.

    Args:
        rotation: (..., 3, 3); translation: (..., 3) metres; moving: (...) probability in
            [0, 1] or bool.
    Returns:
        (A (..., 3, 3), b (..., 3)).
    """
    p = moving.to(rotation.dtype)
    eye = torch.eye(3, dtype=rotation.dtype, device=rotation.device).expand_as(rotation)
    # lerp is exact at both ends: A = I for p = 0 and A = R for p = 1
    return torch.lerp(eye, rotation, p[..., None, None]), p[..., None] * translation
